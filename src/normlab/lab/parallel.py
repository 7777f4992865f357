"""Several cells at once: worker processes, each running whole cells into the shared run directory.

Why processes: a cell is one Python loop issuing small kernels, so one cell keeps one core busy and
threads inside it barely help (they spin-wait on microsecond kernels). ``jobs`` cells side by side use
``jobs`` cores. Workers are *spawned* (a fork of a process that already runs torch's thread pools can
deadlock) and import the study's class by reference, so the study must live in an importable module.

Each worker runs :func:`normlab.lab.runner.run_cell`: the same seeding from the cell's key, the same
thread count, the same atomic writes and DONE marker as the sequential path, so a cell's numbers and
files do not depend on ``jobs``, and a run killed mid-way resumes the same way. The parent only collects
results in completion order; on the first failed cell it cancels the cells not yet started and
re-raises that cell's error (cells already stored stay done).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from normlab.lab.spec import Cell, Study


def resolve_jobs(jobs: int) -> int:
    """``jobs`` as a worker count: ``0`` means one per CPU core; negative or non-int is an error."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0:
        raise ValueError(f"jobs: expected a non-negative int (0 = one per CPU core), got {jobs!r}")
    return jobs or (os.cpu_count() or 1)


def _init_worker(threads: int) -> None:
    import torch

    from normlab.lab.memory import retain_freed_memory

    torch.set_num_threads(threads)
    retain_freed_memory()  # a worker runs cell after cell of the same sizes (see lab/memory.py)


def _run_in_worker(study: Study, config: Any, run_dir: str, cell: Cell, device: str, tensorboard: bool) -> float:
    from normlab.lab.runner import run_cell
    from normlab.lab.store import RunStore

    return run_cell(study, config, RunStore(run_dir), cell, device, tensorboard)


def run_cells_in_workers(study: Study, config: Any, run_dir: Path, pending: list[tuple[int, Cell]], jobs: int,
                         threads: int, device: str, tensorboard: bool) -> Iterator[tuple[int, Cell, float]]:
    """Run ``pending`` ``(index, cell)`` pairs in ``jobs`` processes; yield ``(index, cell, seconds)`` as
    each cell is stored."""
    try:
        pickle.dumps((study, config))
    except Exception as e:  # any pickling failure means the same thing here
        raise ValueError(
            f"jobs > 1: study {getattr(study, 'name', study)!r} and its config must be importable by worker "
            f"processes (a class at module level, plain config values); run with jobs=1 instead ({e})"
        ) from None
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(pending)), mp_context=context,
                             initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(_run_in_worker, study, config, str(run_dir), cell, device, tensorboard): (i, cell)
                   for i, cell in pending}
        waiting = set(futures)
        try:
            while waiting:
                done, waiting = wait(waiting, return_when=FIRST_EXCEPTION)
                for future in done:
                    i, cell = futures[future]
                    try:
                        seconds = future.result()  # re-raises the cell's error
                    except BrokenProcessPool as e:
                        raise RuntimeError(
                            f"jobs > 1: a worker process died while running cell {cell.arm!r} (killed, out of "
                            "memory, or the calling script starts the run at import time: spawned workers "
                            "re-import the main script, so guard it with `if __name__ == \"__main__\":`). "
                            "Rerun with the same --out to resume; done cells are kept."
                        ) from e
                    yield i, cell, seconds
        finally:
            for future in waiting:
                future.cancel()
