"""Cells on Dask distributed workers (``executor="dask"``): the numbers and files of ``--jobs 1``; a worker
killed mid-cell and a driver killed by ``kill -9`` both leave a run that resumes to what an uninterrupted
run stores. The cluster is started here: 2 worker processes on the loopback interface."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from normlab.engine import executors
from normlab.engine.executors import ExecutorError
from normlab.engine.load import load_run
from normlab.engine.runner import run_study
from normlab.engine.store import RunStore

sys.path.insert(0, str(Path(__file__).parent))
from test_parallel import _alive, _children
from toy_cli import one_error_line, toy_cli  # noqa: F401  (toy_cli is a fixture)
from toy_study import ToyConfig, ToyStudy

distributed = pytest.importorskip("distributed")

HERE = Path(__file__).parent
CONFIG = ToyConfig(seeds=3, steps=12, arms=("fast", "slow", "fast-again"))
KEYS = ["arm", "seed", "step", "metric"]


@pytest.fixture(scope="module")
def marks(tmp_path_factory):
    return tmp_path_factory.mktemp("marks")


@pytest.fixture(scope="module")
def cluster(marks):
    """2 worker processes (1 thread each) and a scheduler on 127.0.0.1. The arm ``stall`` stalls on its
    first attempt (pid in ``marks/stall.stalled``), ``stall-fail`` likewise; a restarted worker inherits the same environment."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TOY_STALL_ONCE_ARM", "stall,stall-fail")
        mp.setenv("TOY_MARK_DIR", str(marks))
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address=None, memory_limit=0, silence_logs=40) as c:
            yield c


def same_tables(a_dir: Path, b_dir: Path) -> None:
    a, b = load_run(a_dir, ToyStudy()), load_run(b_dir, ToyStudy())
    pd.testing.assert_frame_equal(a.metrics.sort_values(KEYS).reset_index(drop=True),
                                  b.metrics.sort_values(KEYS).reset_index(drop=True))
    pd.testing.assert_frame_equal(a.extra["final"].sort_values(KEYS).reset_index(drop=True),
                                  b.extra["final"].sort_values(KEYS).reset_index(drop=True))
    sa, sb = RunStore(a_dir), RunStore(b_dir)
    assert sorted(c.key for c in sa.done_cells()) == sorted(c.key for c in sb.done_cells())
    for cell in sa.done_cells():
        assert sorted(p.name for p in sa.cell_dir(cell).iterdir()) == sorted(p.name for p in sb.cell_dir(cell).iterdir())
        assert not sa.damage(cell) and not sb.damage(cell)


def test_dask_gives_the_numbers_and_files_of_jobs_1(tmp_path, cluster):
    one = run_study(ToyStudy(), CONFIG, tmp_path / "one")
    dask = run_study(ToyStudy(), CONFIG, tmp_path / "dask", executor="dask", address=cluster.scheduler_address)
    assert sorted(dask.cells_run) == sorted(one.cells_run) and len(dask.cells_run) == 3
    same_tables(one.run_dir, dask.run_dir)
    env = RunStore(dask.run_dir).read_env()
    assert env["executor"] == "dask" and env["address"] == cluster.scheduler_address
    again = run_study(ToyStudy(), CONFIG, tmp_path / "dask", executor="dask", address=cluster.scheduler_address)
    assert again.cells_run == [] and len(again.cells_skipped) == 3  # resume: nothing left to do


def test_a_failing_cell_raises_its_own_error_and_the_others_stay_done(tmp_path, cluster):
    config = ToyConfig(seeds=2, steps=5, arms=("fast", "slow"), lr=-1.0)  # negative lr: SGD refuses it
    with pytest.raises(ValueError, match="learning rate"):
        run_study(ToyStudy(), config, tmp_path / "run", executor="dask", address=cluster.scheduler_address)
    assert RunStore(tmp_path / "run").done_cells() == []


