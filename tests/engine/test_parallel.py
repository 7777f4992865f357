"""Cells in worker processes (``jobs > 1``): the same numbers and files as one by one, errors surface."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from normlab.engine.load import load_run
from normlab.engine.parallel import resolve_jobs
from normlab.engine.runner import run_study
from normlab.engine.store import RunStore

sys.path.insert(0, str(Path(__file__).parent))
from toy_study import ToyConfig, ToyStudy

HERE = Path(__file__).parent

CONFIG = ToyConfig(seeds=3, steps=12, arms=("fast", "slow", "fast-again"))
  # 3 cells, 2 workers

def test_jobs_2_gives_the_numbers_and_files_of_jobs_1(tmp_path):
    one = run_study(ToyStudy(), CONFIG, tmp_path / "one")
    two = run_study(ToyStudy(), CONFIG, tmp_path / "two", jobs=2)
    assert sorted(two.cells_run) == sorted(one.cells_run) and len(two.cells_run) == 3
    a = load_run(one.run_dir, ToyStudy())
    b = load_run(two.run_dir, ToyStudy())
    keys = ["arm", "seed", "step", "metric"]
    pd.testing.assert_frame_equal(a.metrics.sort_values(keys).reset_index(drop=True),
                                  b.metrics.sort_values(keys).reset_index(drop=True))
    for cell in RunStore(two.run_dir).done_cells():
        files = sorted(p.name for p in RunStore(two.run_dir).cell_dir(cell).iterdir())
        assert files == sorted(p.name for p in RunStore(one.run_dir).cell_dir(cell).iterdir())
    assert RunStore(two.run_dir).read_config()["config"] == RunStore(one.run_dir).read_config()["config"]


def test_a_failing_cell_raises_and_the_others_stay_done(tmp_path, monkeypatch):
    monkeypatch.setenv("TOY_FAIL_ARM", "slow")  # spawned workers inherit the environment
    with pytest.raises(ValueError, match="arm slow fails on request"):
        run_study(ToyStudy(), CONFIG, tmp_path / "run", jobs=2)
    done = {cell.arm for cell in RunStore(tmp_path / "run").done_cells()}
    assert "slow" not in done
    monkeypatch.delenv("TOY_FAIL_ARM")
    resumed = run_study(ToyStudy(), CONFIG, tmp_path / "run", jobs=2)
    assert len(resumed.cells_run) + len(resumed.cells_skipped) == 3 and resumed.cells_run
    assert {cell.arm for cell in RunStore(tmp_path / "run").done_cells()} == set(CONFIG.arms)


def test_plain_progress_says_the_run_is_alive_while_a_long_cell_runs_in_a_worker(tmp_path, monkeypatch):
    import io

    from normlab.engine import parallel
    from normlab.engine.progress import PlainProgress

    monkeypatch.setattr(parallel, "HEARTBEAT_S", 0.5)
    monkeypatch.setenv("TOY_SLEEP_ARM", "slow")
    monkeypatch.setenv("TOY_SLEEP_S", "4")
    stream = io.StringIO()
    run_study(ToyStudy(), CONFIG, tmp_path / "run", jobs=2, progress=PlainProgress(stream))
    lines = stream.getvalue().splitlines()
    alive = [line for line in lines if "cell(s) running," in line]
    assert alive, lines
    last = alive[-1]  # while only the slow cell is left: 1 running, the 2 fast ones stored
    assert last.startswith("... 1 cell(s) running, 2/3 done, "), last
    assert lines.index(last) < next(i for i, line in enumerate(lines) if "slow: done in" in line)


def test_plain_progress_says_the_run_is_alive_while_a_silent_cell_runs_in_this_process(tmp_path, monkeypatch):
    import io

    from normlab.engine import parallel
    from normlab.engine.progress import PlainProgress

    monkeypatch.setattr(parallel, "HEARTBEAT_S", 0.3)
    monkeypatch.setenv("TOY_SLEEP_ARM", "slow")  # sleeps after its steps: no progress update meanwhile
    monkeypatch.setenv("TOY_SLEEP_S", "1.5")
    stream = io.StringIO()
    run_study(ToyStudy(), CONFIG, tmp_path / "run", jobs=1, progress=PlainProgress(stream))
    lines = stream.getvalue().splitlines()
    slow_done = next(i for i, line in enumerate(lines) if "slow: done in" in line)
    alive = [i for i, line in enumerate(lines) if line.startswith("... 1 cell(s) running, 1/3 done, ")]
    assert alive and all(i < slow_done for i in alive), lines


@pytest.mark.parametrize("jobs", [-1, 1.5, True, "2"])
def test_bad_jobs_are_rejected(jobs, tmp_path):
    with pytest.raises(ValueError, match="jobs"):
        run_study(ToyStudy(), CONFIG, tmp_path / "run", jobs=jobs)
    assert not (tmp_path / "run").exists()  # nothing written


def test_zero_jobs_means_one_per_core():
    import os

    assert resolve_jobs(0) == (os.cpu_count() or 1)
    assert resolve_jobs(3) == 3


def _children(pid: int) -> set[int]:
    """Live child pids of ``pid``, read from /proc (a zombie holds no memory and counts as gone)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # exited meanwhile
                continue
            state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
            if int(ppid) == pid and state != "Z":
                out.add(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process parents from /proc")
def test_kill_9_of_the_parent_ends_its_workers_then_resume_matches_uninterrupted(tmp_path):
    out, marks = tmp_path / "killed", tmp_path / "marks"
    marks.mkdir()
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); from toy_study import ToyStudy, ToyConfig; "
            f"from normlab.report import run_and_report; "
            f"run_and_report(ToyStudy(), ToyConfig(seeds=3, steps=12, arms={CONFIG.arms!r}), {str(out)!r}, jobs=2)")
    env = {**os.environ, "TOY_HANG_ARM": "slow", "TOY_MARK_DIR": str(marks)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    others = [c for c in ToyStudy().cells(CONFIG) if c.arm != "slow"]
    workers: list[int] = []  # (set before anything can fail: the cleanup below reads it)
    try:
        deadline = time.time() + 120
        # one worker hangs in "slow", the other has stored the two other cells and waits for work
        while not ((marks / "slow.started").exists() and all(RunStore(out).is_done(c) for c in others)):
            assert proc.poll() is None, "the study process exited early"
            assert time.time() < deadline, "the workers never reached the hanging cell"
            time.sleep(0.1)
        workers = _children(proc.pid)
        assert len(workers) >= 2  # the two workers (and multiprocessing's resource tracker)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 10
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.05)
    orphans = [w for w in workers if _alive(w)]
    for w in orphans:  # never leave them behind, even when the test fails
        os.kill(w, signal.SIGKILL)
    assert not orphans, f"worker processes {orphans} outlived their parent"
    slow = next(c for c in ToyStudy().cells(CONFIG) if c.arm == "slow")
    assert not RunStore(out).is_done(slow)
    resumed = run_study(ToyStudy(), CONFIG, out, jobs=2)
    assert resumed.cells_run == [slow.key] and sorted(resumed.cells_skipped) == sorted(c.key for c in others)
    clean = run_study(ToyStudy(), CONFIG, tmp_path / "clean")
    a = load_run(out, ToyStudy())
    b = load_run(clean.run_dir, ToyStudy())
    keys = ["arm", "seed", "step", "metric"]
    pd.testing.assert_frame_equal(a.metrics.sort_values(keys).reset_index(drop=True),
                                  b.metrics.sort_values(keys).reset_index(drop=True))
    assert not list(out.rglob("*.tmp"))
