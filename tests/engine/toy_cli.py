"""The ``normlab`` command line with the toy study registered (for the run-directory tests)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import normlab.studies
from normlab.cli import app

sys.path.insert(0, str(Path(__file__).parent))
from toy_study import ToyConfig, ToyStudy

QUICK = ToyConfig(**ToyStudy.quick_overrides)  # what `normlab run toy --quick` resolves to


@pytest.fixture
def toy_cli(monkeypatch):
    """``invoke(*args) -> Result`` of ``normlab ARGS``, with ``toy`` the only study."""
    monkeypatch.setattr(normlab.studies, "_REGISTRY", {"toy": ToyStudy()})
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def one_error_line(result) -> str:
    """The single ``error: ...`` line of a failed command (and nothing else on its output)."""
    assert result.exit_code != 0, result.output
    # an exception that escaped the command (a traceback on a real terminal) is not a clean exit
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]
