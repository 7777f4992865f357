"""What a run records about where it ran: library versions, threads, device, git state."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = ("normlab", "torch", "numpy", "scipy", "pandas", "pyarrow", "matplotlib", "tensorboard")


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(path: Path | None = None) -> dict[str, Any]:
    """Commit, branch and dirtiness of the checkout holding normlab (``None`` fields outside git)."""
    cwd = path or Path(__file__).resolve().parent
    commit = _git(["rev-parse", "HEAD"], cwd)
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    return {
        "commit": commit,
        "branch": _git(["rev-parse", "--abbrev-ref", "HEAD"], cwd),
        "dirty": None if status is None else bool(status),
    }


def environment(device: str = "cpu") -> dict[str, Any]:
    """A JSON-ready record of versions, threads, platform and git state."""
    import torch

    return {
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "device": str(device),
        "cuda_available": torch.cuda.is_available(),
        "versions": {p: _version(p) for p in _PACKAGES},
        "git": git_state(),
        "argv": sys.argv,
    }