def test_a_worker_killed_mid_cell_is_retried_on_another_and_the_run_matches_jobs_1(tmp_path, cluster, marks):
    config = ToyConfig(seeds=3, steps=12, arms=("fast", "stall", "slow"))
    outcome, error = [], []

    def drive():
        try:
            outcome.append(run_study(ToyStudy(), config, tmp_path / "dask", executor="dask",
                                     address=cluster.scheduler_address))
        except BaseException as e:
            error.append(e)

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    mark, deadline = marks / "stall.stalled", time.time() + 60
    while not mark.exists():
        assert driver.is_alive() and time.time() < deadline, f"the stalling cell never started ({error})"
        time.sleep(0.05)
    pid = int(mark.read_text())
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)  # the worker running the cell dies mid-cell
    driver.join(timeout=60)
    assert not driver.is_alive(), "the run did not finish after the worker was killed"
    assert not error, error
    assert sorted(outcome[0].cells_run) == sorted(c.key for c in ToyStudy().cells(config))
    clean = run_study(ToyStudy(), config, tmp_path / "clean")  # jobs=1, uninterrupted (the mark exists now)
    same_tables(clean.run_dir, tmp_path / "dask")
    resumed = run_study(ToyStudy(), config, tmp_path / "dask", executor="dask", address=cluster.scheduler_address)
    assert resumed.cells_run == [] and len(resumed.cells_skipped) == 3


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process parents from /proc")
def test_kill_9_of_the_driver_then_resume_matches_uninterrupted(tmp_path, cluster):
    out, marks = tmp_path / "killed", tmp_path / "marks"
    marks.mkdir()
    config = ToyConfig(seeds=3, steps=12, arms=("fast", "stall-driver", "slow"))
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); from toy_study import ToyStudy, ToyConfig; "
            f"from normlab.engine.runner import run_study\n"
            f"if __name__ == '__main__': run_study(ToyStudy(), ToyConfig(seeds=3, steps=12, "
            f"arms={config.arms!r}), {str(out)!r}, jobs=2, executor='dask')")
    env = {**os.environ, "TOY_STALL_ONCE_ARM": "stall-driver", "TOY_MARK_DIR": str(marks)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    others = [c for c in ToyStudy().cells(config) if c.arm != "stall-driver"]
    workers: list[int] = []
    try:
        deadline = time.time() + 90
        # its own local cluster: one worker stalls in "stall-driver", the other has computed the rest
        while not ((marks / "stall-driver.stalled").exists() and all(RunStore(out).is_done(c) for c in others)):
            assert proc.poll() is None, "the driver exited early"
            assert time.time() < deadline, "the workers never reached the stalling cell"
            time.sleep(0.1)
        workers = _children(proc.pid)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 15
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    orphans = [w for w in workers if _alive(w)]
    for w in orphans:
        os.kill(w, signal.SIGKILL)
    assert not orphans, f"worker processes {orphans} outlived their driver"
    stalled = next(c for c in ToyStudy().cells(config) if c.arm == "stall-driver")
    assert not RunStore(out).is_done(stalled)
    # resume on the test's cluster (there "stall-driver" does not stall)
    resumed = run_study(ToyStudy(), config, out, executor="dask", address=cluster.scheduler_address)
    assert resumed.cells_run == [stalled.key] and sorted(resumed.cells_skipped) == sorted(c.key for c in others)
    clean = run_study(ToyStudy(), config, tmp_path / "clean")
    same_tables(clean.run_dir, out)
    assert not list(out.rglob("*.tmp"))


def test_cli_runs_on_a_dask_cluster(tmp_path, cluster, toy_cli):  # noqa: F811
    r = toy_cli("run", "toy", "--quick", "--out", tmp_path / "run", "--executor", "dask",
                "--address", cluster.scheduler_address, "--no-report", "--progress", "none")
    assert r.exit_code == 0, r.output
    assert "2 cells run" in r.output
    assert len(RunStore(tmp_path / "run").done_cells()) == 2


def test_an_unreachable_address_is_one_line_within_the_timeout(tmp_path, toy_cli, monkeypatch):  # noqa: F811
    monkeypatch.setattr(executors, "CONNECT_TIMEOUT_S", 2.0)
    t = time.perf_counter()
    r = toy_cli("run", "toy", "--quick", "--out", tmp_path / "run", "--executor", "dask",
                "--address", "tcp://127.0.0.1:9", "--progress", "none")
    line = one_error_line(r)
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in line
    assert time.perf_counter() - t < 15
    assert not (tmp_path / "run").exists()  # checked before the run directory is made


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:port", "tcp://:8786"])
def test_a_malformed_address_is_one_line_and_makes_no_run_directory(tmp_path, toy_cli, address):  # noqa: F811
    r = toy_cli("run", "toy", "--quick", "--out", tmp_path / "run", "--executor", "dask", "--address", address,
                "--progress", "none")
    assert "--address: expected tcp://HOST:PORT" in one_error_line(r)
    assert not (tmp_path / "run").exists()


def test_addresses_dask_reads_are_accepted_and_only_tcp_is_probed(monkeypatch):
    probed = []
    monkeypatch.setattr(executors.socket, "create_connection", lambda where, timeout: probed.append(where) or
                        type("Closing", (), {"close": lambda self: None})())
    for address in ("localhost", "127.0.0.1:9000", "tcp://10.0.0.1:8786", "tls://host:8786", "ucx://host:1234",
                    "ws://host:8786"):
        executors.check_executor("dask", address)
    assert probed == [("localhost", 8786), ("127.0.0.1", 9000), ("10.0.0.1", 8786), ("host", 8786)]


def test_run_study_raises_executor_error_for_an_unreachable_address(tmp_path, monkeypatch):
    monkeypatch.setattr(executors, "CONNECT_TIMEOUT_S", 1.0)
    with pytest.raises(ExecutorError, match="cannot reach"):
        run_study(ToyStudy(), CONFIG, tmp_path / "run", executor="dask", address="tcp://127.0.0.1:9")


def test_a_cell_whose_worker_dies_past_the_retries_fails_cleanly_and_a_rerun_resumes(tmp_path, cluster, marks,
                                                                                     monkeypatch):
    monkeypatch.setattr(cluster.scheduler, "allowed_failures", 0)  # the first worker death is one too many
    config = ToyConfig(seeds=3, steps=12, arms=("fast", "stall-fail"))
    error = []

    def drive():
        try:
            run_study(ToyStudy(), config, tmp_path / "run", executor="dask", address=cluster.scheduler_address)
        except BaseException as e:
            error.append(e)

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    mark, deadline = marks / "stall-fail.stalled", time.time() + 60
    while not mark.exists():
        assert driver.is_alive() and time.time() < deadline, f"the stalling cell never started ({error})"
        time.sleep(0.05)
    os.kill(int(mark.read_text()), signal.SIGKILL)
    driver.join(timeout=60)
    assert not driver.is_alive(), "the run did not stop after the worker was killed"
    assert len(error) == 1 and isinstance(error[0], ExecutorError), error
    assert "cell 'stall-fail'" in str(error[0]) and "rerun with the same --out" in str(error[0])
    stalled = next(c for c in ToyStudy().cells(config) if c.arm == "stall-fail")
    assert not RunStore(tmp_path / "run").is_done(stalled)
    monkeypatch.undo()
    resumed = run_study(ToyStudy(), config, tmp_path / "run", executor="dask", address=cluster.scheduler_address)
    assert stalled.key in resumed.cells_run
    clean = run_study(ToyStudy(), config, tmp_path / "clean")
    same_tables(clean.run_dir, tmp_path / "run")


def test_a_study_from_a_file_travels_to_the_workers_by_value(tmp_path, cluster):
    import importlib.util

    path = tmp_path / "toy_from_a_file.py"  # not on sys.path: the workers cannot import it by name
    path.write_text((HERE / "toy_study.py").read_text())
    spec = importlib.util.spec_from_file_location("toy_from_a_file", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["toy_from_a_file"] = module
    try:
        spec.loader.exec_module(module)
        config = module.ToyConfig(seeds=2, steps=6, arms=("fast", "slow"))
        run = run_study(module.ToyStudy(), config, tmp_path / "dask", executor="dask",
                        address=cluster.scheduler_address)
        assert len(run.cells_run) == 2
        clean = run_study(module.ToyStudy(), config, tmp_path / "clean")
        same_tables(clean.run_dir, run.run_dir)
    finally:
        del sys.modules["toy_from_a_file"]


def test_a_scheduler_without_workers_is_an_error_not_a_hang(tmp_path, monkeypatch):
    monkeypatch.setattr(executors, "CONNECT_TIMEOUT_S", 1.0)
    with distributed.LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address=None,
                                  silence_logs=40) as empty:
        t = time.perf_counter()
        with pytest.raises(ExecutorError, match="has no workers"):
            run_study(ToyStudy(), CONFIG, tmp_path / "run", executor="dask", address=empty.scheduler_address)
        assert time.perf_counter() - t < 10
