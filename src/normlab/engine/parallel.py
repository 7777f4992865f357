"""Several cells at once: worker processes, each running whole cells into the shared run directory.

Why processes: a cell is one Python loop issuing small kernels, so one cell keeps one core busy and
threads inside it barely help (they spin-wait on microsecond kernels). ``jobs`` cells side by side use
``jobs`` cores. Workers are *spawned* (a fork of a process that already runs torch's thread pools can
deadlock) and import the study's class by reference, so the study must live in an importable module
(a study run from a file is imported again from that file by each worker, under the same module name).

Each worker runs :func:`normlab.engine.cell.run_cell`: the same seeding from the cell's key, the same
thread count, the same atomic writes and DONE marker as the sequential path, so a cell's numbers and
files do not depend on ``jobs``, and a run killed mid-way resumes the same way. The parent only collects
results in completion order; on the first failed cell it cancels the cells not yet started and
re-raises that cell's error (cells already stored stay done).

Workers never outlive the parent. A ``kill -9`` of the parent runs no cleanup, so each worker watches
for itself: a daemon thread blocks reading a pipe whose write end only the parent holds (spawned
children inherit only the read end); the kernel closes the write end when the parent dies, the read
returns end-of-file and the thread ends the worker at once (``os._exit``, mid-cell or idle). The pipe
also covers a parent that dies before a worker has started. As a second guard, a worker checks that its
parent is still the one that spawned it just before it stores a cell, so no DONE marker is written by an
orphan in the moment between the death and the thread's wake-up.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import multiprocessing
import os
import pickle
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from normlab.engine.cell import run_cell
from normlab.engine.spec import Cell, Study
from normlab.engine.store import RunStore

HEARTBEAT_S = 60.0  # with no cell finished for this long, the caller hears that the run is alive
ORPHAN_EXIT_CODE = 70  # a worker whose parent died exits with this (EX_SOFTWARE) without cleanup


def resolve_jobs(jobs: int) -> int:
    """``jobs`` as a worker count: ``0`` means one per CPU core; negative or non-int is an error."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0:
        raise ValueError(f"jobs: expected a non-negative int (0 = one per CPU core), got {jobs!r}")
    return jobs or (os.cpu_count() or 1)


_parent_pid: int | None = None  # in a worker: the pid of the process that spawned it


def _exit_if_orphaned() -> None:
    """End this worker at once if the parent that spawned it is gone (it was re-parented)."""
    if _parent_pid is not None and os.getppid() != _parent_pid:
        os._exit(ORPHAN_EXIT_CODE)


def _exit_when_parent_dies(parent_alive: Any) -> None:
    """Block on the parent's pipe; end-of-file means the parent died (nothing is ever sent)."""
    try:
        parent_alive.recv_bytes()
    except (EOFError, OSError):
        pass
    os._exit(ORPHAN_EXIT_CODE)


def _study_module_file(study: Study) -> tuple[str, str] | None:
    """``(module name, file)`` of a study class that a worker cannot import by name (a study run from a
    file: its module exists only in this process's ``sys.modules``); ``None`` for an importable one."""
    name = type(study).__module__
    file = getattr(sys.modules.get(name), "__file__", None)
    if name == "__main__" or "." in name or not file:  # a script's own classes: multiprocessing handles them
        return None
    # Search sys.path only: importlib.util.find_spec would answer from sys.modules, where the module is.
    return None if importlib.machinery.PathFinder.find_spec(name) is not None else (name, file)


def _import_from_file(name: str, file: str) -> None:
    """Register ``file`` as module ``name`` so the worker can unpickle the study's class."""
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import study module {name} from {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def _init_worker(threads: int, parent_pid: int, parent_alive: Any, study_module: tuple[str, str] | None = None) -> None:
    global _parent_pid
    _parent_pid = parent_pid
    threading.Thread(target=_exit_when_parent_dies, args=(parent_alive,), name="normlab-parent-watch",
                     daemon=True).start()
    _exit_if_orphaned()  # the parent may have died while this worker was starting

    if study_module is not None:
        _import_from_file(*study_module)  # before the first task (and its pickled study) arrives

    import torch

    from normlab.engine.memory import retain_freed_memory

    torch.set_num_threads(threads)
    retain_freed_memory()  # a worker runs cell after cell of the same sizes (see engine/memory.py)


class _WorkerStore(RunStore):
    """The run store as a worker uses it: a cell is stored only while the parent is alive."""

    def write_cell(self, *args: Any, **kwargs: Any) -> None:
        _exit_if_orphaned()
        super().write_cell(*args, **kwargs)


def _run_in_worker(study: Study, config: Any, run_dir: str, cell: Cell, device: str, tensorboard: bool) -> float:
    return run_cell(study, config, _WorkerStore(run_dir), cell, device, tensorboard)


def run_cells_in_workers(study: Study, config: Any, run_dir: Path, pending: list[tuple[int, Cell]], jobs: int,
                         threads: int, device: str, tensorboard: bool,
                         on_wait: Callable[[int], None] | None = None) -> Iterator[tuple[int, Cell, float]]:
    """Run ``pending`` ``(index, cell)`` pairs in ``jobs`` processes; yield ``(index, cell, seconds)`` as
    each cell is stored. ``on_wait(running)`` is called every ``HEARTBEAT_S`` seconds in which no cell
    finished (a long cell in a worker reports no steps: this says the run is alive)."""
    try:
        pickle.dumps((study, config))
    except Exception as e:  # any pickling failure means the same thing here
        raise ValueError(
            f"jobs > 1: study {getattr(study, 'name', study)!r} and its config must be importable by worker "
            f"processes (a class at module level, plain config values); run with jobs=1 instead ({e})"
        ) from None
    context = multiprocessing.get_context("spawn")
    # The read end goes to every worker; the write end stays here, open until the pool has shut down.
    parent_alive, keep_open = context.Pipe(duplex=False)
    try:
        yield from _run_pool(study, config, run_dir, pending, jobs, device, tensorboard, context,
                             (threads, os.getpid(), parent_alive, _study_module_file(study)), on_wait)
    finally:
        keep_open.close()
        parent_alive.close()


def _run_pool(study: Study, config: Any, run_dir: Path, pending: list[tuple[int, Cell]], jobs: int, device: str,
              tensorboard: bool, context: Any, initargs: tuple[Any, ...],
              on_wait: Callable[[int], None] | None) -> Iterator[tuple[int, Cell, float]]:
    with ProcessPoolExecutor(max_workers=min(jobs, len(pending)), mp_context=context,
                             initializer=_init_worker, initargs=initargs) as pool:
        futures = {pool.submit(_run_in_worker, study, config, str(run_dir), cell, device, tensorboard): (i, cell)
                   for i, cell in pending}
        waiting = set(futures)
        try:
            while waiting:
                done, waiting = wait(waiting, timeout=HEARTBEAT_S, return_when=FIRST_EXCEPTION)
                if not done and on_wait is not None:
                    on_wait(sum(1 for future in waiting if future.running()))
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
