"""The engine: run a study's cells into a run directory (resuming), then build the report.

``run_study`` walks ``study.cells(config)`` in order. For each cell not already done it seeds torch from
the cell's key (so a resumed cell computes the same numbers as in an uninterrupted run), calls
``study.run_cell``, checks the metrics table, and stores it with its DONE marker. Cells run one after the
other, or ``jobs`` at a time in worker processes (:mod:`normlab.lab.parallel`); inside a cell a study
trains its seeds together as one vectorized ensemble
(:mod:`normlab.lab.ensemble`) or one by one (:func:`normlab.lab.ensemble.run_sequential`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from normlab.atomic import WriteError, atomic_write, make_dirs
from normlab.lab.config import config_to_dict
from normlab.lab.env import environment
from normlab.lab.progress import Progress
from normlab.lab.spec import METRIC_COLUMNS, Cell, CellContext, CellResult, Claim, Study
from normlab.lab.store import RunStore


@dataclass
class RunOutcome:
    """What ``run_study`` did."""

    run_dir: Path
    cells_run: list[str] = field(default_factory=list)
    cells_skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    claims: list[Claim] = field(default_factory=list)
    report: Path | None = None


def cell_seed(cell: Cell) -> int:
    """A torch seed derived from the cell's key: the same cell always starts from the same RNG state."""
    return int(hashlib.sha1(cell.key.encode()).hexdigest()[:8], 16)


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


def check_result(study: Study, cell: Cell, result: Any) -> CellResult:
    """A clear error when ``run_cell`` returns something the store cannot hold."""
    where = f"{study.name}.run_cell({cell.arm!r})"
    if not isinstance(result, CellResult):
        raise TypeError(f"{where}: expected a CellResult, got {type(result).__name__}")
    m = result.metrics
    if not isinstance(m, pd.DataFrame):
        raise TypeError(f"{where}: metrics must be a pandas DataFrame, got {type(m).__name__}")
    missing = [c for c in METRIC_COLUMNS if c not in m.columns]
    if missing:
        raise ValueError(f"{where}: metrics lacks columns {missing}; expected at least {list(METRIC_COLUMNS)}")
    reserved = {"arm", *cell.param_dict}
    clash = sorted(reserved & set(m.columns))
    if clash:
        raise ValueError(f"{where}: metrics must not carry the engine's columns {clash} (it adds them)")
    tables = {"probe_scalars": result.probe_scalars, "probe_histograms": result.probe_histograms, **result.extra}
    for name, table in tables.items():
        if table is None:
            continue
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"{where}: table {name!r} must be a pandas DataFrame, got {type(table).__name__}")
        clash = sorted(reserved & set(table.columns))
        if clash:
            raise ValueError(f"{where}: table {name!r} must not carry the engine's columns {clash} (it adds them)")
    extra_seeds = sorted(set(m["seed"].unique()) - set(cell.seeds))
    if extra_seeds:
        raise ValueError(f"{where}: metrics has seeds {extra_seeds} that are not the cell's {list(cell.seeds)}")
    return result


