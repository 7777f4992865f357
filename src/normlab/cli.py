"""The ``normlab`` command line. Subcommands are added by the lab (run/list/report/show) and bench."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NoReturn

import typer

from normlab import __version__

app = typer.Typer(
    name="normlab",
    help="normlab: normalization layers, training instruments, and a lab that tests the classic claims.",
    no_args_is_help=True,
    add_completion=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"normlab {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """normlab: normalization layers, training instruments, and a lab that tests the classic claims."""


# -- the lab: list / run / report / show -------------------------------------------------------------


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _study_or_fail(name: str):
    """The study called ``name``, or the one defined in the file ``name`` (``normlab run my_study.py``)."""
    from normlab.studies import StudyFileError, UnknownStudyError, get_study, load_study_file
    from normlab.studies._sources import looks_like_a_file

    try:
        return load_study_file(name) if looks_like_a_file(name) else get_study(name)
    except (UnknownStudyError, StudyFileError) as e:
        _fail(str(e))


def _resolve_config(study, *, quick: bool, seeds: int | None, steps: int | None, sets: list[str]):
    from normlab.engine.config import (
        ConfigError,
        apply_overrides,
        check_fields,
        field_types,
        parse_set_options,
    )

    config = study.Config()
    try:
        if quick:
            config = apply_overrides(config, dict(study.quick_overrides), source="quick preset")
        fields = field_types(study.Config)
        for flag, key, value in (("--seeds", "seeds", seeds), ("--steps", "steps", steps)):
            if value is None:
                continue
            if key not in fields:
                _fail(f"{flag}: study {study.name!r} has no {key!r} setting; its settings: {', '.join(fields)}")
            if value < 1:
                _fail(f"{flag}: expected a positive integer, got {value}")
            config = apply_overrides(config, {key: value}, source=flag)
        config = apply_overrides(config, parse_set_options(sets or []))
        check_fields(config)  # every field in its range, before anything is written
    except ConfigError as e:
        _fail(str(e))
    return config


@app.command("list")
def list_studies(json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the studies with one-line descriptions."""
    from normlab.studies import discovery_errors, registry
    from normlab.studies._sources import describe_source

    studies = registry()
    if json_out:
        typer.echo(json.dumps([{"name": s.name, "description": s.description, "posts": list(s.seeds_from),
                                "origin": describe_source(s.source)} for s in studies.values()], indent=2))
    else:
        width = max((len(n) for n in studies), default=0)
        for name, s in studies.items():
            src = f"  [post {', '.join(s.seeds_from)}]" if s.seeds_from else ""
            origin = f"  (from {describe_source(s.source)})" if s.source else ""  # built-ins say nothing
            typer.echo(f"{name:<{width}}  {s.description}{src}{origin}")
    for module, err in discovery_errors().items():
        what = module if module.startswith("entry point") else f"study module {module}"
        typer.echo(f"warning: {what} failed to load: {err.strip().splitlines()[-1]}", err=True)


