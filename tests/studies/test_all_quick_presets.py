"""Every registered study's --quick preset runs through the engine and leaves a complete run directory."""

import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from normlab.engine.config import apply_overrides
from normlab.engine.load import load_run
from normlab.engine.spec import VERDICTS
from normlab.report import run_and_report
from normlab.studies import discovery_errors, registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
from figure_checks import legend_faults

STUDIES = sorted(registry())


def test_every_study_module_imports():
    assert discovery_errors() == {}


def test_the_headline_study_is_registered():
    assert "ln-gradients" in STUDIES


@pytest.mark.parametrize("name", STUDIES)
def test_quick_preset_produces_a_complete_run_directory(name, tmp_path):
    study = registry()[name]
    assert study.description and "\n" not in study.description
    config = apply_overrides(study.Config(), dict(study.quick_overrides), source="quick preset")
    out = run_and_report(study, config, tmp_path / name)
    d = out.run_dir
    record = json.loads((d / "config.json").read_text())
    assert record["study"] == name and isinstance(record["config"], dict)
    env = json.loads((d / "env.json").read_text())
    assert env["versions"]["torch"] and "torch_threads" in env and "git" in env
    cells = list(study.cells(config))
    for cell in cells:
        cd = d / "cells" / cell.key
        assert (cd / "DONE").is_file(), cell
        metrics = pd.read_parquet(cd / "metrics.parquet")
        assert {"seed", "step", "metric", "value"} <= set(metrics.columns)
    figures = sorted(p.stem for p in (d / "figures").glob("*.png"))
    assert figures, "a study draws at least one figure"
    assert figures == sorted(p.stem for p in (d / "figures").glob("*.svg"))
    assert (d / "summary.md").read_text().startswith(f"# {name}")
    html = (d / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(figures)
    claims = json.loads((d / "claims.json").read_text())["claims"]
    assert claims, "a study judges at least one claim"
    for c in claims:
        assert c["verdict"] in VERDICTS and c["claim"] and c["measurement"] and c["statistic"]
        # Every claim says its unit of replication and how many independent units its statistic used.
        assert isinstance(c["unit"], str) and c["unit"], f"{name} {c['id']}: no unit of replication"
        if c["unit"] == "exact":
            assert c["n"] is None, f"{name} {c['id']}: an exact check counts no units"
        else:
            assert isinstance(c["n"], int) and c["n"] >= 0, f"{name} {c['id']}: n={c['n']!r}"
    assert not list(d.rglob("*.tmp"))
    # Every series of every figure is labelled in a legend, one label one colour in every panel.
    for f in study.figures(load_run(d, study)):
        assert legend_faults(f.figure) == [], f"{name} {f.name}"
        plt.close(f.figure)
    # The key numbers: a short table on the page, each number's summary named; the full table in the json.
    rows = json.loads((d / "key_numbers.json").read_text())
    shown = [r for r in rows if r["table"] == "key"]
    assert 0 < len(shown) <= 25, f"{name}: {len(shown)} key numbers on the page"
    assert all((" over " in r["summary"] or " of " in r["summary"]) and "95%" in r["summary"] for r in shown)
    for r in shown:
        if r["scale"] in ("proportion", "binary") and r["lo"] is not None:
            assert 0.0 <= r["lo"] <= r["hi"] <= 1.0, r
        if r["scale"] == "positive" and r["lo"] is not None:
            assert r["lo"] > 0, r


@pytest.mark.parametrize("name", STUDIES)
def test_every_study_names_its_posts_and_lists_their_claim_sentences(name):
    study = registry()[name]
    assert set(study.post_titles) == set(study.seeds_from), f"{name}: a title for each post it reproduces"
    if not study.seeds_from:  # a study that reproduces no post (sync-bn extends batch-size with Wu & He's setting)
        assert not study.seed_sentences, f"{name}: sentences of posts it does not name"
        return
    assert study.seed_sentences, f"{name}: every claim sentence of its posts, tested or marked why not"
    assert {s.seed for s in study.seed_sentences} <= set(study.seeds_from)
