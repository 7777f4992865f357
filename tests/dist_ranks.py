"""Run a function on a few torch.distributed ranks spawned on this machine (gloo, loopback only).

Imported by name (``from dist_ranks import run_ranks``): test folders have no __init__.py. The launcher is
the library's (:func:`normlab.engine.ranks.run_ranks`); this wrapper keeps the tests' defaults (a shorter
overall timeout). The function must be defined at the top level of an importable module (spawn pickles it
by name); it runs as ``fn(rank, world_size, *args)`` inside an initialized gloo process group and makes
its own assertions: an exception on any rank fails the caller with a RanksError naming that rank and its
exception (the rank's traceback is chained under it).
"""

from __future__ import annotations

from normlab.engine.ranks import run_ranks as _run_ranks


def run_ranks(fn, world_size: int = 2, args: tuple = (), timeout: float = 90.0,
              collective_timeout: float = 30.0) -> list:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` spawned gloo ranks; return their results."""
    return _run_ranks(fn, world_size, args, timeout=timeout, collective_timeout=collective_timeout)