def write_tensorboard(tb_dir: Path, metrics: pd.DataFrame) -> Path:
    """Mean over seeds of every metric, per step, as TensorBoard scalars ``metric/mean``.

    Written in one go, atomically, as one event file (TensorBoard's record format: the file-version
    event, then one event per step), so a cell's TensorBoard file is whole like its tables.
    """
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.record_writer import RecordWriter

    means = metrics.groupby(["step", "metric"], sort=True)["value"].mean()
    now = time.time()
    path = Path(tb_dir) / f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}"
    with atomic_write(path) as f:
        records = RecordWriter(f)
        records.write(Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
        for step, group in means.groupby(level="step", sort=True):
            values = [Summary.Value(tag=f"{metric}/mean", simple_value=float(v))
                      for (_, metric), v in group.items()]
            records.write(Event(wall_time=now, step=int(step), summary=Summary(value=values)).SerializeToString())
    return path


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
    report: bool = True,
    tensorboard: bool = True,
    jobs: int = 1,
) -> RunOutcome:
    """Run every cell of ``study`` under ``config`` into ``out_dir`` and (by default) build the report.

    An existing ``out_dir`` created with the same study and config is resumed: done cells are skipped,
    damaged ones (see :meth:`~normlab.lab.store.RunStore.damage`) run again. A different config raises
    :class:`~normlab.lab.store.RunDirError`; another process using ``out_dir`` raises its subclass
    :class:`~normlab.lab.store.RunDirBusyError` before anything is written; a full disk or read-only
    directory raises :class:`~normlab.atomic.WriteError` naming the file. ``jobs > 1`` runs that many cells at
    once in worker processes (``0``: one per CPU core; see :mod:`normlab.lab.parallel`); every cell is
    seeded from its key and runs with the same thread count, so its numbers do not depend on ``jobs``.
    """
    from normlab.lab.parallel import resolve_jobs

    jobs = resolve_jobs(jobs)
    progress = progress or Progress()
    t0 = time.perf_counter()
    store = RunStore(out_dir)
    cells = list(study.cells(config))
    check_cells(study, cells)
    try:
        with store.lock():  # held to the end, report included: one process at a time per run directory
            outcome = _run_locked(study, config, store, cells, device, progress, report, tensorboard, jobs)
    except OSError as e:
        if isinstance(e, WriteError) or not _disk_refused(e, store.run_dir):
            raise
        raise WriteError(e.filename or store.run_dir, e) from e
    outcome.seconds = time.perf_counter() - t0
    return outcome


def _run_locked(study: Study, config: Any, store: RunStore, cells: list[Cell], device: str | torch.device,
                progress: Progress, report: bool, tensorboard: bool, jobs: int) -> RunOutcome:
    from normlab.lab.parallel import run_cells_in_workers

    threads_before = torch.get_num_threads()
    threads = int(study.threads) if getattr(study, "threads", None) else max(1, threads_before // jobs)
    torch.set_num_threads(threads)  # recorded in env.json below
    env = environment(str(device))
    env["jobs"] = jobs
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
        if jobs > 1 and len(pending) > 1:
            progress.message(f"{len(pending)} cells in {min(jobs, len(pending))} worker processes, "
                             f"{threads} torch thread(s) each")
            for _, cell, seconds in run_cells_in_workers(study, config, store.run_dir, pending, jobs, threads,
                                                         str(device), tensorboard):
                # cells finish out of order: number them by completion
                progress.start_cell(len(outcome.cells_skipped) + len(outcome.cells_run), cell_label(cell))
                progress.end_cell(seconds)
                outcome.cells_run.append(cell.key)
        else:
            for i, cell in pending:
                progress.start_cell(i, cell_label(cell))
                seconds = run_cell(study, config, store, cell, device, tensorboard, progress.update)
                outcome.cells_run.append(cell.key)
                progress.end_cell(seconds)
        if report:
            progress.message("building the report (claims, figures, report.html) ...")
    finally:
        progress.close()
        torch.set_num_threads(threads_before)
    if report:
        from normlab.report import build_report

        outcome.claims, outcome.report = build_report(study, store.run_dir)
    return outcome


def cell_label(cell: Cell) -> str:
    return cell.arm + "".join(f" {k}={v}" for k, v in cell.params)


def run_cell(study: Study, config: Any, store: RunStore, cell: Cell, device: str | torch.device,
             tensorboard: bool, update=None) -> float:
    """Run one cell into its (wiped) directory and store it with its DONE marker; returns its seconds."""
    cell_dir = store.prepare_cell(cell)
    ctx = CellContext(
        cell=cell,
        device=torch.device(device),
        probe_dir=cell_dir / "probe",
        tb_dir=cell_dir / "tb" if tensorboard else None,
        **({"progress": update} if update is not None else {}),
    )
    make_dirs(ctx.probe_dir)
    torch.manual_seed(cell_seed(cell))
    tc = time.perf_counter()
    result = check_result(study, cell, study.run_cell(config, ctx))
    seconds = time.perf_counter() - tc
    if tensorboard and len(result.metrics):
        write_tensorboard(cell_dir / "tb" / "metrics", result.metrics)
    store.write_cell(cell, result, seconds)
    return seconds