@app.command("run")
def run(
    study: str = typer.Argument(..., help="Study name (see `normlab list`), or a .py file defining one Study."),
    seeds: int = typer.Option(None, "--seeds", help="Number of seeds per arm (the study's `seeds` setting)."),
    steps: int = typer.Option(None, "--steps", help="Training steps (the study's `steps` setting)."),
    quick: bool = typer.Option(False, "--quick", help="The quick preset (seconds; for tests and a first look)."),
    out: Path = typer.Option(None, "--out", help="Run directory (default: runs/STUDY). Same dir = resume."),
    sets: list[str] = typer.Option(None, "--set", help="Override a config field: key=value (repeatable)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary instead of text."),
    progress: str = typer.Option("auto", "--progress", help="auto | rich | plain | none."),
    no_report: bool = typer.Option(False, "--no-report", help="Only run the cells (build it later: normlab report)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Cells run at once in worker processes (0 = one per CPU core)."),
    executor: str = typer.Option("local", "--executor",
                                 help="Where cells run: local (this machine's processes) | dask (Dask distributed)."),
    address: str = typer.Option(None, "--address",
                                help="With --executor dask: the scheduler, e.g. tcp://host:8786 (default: a local "
                                     "cluster of --jobs workers)."),
) -> None:
    """Run a study (resuming OUT if it holds the same study and config), then write its report."""
    from normlab.atomic import WriteError
    from normlab.engine.executors import ExecutorError, check_executor
    from normlab.engine.progress import make_progress
    from normlab.engine.ranks import RanksError
    from normlab.engine.store import RunDirError
    from normlab.report import run_and_report

    s = _study_or_fail(study)
    config = _resolve_config(s, quick=quick, seeds=seeds, steps=steps, sets=sets or [])
    out = out or Path("runs") / s.name
    if progress not in ("auto", "rich", "plain", "none"):
        _fail(f"--progress: expected auto, rich, plain or none, got {progress!r}")
    if jobs < 0:
        _fail(f"--jobs: expected a non-negative number (0 = one per CPU core), got {jobs}")
    try:
        check_executor(executor, address, s)
    except ExecutorError as e:
        _fail(str(e).replace("executor:", "--executor:", 1).replace("address:", "--address:", 1))
    try:
        s.check_config(config)  # checks that span fields (e.g. reference_batch in batch_sizes): an error, not a traceback
        s.check_available(config)  # the data the cells read (e.g. the corpus), before the run directory exists
    except (ValueError, OSError) as e:
        _fail(f"{s.name}: {e}")
    from normlab.engine.memory import retain_freed_memory

    retain_freed_memory()  # this process runs cell after cell: reuse their memory (see engine/memory.py)
    try:
        outcome = run_and_report(s, config, out, progress=make_progress("none" if json_out else progress),
                                 report=not no_report, jobs=jobs, executor=executor, address=address)
    except (RunDirError, WriteError, ExecutorError, RanksError) as e:  # RanksError: a cell's rank failed or hung
        _fail(str(e))
    if json_out:
        typer.echo(json.dumps({
            "study": s.name, "run_dir": str(outcome.run_dir),
            "report": str(outcome.report) if outcome.report else None,
            "seconds": round(outcome.seconds, 2), "cells_run": len(outcome.cells_run),
            "cells_skipped": len(outcome.cells_skipped),
            "claims": [{"id": c.id, "verdict": c.verdict, "claim": c.claim, "unit": c.unit, "n": c.n}
                       for c in outcome.claims],
            **_preset_json(s, config),
        }, indent=2))
        return
    if outcome.report:
        from normlab.report.preset import preset_of

        preset = preset_of(s, config)
        typer.echo(f"Run: {preset.line()}")
        _print_claims(outcome.claims, smoke_test=preset.smoke_test, banner=preset.banner(s.name))
    typer.echo(f"\n{len(outcome.cells_run)} cells run, {len(outcome.cells_skipped)} resumed, "
               f"{outcome.seconds:.1f}s")
    if outcome.report:
        typer.echo(f"Report: {outcome.report}")
        typer.echo(f"Summary: {outcome.run_dir / 'summary.md'}")
    else:
        typer.echo(f"Cells in {outcome.run_dir}; build the report with: normlab report {outcome.run_dir}")


@app.command("report")
def report(run_dir: Path = typer.Argument(..., help="A run directory written by `normlab run`.")) -> None:
    """Rebuild figures, claims, summary and report.html from RUN_DIR alone."""
    from normlab.atomic import WriteError
    from normlab.engine.config import ConfigError
    from normlab.engine.store import RunDirError
    from normlab.report import build_report
    from normlab.studies import study_of_run_dir

    try:
        claims, path = build_report(study_of_run_dir(run_dir), run_dir)
    except (RunDirError, WriteError) as e:
        _fail(str(e))
    except ConfigError as e:  # a config.json edited by hand, or written before its fields were checked
        _fail(f"{run_dir / 'config.json'}: {e}")
    from normlab.engine.store import RunStore

    line, smoke = RunStore(run_dir).read_claims_preset()
    if line:
        typer.echo(f"Run: {line}")
    _print_claims(claims, smoke_test=smoke)
    typer.echo(f"Report: {path}")


