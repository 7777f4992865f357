"""Build everything after the cells from the run directory alone: figures, claims, summary, HTML."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from normlab.atomic import atomic_write_json, atomic_write_text
from normlab.engine.load import load_run
from normlab.engine.runner import RunOutcome, run_study
from normlab.engine.spec import Claim, Figure, Study
from normlab.engine.store import CLAIMS_FILE, KEY_NUMBERS_FILE, RunStore
from normlab.kit.stats import correct_for_multiplicity
from normlab.report.figures import save_figure
from normlab.report.html import render_html
from normlab.report.numbers import final_step_table, json_rows, shown_table
from normlab.report.page import Page
from normlab.report.preset import preset_of
from normlab.report.summary import posts_line, summary_markdown

SUMMARY_FILE = "summary.md"
REPORT_FILE = "report.html"
FIGURES_DIR = "figures"


def _clean(x: Any) -> Any:
    """JSON has no NaN/inf: write them as null (claims.json must parse everywhere)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item"):
        return _clean(x.item())
    return x


def check_claims(study: Study, claims: Any) -> list[Claim]:
    if not isinstance(claims, list) or not all(isinstance(c, Claim) for c in claims):
        raise TypeError(f"{study.name}.claims() must return a list of Claim, got {claims!r:.200}")
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{study.name}.claims(): duplicate claim ids {sorted({i for i in ids if ids.count(i) > 1})}")
    unknown = sorted({i for s in study.seed_sentences for i in s.tested_by} - set(ids))
    if unknown:
        raise ValueError(f"{study.name}.seed_sentences: tested_by names claims its claims() did not return: {unknown}")
    return claims


def build_report(study: Study, run_dir: Path | str) -> tuple[list[Claim], Path]:
    """Render figures (PNG+SVG), ``claims.json``, ``key_numbers.json``, ``summary.md``, ``report.html``.

    Returns the claims and the report path. Holds the run directory's lock (another process running into it is a
    :class:`~normlab.engine.store.RunDirBusyError`); a damaged cell is a
    :class:`~normlab.engine.store.DamagedCellError` naming it.
    """
    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    store.read_config()  # not a run directory: say so before creating its lock file
    with store.lock():
        store.remove_stale_temp_files()  # of a report build that was killed
        return _build_report(study, run_dir, store)


def _build_report(study: Study, run_dir: Path, store: RunStore) -> tuple[list[Claim], Path]:
    run = load_run(run_dir, study)
    claims = correct_for_multiplicity(check_claims(study, study.claims(run)))
    figures = study.figures(run)
    if not isinstance(figures, list) or not all(isinstance(f, Figure) for f in figures):
        raise TypeError(f"{study.name}.figures() must return a list of Figure")
    notes = study.notes(run) or ""

    fig_records = []
    for f in figures:
        paths = save_figure(f.figure, run_dir / FIGURES_DIR, f.name)
        png = paths["png"].read_bytes()
        fig_records.append({"name": f.name, "title": f.title, "how_to_read": f.how_to_read, "png": png})

    full = final_step_table(run.metrics)
    numbers, numbers_note = shown_table(list(study.key_numbers(run)), full)
    record = store.read_config()
    preset = preset_of(study, run.config)
    page = Page(study=study.name, description=study.description,
                posts=posts_line(tuple(study.seeds_from), dict(study.post_titles)), preset=preset, claims=claims,
                sentences=tuple(study.seed_sentences), figures=fig_records, notes=notes,
                numbers=numbers, numbers_note=numbers_note, config=record["config"], env=store.read_env())
    atomic_write_json(run_dir / CLAIMS_FILE, _clean({
        "study": study.name, "preset": preset.kind, "smoke_test": preset.smoke_test,
        "preset_line": preset.line(), "claims": [c.to_dict() for c in claims]}))
    atomic_write_json(run_dir / KEY_NUMBERS_FILE, _clean(json_rows(numbers, full)))
    atomic_write_text(run_dir / SUMMARY_FILE, summary_markdown(page))
    report = run_dir / REPORT_FILE
    atomic_write_text(report, render_html(page))
    return claims, report


def run_and_report(study: Study, config: Any, out_dir: Path | str, *, report: bool = True,
                   **run_options: Any) -> RunOutcome:
    """:func:`~normlab.engine.runner.run_study`, then (``report=True``) :func:`build_report` while the run
    directory's lock is still held, so no other process writes between the last cell and the report.

    ``run_options`` go to ``run_study`` (``jobs``, ``progress``, ``device``, ``tensorboard``); the outcome's
    ``claims`` and ``report`` are filled in when the report is built.
    """
    def then(run_dir: Path) -> tuple[list[Claim], Path]:
        if run_options.get("progress") is not None:
            run_options["progress"].message("building the report (claims, figures, report.html) ...")
        return build_report(study, run_dir)

    return run_study(study, config, out_dir, then=then if report else None, **run_options)
