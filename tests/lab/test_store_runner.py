"""The engine: run directory layout, atomic writes, resume, kill -9, config checks, determinism."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from normlab.lab.load import load_run
from normlab.lab.runner import run_study
from normlab.lab.spec import Cell, CellResult
from normlab.lab.store import RunDirError, RunStore, atomic_write_text

sys.path.insert(0, str(Path(__file__).parent))
from toy_study import ToyConfig, ToyStudy

HERE = Path(__file__).parent


def test_run_writes_a_complete_directory(tmp_path):
    out = run_study(ToyStudy(), ToyConfig(), tmp_path / "r")
    d = out.run_dir
    cfg = json.loads((d / "config.json").read_text())
    assert cfg == {"study": "toy", "config": {"seeds": 4, "steps": 30, "lr": 0.05, "arms": ["fast", "slow"]}}
    env = json.loads((d / "env.json").read_text())
    assert {"versions", "torch_threads", "git", "python"} <= set(env)
    for cell in ToyStudy().cells(ToyConfig()):
        cd = d / "cells" / cell.key
        assert (cd / "DONE").is_file() and (cd / "metrics.parquet").is_file() and (cd / "final.parquet").is_file()
        assert list((cd / "tb" / "metrics").glob("events.out.tfevents.*"))
    for f in ("summary.md", "report.html", "claims.json", "key_numbers.json", "figures/loss.png", "figures/loss.svg"):
        assert (d / f).is_file(), f
    claims = json.loads((d / "claims.json").read_text())["claims"]
    assert claims[0]["verdict"] == "supported"  # lr 0.05 beats lr 0.005 after 30 SGD steps, every seed
    assert not list(d.rglob("*.tmp"))


def test_stored_run_has_engine_columns_and_extra_tables(tmp_path):
    run_study(ToyStudy(), ToyConfig(), tmp_path / "r", report=False)
    _study, run = load_run(tmp_path / "r", ToyStudy())
    assert set(run.metrics.columns) == {"arm", "seed", "step", "metric", "value"}
    assert sorted(run.metrics["arm"].unique()) == ["fast", "slow"]
    assert len(run.metrics) == 2 * 4 * 30
    assert set(run.extra["final"]["arm"]) == {"fast", "slow"}


def test_resume_skips_done_cells_and_rejects_other_config(tmp_path):
    first = run_study(ToyStudy(), ToyConfig(), tmp_path / "r")
    before = (first.run_dir / "cells").stat().st_mtime_ns
    again = run_study(ToyStudy(), ToyConfig(), tmp_path / "r")
    assert again.cells_run == [] and len(again.cells_skipped) == 2
    assert (first.run_dir / "cells").stat().st_mtime_ns == before
    with pytest.raises(RunDirError, match=r"different config \(steps: 30 -> 31\)"):
        run_study(ToyStudy(), ToyConfig(steps=31), tmp_path / "r")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(RunDirError, match="not a normlab run directory"):
        run_study(ToyStudy(), ToyConfig(), tmp_path / "other")


def test_cell_without_done_marker_is_rerun(tmp_path):
    out = run_study(ToyStudy(), ToyConfig(), tmp_path / "r", report=False)
    cell = ToyStudy().cells(ToyConfig())[1]
    (out.run_dir / "cells" / cell.key / "DONE").unlink()
    (out.run_dir / "cells" / cell.key / "junk.parquet").write_bytes(b"half a file")
    again = run_study(ToyStudy(), ToyConfig(), tmp_path / "r", report=False)
    assert again.cells_run == [cell.key]
    assert not (out.run_dir / "cells" / cell.key / "junk.parquet").exists()


def test_same_config_same_numbers(tmp_path):
    a = run_study(ToyStudy(), ToyConfig(), tmp_path / "a", report=False)
    b = run_study(ToyStudy(), ToyConfig(), tmp_path / "b", report=False)
    _, ra = load_run(a.run_dir, ToyStudy())
    _, rb = load_run(b.run_dir, ToyStudy())
    pd.testing.assert_frame_equal(ra.metrics, rb.metrics)


def test_kill_9_mid_study_then_resume_matches_uninterrupted(tmp_path):
    out, marks = tmp_path / "killed", tmp_path / "marks"
    marks.mkdir()
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); from toy_study import ToyStudy, ToyConfig; "
            f"from normlab.lab.runner import run_study; run_study(ToyStudy(), ToyConfig(), {str(out)!r})")
    env = {**os.environ, "TOY_HANG_ARM": "slow", "TOY_MARK_DIR": str(marks)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.time() + 120
        while not (marks / "slow.started").exists():
            assert proc.poll() is None, "the study process exited early"
            assert time.time() < deadline, "the study never reached its second cell"
            time.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    fast, slow = ToyStudy().cells(ToyConfig())
    store = RunStore(out)
    assert store.is_done(fast) and not store.is_done(slow)
    resumed = run_study(ToyStudy(), ToyConfig(), out)
    assert resumed.cells_skipped == [fast.key] and resumed.cells_run == [slow.key]
    clean = run_study(ToyStudy(), ToyConfig(), tmp_path / "clean", report=False)
    _, r1 = load_run(out, ToyStudy())
    _, r2 = load_run(clean.run_dir, ToyStudy())
    pd.testing.assert_frame_equal(r1.metrics, r2.metrics)  # the resumed cell computed the same numbers
    assert not list(out.rglob("*.tmp"))


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    p = tmp_path / "f.txt"
    atomic_write_text(p, "old")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(p, "new")
    assert p.read_text() == "old"
    assert not list(tmp_path.glob(".*.tmp"))


def test_bad_run_cell_results_get_clear_errors(tmp_path):
    class Bad(ToyStudy):
        name = "bad"

        def run_cell(self, config, ctx):
            return CellResult(metrics=pd.DataFrame({"seed": [0], "step": [0], "value": [1.0]}))

    with pytest.raises(ValueError, match=r"lacks columns \['metric'\]"):
        run_study(Bad(), ToyConfig(), tmp_path / "b")

    class Dup(ToyStudy):
        name = "dup"

        def cells(self, config):
            return [Cell("a", (0,)), Cell("a", (0,))]

    with pytest.raises(ValueError, match="duplicate cells"):
        run_study(Dup(), ToyConfig(), tmp_path / "d")


def test_report_rebuilds_from_disk_alone(tmp_path):
    from normlab.report import build_report

    out = run_study(ToyStudy(), ToyConfig(), tmp_path / "r")
    (out.run_dir / "report.html").unlink()
    for f in (out.run_dir / "figures").iterdir():
        f.unlink()
    _claims, path = build_report(ToyStudy(), out.run_dir)
    assert path.is_file() and (out.run_dir / "figures" / "loss.svg").is_file()
    html = path.read_text()
    assert "data:image/png;base64," in html
    for external in ("src='http", 'src="http', "<link", "<script"):
        assert external not in html  # self-contained: opens from disk with no network
    assert "How to read" in html and "supported" in html
