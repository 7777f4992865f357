"""The engine: run directory layout, resume, config checks, determinism (kill -9: test_run_dir_lock.py;
atomic writes: tests/test_atomic.py; damaged cells: test_run_dir_damage.py)."""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from normlab.engine.load import load_run
from normlab.engine.runner import run_study
from normlab.engine.spec import Cell, CellResult
from normlab.engine.store import RunDirError
from normlab.report import run_and_report

sys.path.insert(0, str(Path(__file__).parent))
from toy_study import ToyConfig, ToyStudy


def test_run_writes_a_complete_directory(tmp_path):
    out = run_and_report(ToyStudy(), ToyConfig(), tmp_path / "r")
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


def test_tensorboard_file_holds_the_mean_over_seeds_of_every_metric(tmp_path):
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event

    out = run_study(ToyStudy(), ToyConfig(steps=5), tmp_path / "r")
    run = load_run(out.run_dir, ToyStudy())
    for cell in ToyStudy().cells(ToyConfig(steps=5)):
        (path,) = (out.run_dir / "cells" / cell.key / "tb" / "metrics").glob("events.out.tfevents.*")
        events = [Event.FromString(raw) for raw in RawEventFileLoader(str(path)).Load()]
        assert events[0].file_version == "brain.Event:2"
        got = {(e.step, v.tag): v.simple_value for e in events[1:] for v in e.summary.value}
        m = run.metrics[run.metrics.arm == cell.arm]
        want = {(int(s), f"{k}/mean"): v for (k, s), v in m.groupby(["metric", "step"])["value"].mean().items()}
        assert got.keys() == want.keys()
        assert all(abs(got[k] - want[k]) <= 1e-6 * abs(want[k]) for k in want)  # stored as float32


def test_done_marker_records_every_file_of_the_cell_with_its_size(tmp_path):
    out = run_study(ToyStudy(), ToyConfig(steps=5), tmp_path / "r")
    for cell in ToyStudy().cells(ToyConfig(steps=5)):
        d = out.run_dir / "cells" / cell.key
        done = json.loads((d / "DONE").read_text())
        on_disk = {p.relative_to(d).as_posix(): p.stat().st_size for p in d.rglob("*") if p.is_file()}
        assert done["files"] == {k: v for k, v in on_disk.items() if k != "DONE"}
        assert {"metrics.parquet", "final.parquet"} <= set(done["files"])


def test_stored_run_has_engine_columns_and_extra_tables(tmp_path):
    run_study(ToyStudy(), ToyConfig(), tmp_path / "r")
    run = load_run(tmp_path / "r", ToyStudy())
    assert set(run.metrics.columns) == {"arm", "seed", "step", "metric", "value"}
    assert sorted(run.metrics["arm"].unique()) == ["fast", "slow"]
    assert len(run.metrics) == 2 * 4 * 30
    assert set(run.extra["final"]["arm"]) == {"fast", "slow"}


def test_resume_skips_done_cells_and_rejects_other_config(tmp_path):
    first = run_and_report(ToyStudy(), ToyConfig(), tmp_path / "r")
    before = (first.run_dir / "cells").stat().st_mtime_ns
    again = run_and_report(ToyStudy(), ToyConfig(), tmp_path / "r")
    assert again.cells_run == [] and len(again.cells_skipped) == 2
    assert (first.run_dir / "cells").stat().st_mtime_ns == before
    with pytest.raises(RunDirError, match=r"different config \(steps: 30 -> 31\)"):
        run_and_report(ToyStudy(), ToyConfig(steps=31), tmp_path / "r")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(RunDirError, match="not a normlab run directory"):
        run_and_report(ToyStudy(), ToyConfig(), tmp_path / "other")


def test_cell_without_done_marker_is_rerun(tmp_path):
    out = run_study(ToyStudy(), ToyConfig(), tmp_path / "r")
    cell = ToyStudy().cells(ToyConfig())[1]
    (out.run_dir / "cells" / cell.key / "DONE").unlink()
    (out.run_dir / "cells" / cell.key / "junk.parquet").write_bytes(b"half a file")
    again = run_study(ToyStudy(), ToyConfig(), tmp_path / "r")
    assert again.cells_run == [cell.key]
    assert not (out.run_dir / "cells" / cell.key / "junk.parquet").exists()


def test_same_config_same_numbers(tmp_path):
    a = run_study(ToyStudy(), ToyConfig(), tmp_path / "a")
    b = run_study(ToyStudy(), ToyConfig(), tmp_path / "b")
    ra = load_run(a.run_dir, ToyStudy())
    rb = load_run(b.run_dir, ToyStudy())
    pd.testing.assert_frame_equal(ra.metrics, rb.metrics)


def test_bad_run_cell_results_get_clear_errors(tmp_path):
    class Bad(ToyStudy):
        name = "bad"

        def run_cell(self, config, ctx):
            return CellResult(metrics=pd.DataFrame({"seed": [0], "step": [0], "value": [1.0]}))

    with pytest.raises(ValueError, match=r"lacks columns \['metric'\]"):
        run_and_report(Bad(), ToyConfig(), tmp_path / "b")

    class Dup(ToyStudy):
        name = "dup"

        def cells(self, config):
            return [Cell("a", (0,)), Cell("a", (0,))]

    with pytest.raises(ValueError, match="duplicate cells"):
        run_and_report(Dup(), ToyConfig(), tmp_path / "d")


def test_report_rebuilds_from_disk_alone(tmp_path):
    from normlab.report import build_report

    out = run_and_report(ToyStudy(), ToyConfig(), tmp_path / "r")
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