@app.command("show")
def show(
    run_dir: Path = typer.Argument(..., help="A run directory written by `normlab run`."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Print the claims table and key numbers of RUN_DIR."""
    from normlab.engine.store import RunDirError, RunStore

    store = RunStore(run_dir)
    try:
        record = store.read_config()
        store.check_cells()
        claims, numbers = store.read_claims(), store.read_key_numbers()
        preset_line, smoke = store.read_claims_preset()
    except RunDirError as e:
        _fail(str(e))
    if claims is None:
        _fail(f"{run_dir}: no claims.json yet; finish the run or rebuild with `normlab report {run_dir}`")
    if json_out:
        typer.echo(json.dumps({"study": record["study"], "config": record["config"], "preset": preset_line,
                               "smoke_test": smoke, "claims": claims, "key_numbers": numbers}, indent=2))
        return
    from normlab.engine.spec import Claim

    typer.echo(f"{record['study']}  ({run_dir})" + (f"\nRun: {preset_line}" if preset_line else ""))
    _print_claims([Claim(**{**c, "ci": tuple(c["ci"]) if c.get("ci") else None,
                            "value": c["value"] if c["value"] is not None else float("nan")}) for c in claims],
                  smoke_test=smoke)
    if numbers:
        from normlab.report.summary import fmt_interval

        typer.echo("\nKey numbers (value [95% CI], then its summary over seeds):")
        for r in numbers:
            if r["table"] != "key":
                continue
            interval = fmt_interval(r["lo"], r["hi"], r["n"])
            typer.echo(f"  {r['arm']:<14} {r['quantity']}: {_num(r['estimate'])} {interval}  ({r['summary']})")
        typer.echo(f"  (every metric at its last step, per arm: {run_dir}/key_numbers.json)")


def _num(x) -> str:
    from normlab.report.summary import fmt_num

    return fmt_num(x, 4)


def _preset_json(study, config) -> dict:
    from normlab.report.preset import preset_of

    preset = preset_of(study, config)
    return {"preset": preset.kind, "smoke_test": preset.smoke_test, "preset_line": preset.line()}


def _print_claims(claims, *, smoke_test: bool = False, banner: str = "") -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from normlab.report.preset import SMOKE_TEST_VERDICT
    from normlab.report.summary import correction_line, fmt_interval

    console = Console(width=None if sys.stdout.isatty() else 160)
    if smoke_test:
        console.print(f"[bold yellow]{escape(banner or 'Smoke test (quick preset): verdicts are not judged at this size.')}[/]")
    table = Table(title="Claims" + (" (smoke test: not judged)" if smoke_test else ""), show_lines=False)
    for col in ("id", "verdict", "claim", "test", "effect [95% CI]", "unit", "n"):
        table.add_column(col, overflow="fold")
    style = {"supported": "green", "refuted": "red", "inconclusive": "yellow"}
    for c in claims:
        ci = f" {fmt_interval(c.ci[0], c.ci[1], c.n)}" if c.ci else ""
        p = f", p={_num(c.p_value)}" if c.p_value is not None else ""
        holm = f", Holm p={_num(c.p_adjusted)}" if c.p_adjusted is not None else ""
        lost = " (not after Holm)" if c.survives is False else ""
        verdict = (f"[dim]{SMOKE_TEST_VERDICT} ({c.verdict})[/]" if smoke_test
                   else f"[{style[c.verdict]}]{c.verdict}[/]{lost}")
        table.add_row(c.id, verdict, escape(c.claim), escape(f"{c.statistic}={_num(c.value)}{p}{holm}"),
                      escape(f"{_num(c.effect_size)}{ci}"), escape(c.unit or "-"), str(c.n if c.n is not None else "-"))
    console.print(table)
    console.print(correction_line(list(claims)))


if __name__ == "__main__":
    app()
