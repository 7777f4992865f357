"""A full disk, a read-only file system, or an --out that is a file: one `error:` line naming the path, the
files already there left as they were, no temp files.

The disk tests mount a small tmpfs (root only; skipped where mounting is not allowed).
"""

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from normlab.cli import app

sys.path.insert(0, str(Path(__file__).parent))
from toy_cli import one_error_line, toy_cli  # noqa: F401  (toy_cli is a fixture)

RUN = ("run", "toy", "--quick", "--progress", "none")


@pytest.fixture
def disk(tmpfs):
    """A 1m tmpfs (see the ``tmpfs`` fixture in tests/conftest.py)."""
    return tmpfs("1m")


def fill(mnt: Path) -> Path:
    """Write a filler file until the file system is full; returns it."""
    filler = mnt / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def contents(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_full_disk_gives_one_line_and_keeps_the_report_that_was_there(disk, toy_cli):  # noqa: F811
    out = disk / "run"
    assert toy_cli(*RUN, "--out", out).exit_code == 0  # report included
    before = contents(out)
    filler = fill(disk)
    for args in (("report", out), (*RUN, "--out", out)):
        line = one_error_line(toy_cli(*args))
        assert line.startswith(f"error: cannot write {out}/") and line.endswith(": no space left on the device")
        assert contents(out) == before  # claims.json, figures, report.html: the previous versions, whole
    line = one_error_line(toy_cli(*RUN, "--out", disk / "new"))
    assert line.startswith(f"error: cannot write {disk / 'new'}/") and line.endswith("no space left on the device")
    filler.unlink()
    assert toy_cli("report", out).exit_code == 0
    assert toy_cli(*RUN, "--out", disk / "new", "--no-report").exit_code == 0  # what the failed run left is no obstacle
    assert not list(disk.rglob("*.tmp"))


def test_read_only_file_system_gives_one_line(disk, toy_cli):  # noqa: F811
    out = disk / "run"
    assert toy_cli(*RUN, "--out", out, "--no-report").exit_code == 0
    before = contents(out)
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True, capture_output=True)
    for args in (("report", out), (*RUN, "--out", out)):
        line = one_error_line(toy_cli(*args))
        assert line.startswith(f"error: cannot write {out}/") and line.endswith(": read-only file system"), line
    assert one_error_line(toy_cli(*RUN, "--out", disk / "new")) == f"error: cannot write {disk / 'new'}: read-only file system"
    assert contents(out) == before


def test_out_that_is_a_file_gives_one_line(tmp_path):
    afile = tmp_path / "afile.txt"
    afile.write_text("mine")
    runner = CliRunner()
    r = runner.invoke(app, ["run", "overfitting", "--quick", "--out", str(afile)])
    assert one_error_line(r) == f"error: {afile} is a file, not a directory; choose another --out directory"
    r = runner.invoke(app, ["run", "overfitting", "--quick", "--out", str(afile / "sub")])
    assert one_error_line(r) == f"error: cannot write {afile / 'sub'}: {afile} is a file, not a directory"
    assert afile.read_text() == "mine"
