"""Run a study's cells into a run directory, resuming what is done.

``run_study`` walks ``study.cells(config)`` in order. For each cell not already done it seeds torch from
the cell's key (so a resumed cell computes the same numbers as in an uninterrupted run), calls
``study.run_cell``, checks the metrics table, and stores it with its DONE marker. Cells run one after the
other, or ``jobs`` at a time in worker processes (:mod:`normlab.engine.parallel`); inside a cell a study
trains its seeds together as one vectorized ensemble
(:mod:`normlab.kit.ensemble`) or one by one (:func:`normlab.kit.ensemble.run_sequential`).

The engine builds no report: :func:`normlab.report.run_and_report` runs a study and then reports it under the
same lock (what ``normlab run`` does).
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from normlab.atomic import WriteError
from normlab.engine import parallel
from normlab.engine.cell import cell_label, run_cell, store_cell
from normlab.engine.config import config_to_dict
from normlab.engine.env import environment
from normlab.engine.executors import check_executor, run_cells_on_dask
from normlab.engine.parallel import resolve_jobs, run_cells_in_workers
from normlab.engine.progress import Heartbeat, Progress
from normlab.engine.spec import Cell, Claim, Study
from normlab.engine.store import RunStore


@dataclass
class RunOutcome:
    """What ``run_study`` did."""

    run_dir: Path
    cells_run: list[str] = field(default_factory=list)
    cells_skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    claims: list[Claim] = field(default_factory=list)  # from ``then`` (the report builder), if any
    report: Path | None = None


def check_cells(study: Study, cells: list[Cell]) -> None:
    keys = [c.key for c in cells]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"{study.name}: cells() returned duplicate cells {dup}")
    for c in cells:
        if not isinstance(c, Cell):
            raise TypeError(f"{study.name}: cells() must return Cell objects, got {type(c).__name__}")
        if not c.seeds:
            raise ValueError(f"{study.name}: cell {c.arm!r} has no seeds")


def _disk_refused(e: OSError, run_dir: Path) -> bool:
    """An OSError that means the disk refused a write (surfaced as a WriteError naming the file), not a
    bug: out of space anywhere, or no permission inside the run directory (a study may read elsewhere)."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
        return True
    if e.errno in (errno.EACCES, errno.EPERM) and e.filename is not None:
        return Path(os.path.abspath(e.filename)).is_relative_to(os.path.abspath(run_dir))
    return False


def run_study(
    study: Study,
    config: Any,
    out_dir: Path | str,
    *,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    tensorboard: bool = True,
    jobs: int = 1,
    executor: str = "local",
    address: str | None = None,
    then: Callable[[Path], tuple[list[Claim], Path]] | None = None,
) -> RunOutcome:
    """Run every cell of ``study`` under ``config`` into ``out_dir`` (checked first: ``study.check_config``).

    An existing ``out_dir`` created with the same study and config is resumed: done cells are skipped,
    damaged ones (see :meth:`~normlab.engine.store.RunStore.damage`) run again. A different config raises
    :class:`~normlab.engine.store.RunDirError`; another process using ``out_dir`` raises its subclass
    :class:`~normlab.engine.store.RunDirBusyError` before anything is written; a full disk or read-only
    directory raises :class:`~normlab.atomic.WriteError` naming the file. ``jobs > 1`` runs that many cells at
    once in worker processes (``0``: one per CPU core; see :mod:`normlab.engine.parallel`); every cell is
    seeded from its key, and a study that sets ``threads`` (every built-in does) runs each cell with that many
    torch threads, so its numbers do not depend on ``jobs``; without it a cell gets the process's threads
    divided by ``jobs``, and reductions over threads may round differently.
    ``executor="dask"`` computes the cells on Dask distributed workers (a local cluster of ``jobs`` worker
    processes, or the scheduler at ``address``) and stores each one here as it returns
    (:mod:`normlab.engine.executors`); an unknown or uninstalled executor raises
    :class:`~normlab.engine.executors.ExecutorError` before anything is written.
    ``then(run_dir)``, if given, runs after the cells while the lock is still held and returns the claims and
    report path for the outcome (:func:`normlab.report.run_and_report` passes the report builder).
    """
    jobs = resolve_jobs(jobs)
    check_executor(executor, address, study)
    progress = progress or Progress()
    t0 = time.perf_counter()
    store = RunStore(out_dir)
    study.check_config(config)
    cells = list(study.cells(config))
    check_cells(study, cells)
    try:
        with store.lock():  # one process at a time per run directory (re-entrant: the report may follow)
            outcome = _run_locked(study, config, store, cells, device, progress, tensorboard, jobs, executor, address)
            if then is not None:
                outcome.claims, outcome.report = then(store.run_dir)
    except OSError as e:
        if isinstance(e, WriteError) or not _disk_refused(e, store.run_dir):
            raise
        raise WriteError(e.filename or store.run_dir, e) from e
    outcome.seconds = time.perf_counter() - t0
    return outcome


