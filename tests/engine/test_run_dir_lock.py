"""One process at a time per run directory: a second run or report stops with one line, touching nothing;
kill -9 leaves no stale lock, and the resumed run computes what an uninterrupted one does."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from normlab.engine.load import load_run
from normlab.engine.runner import run_study
from normlab.engine.store import RunDirError, RunStore
from normlab.report import run_and_report

sys.path.insert(0, str(Path(__file__).parent))
from toy_cli import QUICK, one_error_line, toy_cli  # noqa: F401  (toy_cli is a fixture)
from toy_study import ToyStudy

HERE = Path(__file__).parent


def snapshot(d: Path) -> dict[str, tuple]:
    """Every entry under ``d`` with its type, size and modification time."""
    return {str(p.relative_to(d)): (p.is_dir(), p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns)
            for p in d.rglob("*")}


@pytest.fixture
def busy_run(tmp_path):
    """A run of the quick toy study in another process, holding its directory: the first cell is done
    and the second one is running (it waits until killed). Killed with SIGKILL afterwards."""
    out, marks = tmp_path / "run", tmp_path / "marks"
    marks.mkdir()
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); from toy_cli import QUICK; "
            "from toy_study import ToyStudy; from normlab.report import run_and_report; "
            f"run_and_report(ToyStudy(), QUICK, {str(out)!r})")
    env = {**os.environ, "TOY_HANG_ARM": "slow", "TOY_MARK_DIR": str(marks)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.time() + 120
        while not (marks / "slow.started").exists():
            assert proc.poll() is None, "the study process exited early"
            assert time.time() < deadline, "the study never reached its second cell"
            time.sleep(0.1)
        yield out, proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def test_busy_directory_is_refused_then_kill_9_leaves_no_lock_and_resume_matches(busy_run, toy_cli, tmp_path):  # noqa: F811
    out, proc = busy_run
    before = snapshot(out)
    for args in (("run", "toy", "--quick", "--out", out), ("report", out)):
        assert one_error_line(toy_cli(*args)) == f"error: another normlab run is using {out}"
    with pytest.raises(RunDirError, match="another normlab run is using"):  # RunDirBusyError
        run_study(ToyStudy(), QUICK, out)
    assert snapshot(out) == before  # the running cell's directory (probe/) is still there, nothing rewritten
    assert "no claims.json yet" in toy_cli("show", out).output  # reading is allowed

    os.kill(proc.pid, signal.SIGKILL)  # the kernel drops the lock with the process: no stale lock
    proc.wait()
    fast, slow = ToyStudy().cells(QUICK)
    store = RunStore(out)
    assert store.is_done(fast) and not store.is_done(slow)
    resumed = run_and_report(ToyStudy(), QUICK, out)
    assert resumed.cells_skipped == [fast.key] and resumed.cells_run == [slow.key]
    clean = run_study(ToyStudy(), QUICK, tmp_path / "clean")
    r1 = load_run(out, ToyStudy())
    r2 = load_run(clean.run_dir, ToyStudy())
    pd.testing.assert_frame_equal(r1.metrics, r2.metrics)  # the resumed cell computed the same numbers
    assert not list(out.rglob("*.tmp"))


def test_the_lock_is_released_when_a_run_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("TOY_FAIL_ARM", "slow")
    with pytest.raises(ValueError, match="fails on request"):
        run_study(ToyStudy(), QUICK, tmp_path / "run")
    monkeypatch.delenv("TOY_FAIL_ARM")
    assert len(run_study(ToyStudy(), QUICK, tmp_path / "run").cells_run) == 1
