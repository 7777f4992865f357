"""normlab.atomic: whole files or none, fsynced; a full disk or read-only directory is a clear WriteError.

The disk tests mount a small tmpfs (root only; skipped where mounting is not allowed).
"""

import errno
import json
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from normlab import atomic
from normlab.atomic import (
    WriteError,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    atomic_write_text,
)


def temp_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(f".*{atomic.TEMP_SUFFIX}"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(old=st.binary(max_size=300), new=st.binary(max_size=3000))
def test_bytes_round_trip_and_replace(tmp_path, old, new):
    p = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(p, old)
    atomic_write_bytes(p, new)
    assert p.read_bytes() == new
    assert not temp_files(p.parent)


def test_text_json_parquet_round_trip(tmp_path):
    atomic_write_text(tmp_path / "t.txt", "héllo\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    atomic_write_json(tmp_path / "j.json", {"a": np.int64(3), "b": (1, 2), "p": Path("x")})
    assert json.loads((tmp_path / "j.json").read_text()) == {"a": 3, "b": [1, 2], "p": "x"}
    df = pd.DataFrame({"seed": [0, 1], "metric": ["a", "b"], "value": [1.5, np.nan]})
    atomic_write_parquet(tmp_path / "d.parquet", df)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "d.parquet"), df)


def test_new_files_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    atomic_write_text(tmp_path / "f", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o666 & ~mask


def test_the_file_and_its_directory_are_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    synced, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        st_ = os.fstat(fd)
        synced.append((st_.st_dev, st_.st_ino))
        real_fsync(fd)

    def replace(a, b):
        synced.append("replace")
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    p = tmp_path / "f.txt"
    atomic_write_text(p, "data")
    file_id = (p.stat().st_dev, p.stat().st_ino)
    dir_id = (tmp_path.stat().st_dev, tmp_path.stat().st_ino)
    assert synced == [file_id, "replace", dir_id]


@pytest.mark.parametrize("error", [KeyboardInterrupt, ValueError])
def test_an_error_in_the_block_leaves_the_old_file_and_no_temp(tmp_path, error):
    p = tmp_path / "f.txt"
    atomic_write_text(p, "old")
    with pytest.raises(error), atomic_write(p, "w") as f:
        f.write("half of the new")
        raise error("stop")
    assert p.read_text() == "old"
    assert not temp_files(tmp_path)


def test_an_interrupted_rename_leaves_the_old_file(tmp_path, monkeypatch):
    p = tmp_path / "f.txt"
    atomic_write_text(p, "old")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(p, "new")
    assert p.read_text() == "old"
    assert not temp_files(tmp_path)


def test_a_bug_in_the_block_keeps_its_own_error(tmp_path):
    # An OSError of the caller's own code (here: reading a missing file) is not a write failure.
    with pytest.raises(FileNotFoundError), atomic_write(tmp_path / "f", "w") as f:
        f.write(Path(tmp_path / "missing").read_text())
    assert not (tmp_path / "f").exists() and not temp_files(tmp_path)


def test_a_parent_that_is_a_file_is_named(tmp_path):
    (tmp_path / "afile.txt").write_text("x")
    with pytest.raises(WriteError) as e:
        atomic_write_text(tmp_path / "afile.txt" / "sub" / "f.json", "{}")
    assert str(e.value) == (f"cannot write {tmp_path / 'afile.txt' / 'sub'}: "
                            f"{tmp_path / 'afile.txt'} is a file, not a directory")
    assert (tmp_path / "afile.txt").read_text() == "x"


def test_write_error_is_an_oserror_that_pickles(tmp_path):
    e = WriteError(tmp_path / "f", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert isinstance(e, OSError) and e.errno == errno.ENOSPC and e.filename == str(tmp_path / "f")
    back = pickle.loads(pickle.dumps(e))  # worker processes send their errors to the parent pickled
    assert type(back) is WriteError and str(back) == str(e) == f"cannot write {tmp_path / 'f'}: no space left on the device"


def test_bad_mode_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'wb' or 'w', got 'a'"), atomic_write(tmp_path / "f", "a"):
        pass


# -- a real full disk and a real read-only file system ------------------------------------------------


@pytest.fixture
def small_tmpfs(tmpfs):
    """A 256k tmpfs (see the ``tmpfs`` fixture in tests/conftest.py)."""
    return tmpfs("256k")


def remount_read_only(mnt: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True, capture_output=True)


def big_frame() -> pd.DataFrame:
    return pd.DataFrame({"value": np.random.default_rng(0).random(200_000)})  # ~1.6 MB, incompressible


@pytest.mark.parametrize("write", [
    lambda p: atomic_write_bytes(p, os.urandom(1 << 20)),
    lambda p: atomic_write_text(p, "x" * (1 << 20)),
    lambda p: atomic_write_json(p, list(range(300_000))),
    lambda p: atomic_write_parquet(p, big_frame()),
], ids=["bytes", "text", "json", "parquet"])
def test_full_disk_names_the_path_and_keeps_the_old_file(small_tmpfs, write):
    p = small_tmpfs / "run" / "f"
    atomic_write_text(p, "old")
    with pytest.raises(WriteError) as e:
        write(p)
    assert e.value.errno == errno.ENOSPC
    assert str(e.value) == f"cannot write {p}: no space left on the device"
    assert p.read_text() == "old"
    assert not temp_files(p.parent)
    atomic_write_text(p, "new")  # the space the failed write took is free again
    assert p.read_text() == "new"


def test_read_only_file_system_names_the_path_and_keeps_the_old_file(small_tmpfs):
    p = small_tmpfs / "f.json"
    atomic_write_json(p, {"old": True})
    remount_read_only(small_tmpfs)
    for target in (p, small_tmpfs / "new" / "f.json"):
        with pytest.raises(WriteError) as e:
            atomic_write_json(target, {"old": False})
        assert e.value.errno == errno.EROFS
        assert str(e.value) == f"cannot write {target if target == p else target.parent}: read-only file system"
    assert json.loads(p.read_text()) == {"old": True}
    assert not temp_files(small_tmpfs)
