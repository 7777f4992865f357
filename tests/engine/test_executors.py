"""Choosing an executor: bad names and a missing Dask are one clear line, before anything is written
(these need no Dask installed; the Dask runs are tests/engine/test_executor_dask.py)."""

import sys
from pathlib import Path

import pytest

from normlab.engine.executors import ExecutorError, check_executor
from normlab.engine.runner import run_study

sys.path.insert(0, str(Path(__file__).parent))
from toy_cli import one_error_line, toy_cli  # noqa: F401  (toy_cli is a fixture)
from toy_study import ToyConfig, ToyStudy


def test_unknown_executor_is_an_error_naming_the_choices(tmp_path, toy_cli):  # noqa: F811
    line = one_error_line(toy_cli("run", "toy", "--quick", "--out", tmp_path / "run", "--executor", "ray"))
    assert line == "error: --executor: expected one of local, dask, got 'ray'"
    assert not (tmp_path / "run").exists()
    with pytest.raises(ExecutorError, match="expected one of local, dask"):
        run_study(ToyStudy(), ToyConfig(), tmp_path / "run", executor="spark")
    assert not (tmp_path / "run").exists()


def test_an_address_needs_the_dask_executor(tmp_path, toy_cli):  # noqa: F811
    line = one_error_line(toy_cli("run", "toy", "--quick", "--out", tmp_path / "run", "--address", "tcp://h:8786"))
    assert "--address: only the dask executor" in line
    assert not (tmp_path / "run").exists()


def test_dask_not_installed_says_how_to_install_it(tmp_path, toy_cli, monkeypatch):  # noqa: F811
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    line = one_error_line(toy_cli("run", "toy", "--quick", "--out", tmp_path / "run", "--executor", "dask"))
    assert "pip install normlab[dask]" in line
    assert not (tmp_path / "run").exists()
    with pytest.raises(ExecutorError, match=r"pip install normlab\[dask\]"):
        check_executor("dask", None)


class _WritesProbeFiles(ToyStudy):
    """The toy study, also writing a probe file and a TensorBoard file of its own (as a study may)."""

    def run_cell(self, config, ctx):
        result = super().run_cell(config, ctx)
        (ctx.probe_dir / "records.bin").write_bytes(b"probe-" + ctx.cell.arm.encode())
        (ctx.tb_dir / "own").mkdir(parents=True)
        (ctx.tb_dir / "own" / "events").write_bytes(b"tb")
        return result


def test_a_cell_computed_away_ships_its_files_and_stores_like_run_cell(tmp_path):
    import json

    from normlab.engine.cell import compute_cell_away, run_cell, store_cell
    from normlab.engine.store import RunStore

    study, config = _WritesProbeFiles(), ToyConfig(seeds=2, steps=5)
    cell = study.cells(config)[0]
    away = compute_cell_away(study, config, cell, "cpu", True)  # its temporary directory is gone now
    assert away.files == {"probe/records.bin": b"probe-fast", "tb/own/events": b"tb"}
    there = RunStore(tmp_path / "away")
    there.prepare_cell(cell)
    store_cell(there, cell, away.result, away.seconds, True, away.files)
    here = RunStore(tmp_path / "here")
    run_cell(study, config, here, cell, "cpu", True)
    for store in (there, here):
        assert store.is_done(cell)
    done = [{name.split(".tfevents.")[0] for name in json.loads((s.cell_dir(cell) / "DONE").read_text())["files"]}
            for s in (there, here)]  # (TensorBoard's file names carry the time they were written)
    assert done[0] == done[1] and "tb/metrics/events.out" in done[0] and "probe/records.bin" in done[0] and "tb/own/events" in done[0]
    assert (there.cell_dir(cell) / "probe" / "records.bin").read_bytes() == b"probe-fast"
    with pytest.raises(ValueError, match="outside the cell directory"):
        store_cell(there, cell, away.result, away.seconds, True, {"../escape": b"x"})
