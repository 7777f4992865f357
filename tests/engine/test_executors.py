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
