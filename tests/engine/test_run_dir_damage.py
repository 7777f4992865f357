"""Damaged run directories: every cell's files are checked on read; `report`/`show` name the damaged cell
or file in one line, and `normlab run` into the same directory redoes what is damaged."""

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from normlab.engine.load import load_run
from normlab.engine.store import RunDirError, RunStore
from normlab.report import run_and_report

sys.path.insert(0, str(Path(__file__).parent))
from toy_cli import QUICK, one_error_line, toy_cli  # noqa: F401  (toy_cli is a fixture)
from toy_study import ToyStudy

FAST, SLOW = ToyStudy().cells(QUICK)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """The quick toy run with its report, built once; each test damages a copy."""
    out = tmp_path_factory.mktemp("pristine") / "run"
    run_and_report(ToyStudy(), QUICK, out)
    return out


@pytest.fixture
def run_dir(pristine, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(pristine, d)
    return d


def truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def rewrite_metrics(d: Path, change) -> None:
    p = d / "metrics.parquet"
    change(pd.read_parquet(p)).to_parquet(p, index=False)


DAMAGE = {
    "truncated metrics": (lambda d: truncate(d / "metrics.parquet"),
                          "metrics.parquet is unreadable (Parquet magic bytes not found in footer."),
    "metrics without value": (lambda d: rewrite_metrics(d, lambda m: m.drop(columns="value")),
                              "metrics.parquet lacks column(s) ['value']"),
    "metric values as text": (lambda d: rewrite_metrics(d, lambda m: m.assign(value=m["value"].astype(str))),
                              "metrics.parquet: column 'value' holds large_string, expected numbers"),
    "DONE without metrics": (lambda d: (d / "metrics.parquet").unlink(), "metrics.parquet is missing"),
    "truncated extra table": (lambda d: truncate(d / "final.parquet"), "final.parquet is unreadable"),
    "corrupt DONE": (lambda d: (d / "DONE").write_text('{"arm": "fa'), "DONE is unreadable (Unterminated string"),
    "DONE of another cell": (lambda d: shutil.copy(d.parent / FAST.key / "DONE", d / "DONE"),
                             "DONE names another cell ('fast'"),
    "lost tb folder": (lambda d: shutil.rmtree(d / "tb"), "tb/metrics/events.out.tfevents."),
    "table replaced by another": (lambda d: shutil.copy(d / "metrics.parquet", d / "final.parquet"),
                                  "final.parquet has"),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_cell_is_named_by_report_and_show_and_redone_by_run(run_dir, pristine, toy_cli, kind):  # noqa: F811
    damage, reason = DAMAGE[kind]
    cell_dir = run_dir / "cells" / SLOW.key
    damage(cell_dir)
    assert RunStore(run_dir).is_done(FAST) and not RunStore(run_dir).is_done(SLOW)
    for cmd in ("report", "show"):
        line = one_error_line(toy_cli(cmd, run_dir))
        assert line.startswith(f"error: {run_dir}: cell {SLOW.key} is damaged: {reason}"), line
        assert line.endswith(f"`normlab run toy --out {run_dir}` with the settings of this run redoes it")
    with pytest.raises(RunDirError, match=f"cell {SLOW.key} is damaged") as e:
        load_run(run_dir, ToyStudy())
    assert e.value.key == SLOW.key  # a DamagedCellError

    r = toy_cli("run", "toy", "--quick", "--out", run_dir, "--no-report", "--json", "--progress", "none")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["cells_run"] == 1 and json.loads(r.stdout)["cells_skipped"] == 1
    redone = load_run(run_dir, ToyStudy())
    clean = load_run(pristine, ToyStudy())
    pd.testing.assert_frame_equal(redone.metrics, clean.metrics)
    pd.testing.assert_frame_equal(redone.extra["final"], clean.extra["final"])


def test_run_says_which_cell_it_redoes(run_dir, toy_cli):  # noqa: F811
    (run_dir / "cells" / SLOW.key / "metrics.parquet").unlink()
    r = toy_cli("run", "toy", "--quick", "--out", run_dir, "--no-report", "--progress", "plain")
    assert r.exit_code == 0, r.output
    assert f"cell slow ({SLOW.key}) is damaged: metrics.parquet is missing; running it again" in r.output
    assert "1 cells run, 1 resumed" in r.output


def edit_config(d: Path, change) -> None:
    p = d / "config.json"
    p.write_text(json.dumps(change(json.loads(p.read_text()))))


@pytest.mark.parametrize("edit, message", [
    (lambda r: {**r, "config": {**r["config"], "steps": "many"}}, "config.json: steps: expected an integer, got 'many'"),
    (lambda r: {**r, "config": {**r["config"], "lr": [1]}}, "config.json: lr: expected a number, got [1]"),
    (lambda r: {**r, "config": {**r["config"], "bogus": 1}}, "config.json: unknown config keys ['bogus']"),
    (lambda r: r["config"], 'config.json: expected {"study": name, "config": {...}}, got {"seeds"'),
    (lambda r: {"study": "toy"}, 'config.json: expected {"study": name, "config": {...}}'),
], ids=["bad int", "bad float", "unknown key", "no study", "no config"])
def test_hand_edited_config_is_an_error_naming_the_field(run_dir, toy_cli, edit, message):  # noqa: F811
    edit_config(run_dir, edit)
    assert one_error_line(toy_cli("report", run_dir)).startswith(f"error: {run_dir / message}")
    before = (run_dir / "config.json").read_text()
    line = one_error_line(toy_cli("run", "toy", "--quick", "--out", run_dir))
    assert str(run_dir) in line and (run_dir / "config.json").read_text() == before  # the identity stays


def test_unparsable_config_is_an_error(run_dir, toy_cli):  # noqa: F811
    (run_dir / "config.json").write_text('{"study": "toy", "conf')
    for args in (("report", run_dir), ("show", run_dir), ("run", "toy", "--quick", "--out", run_dir)):
        assert one_error_line(toy_cli(*args)).startswith(f"error: {run_dir / 'config.json'}: unreadable (")


def test_damaged_env_is_named_and_a_run_rewrites_it(run_dir, toy_cli):  # noqa: F811
    (run_dir / "env.json").write_text("[1, 2")
    line = one_error_line(toy_cli("report", run_dir))
    assert line.startswith(f"error: {run_dir / 'env.json'}: damaged (")
    assert line.endswith(f"`normlab run toy --out {run_dir}` with the settings of this run rewrites it")
    r = toy_cli("run", "toy", "--quick", "--out", run_dir, "--progress", "none")
    assert r.exit_code == 0, r.output
    assert {"versions", "python", "git"} <= set(json.loads((run_dir / "env.json").read_text()))


@pytest.mark.parametrize("name, content, why", [
    ("claims.json", "{not json", "damaged (Expecting property name"),
    ("claims.json", '{"claims": {}}', 'damaged (expected {"claims": [...]})'),
    ("claims.json", '{"claims": [{"id": "T1"}]}', "damaged (claim 0: "),
    ("key_numbers.json", '[{"arm": "fast"}]', "damaged (expected rows with"),
    ("key_numbers.json", '[{"arm": "fast", "metric": "loss", "step": 9, "mean": 1.0, "lo": 0.5, "hi": 2.0, "n": 3}]',
     "written by an older normlab"),
])
def test_damaged_report_files_are_named_by_show(run_dir, toy_cli, name, content, why):  # noqa: F811
    (run_dir / name).write_text(content)
    line = one_error_line(toy_cli("show", run_dir))
    assert line.startswith(f"error: {run_dir / name}: {why}"), line
    assert line.endswith(f"rebuild it with `normlab report {run_dir}`")


def test_report_rebuilds_a_damaged_claims_file(run_dir, toy_cli):  # noqa: F811
    (run_dir / "claims.json").write_text("{not json")
    assert toy_cli("report", run_dir).exit_code == 0
    r = toy_cli("show", run_dir)
    assert r.exit_code == 0 and "T1" in r.output
