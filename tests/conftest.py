"""Suite-wide settings.

Every test runs with one intra-op torch thread: the suite runs as two xdist workers on a 2-core machine,
and the models under test are small, where a second thread only spin-waits (10x slowdowns were measured).
"""

import os
import subprocess
from pathlib import Path

import pytest
import torch
from hypothesis import settings


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# In CI (CI=true) hypothesis draws the same examples every run, so a landing is never decided by a lucky or
# unlucky draw; local runs keep exploring new examples (and keep their failure database).
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
    settings.load_profile("ci")


@pytest.fixture
def tmpfs(tmp_path):
    """``mount(size)`` -> a fresh tmpfs of ``size`` (e.g. ``"256k"``) at ``tmp_path / "disk"``, unmounted
    after the test: a real full disk and, remounted read-only, a real read-only file system. Skipped
    where mounting is not allowed (not root, or no privilege in this container)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        mnt = tmp_path / "disk"
        mnt.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
