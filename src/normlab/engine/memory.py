"""Keep freed memory inside the process, so the next cell reuses it instead of faulting in fresh pages.

A cell allocates the same large blocks again and again: probe rings, and the long tables built from the
probe's records (millions of rows: tens of MB per column). glibc serves blocks above a threshold (128 KB
to 32 MB, adaptive) with ``mmap`` and hands them back to the kernel on ``free``; the next allocation then
takes fresh pages, and every page costs a fault on first touch. On the virtual machines normlab runs on
that first touch is the expensive part: guest memory handed back to the host must be faulted in again,
much more slowly than pages the process already holds are rewritten (tests/engine/test_memory.py counts
the page faults a freed block costs with and without this).

:func:`retain_freed_memory` sets glibc's ``M_MMAP_MAX`` to 0 (every block comes from the heap, which
``free`` keeps) and raises ``M_TRIM_THRESHOLD`` (the heap is never shrunk). The process then keeps its
peak memory until it exits: right for the lab's own processes (the ``normlab`` command and its worker
processes, which run cell after cell of the same sizes), not something a library does to its caller's
process, so nothing calls it on import. Elsewhere than Linux with glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
NEVER_TRIM = 2**31 - 1  # mallopt takes an int; this is "never" for every heap a cell builds


def retain_freed_memory() -> bool:
    """Ask glibc to keep freed memory in this process; returns whether it was applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
