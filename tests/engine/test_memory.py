"""retain_freed_memory: a block freed and allocated again is served from memory the process already has."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Allocates and frees a 64 MB block twice, and prints the page faults of the second allocation's first
# touch. Run in a fresh interpreter: the setting is process-wide and cannot be undone.
SCRIPT = """
import resource, sys
import numpy as np
from normlab.engine.memory import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else False
block = np.ones(8 << 20); del block
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = np.ones(8 << 20)
print(int(applied), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return bool(int(applied)), int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_freed_block_is_reused_without_page_faults():
    applied, faults = _faults("retain")
    if not applied:
        pytest.skip("this libc has no mallopt (not glibc)")
    # 64 MB is 32 faults in 2 MB transparent huge pages (numpy asks for them), 16384 in 4 KB pages.
    assert faults < 4  # the block came back from the heap: no fresh pages
    _, default_faults = _faults("default")
    assert default_faults >= 32  # the control: glibc's default hands the block back and faults it in
