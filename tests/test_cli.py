import subprocess
import sys

from typer.testing import CliRunner

from normlab import __version__
from normlab.cli import app


def test_version_flag_prints_package_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"normlab {__version__}"


def test_help_lists_commands_and_exits_zero():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "normlab" in result.stdout


def test_console_script_entry_point_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "normlab.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert __version__ in out.stdout