def _run_locked(study: Study, config: Any, store: RunStore, cells: list[Cell], device: str | torch.device,
                progress: Progress, tensorboard: bool, jobs: int, executor: str = "local",
                address: str | None = None) -> RunOutcome:
    threads_before = torch.get_num_threads()
    threads = int(study.threads) if getattr(study, "threads", None) else max(1, threads_before // jobs)
    torch.set_num_threads(threads)  # recorded in env.json below
    env = environment(str(device))
    env["jobs"] = jobs
    if executor != "local":
        env["executor"] = executor
        env["address"] = address  # None: a local cluster of `jobs` workers
    store.init(study.name, config_to_dict(config), env, source=getattr(study, "source", None))
    outcome = RunOutcome(run_dir=store.run_dir)
    progress.start(len(cells), study.name)
    try:
        pending = []
        for i, cell in enumerate(cells):
            problem = store.damage(cell) if store.is_marked_done(cell) else "not done"
            if problem is None:
                progress.start_cell(i, cell_label(cell), skipped=True)
                outcome.cells_skipped.append(cell.key)
                continue
            if problem != "not done":
                progress.message(f"cell {cell_label(cell)} ({cell.key}) is damaged: {problem}; running it again")
            pending.append((i, cell))
        started = time.perf_counter()

        def alive(running: int) -> None:  # no cell finished or reported a step for a while: say the run is alive
            done = len(outcome.cells_skipped) + len(outcome.cells_run)
            progress.waiting(running, done, len(cells), time.perf_counter() - started)

        if executor == "dask" and pending:
            where = address or f"a local Dask cluster of {min(jobs, len(pending))} worker process(es)"
            progress.message(f"{len(pending)} cells on {where}, {threads} torch thread(s) each")
            for _, cell, computed in run_cells_on_dask(study, config, pending, jobs=jobs, threads=threads,
                                                       device=str(device), tensorboard=tensorboard,
                                                       address=address):
                store.prepare_cell(cell)  # the driver stores: workers need no shared filesystem
                store_cell(store, cell, computed.result, computed.seconds, tensorboard, computed.files)
                progress.start_cell(len(outcome.cells_skipped) + len(outcome.cells_run), cell_label(cell))
                progress.end_cell(computed.seconds)
                outcome.cells_run.append(cell.key)
        elif jobs > 1 and len(pending) > 1:
            progress.message(f"{len(pending)} cells in {min(jobs, len(pending))} worker processes, "
                             f"{threads} torch thread(s) each")
            for _, cell, seconds in run_cells_in_workers(study, config, store.run_dir, pending, jobs, threads,
                                                         str(device), tensorboard, alive):
                # cells finish out of order: number them by completion
                progress.start_cell(len(outcome.cells_skipped) + len(outcome.cells_run), cell_label(cell))
                progress.end_cell(seconds)
                outcome.cells_run.append(cell.key)
        else:
            for i, cell in pending:
                progress.start_cell(i, cell_label(cell))
                with Heartbeat(parallel.HEARTBEAT_S, lambda: alive(1)) as heartbeat:
                    def update(done: int, total: int, heartbeat: Heartbeat = heartbeat) -> None:
                        heartbeat.touch()
                        progress.update(done, total)

                    seconds = run_cell(study, config, store, cell, device, tensorboard, update)
                outcome.cells_run.append(cell.key)
                progress.end_cell(seconds)
    finally:
        progress.close()
        torch.set_num_threads(threads_before)
    return outcome
