"""One cell: seed it from its key, run it, check what it returned, store it with its DONE marker.

Computing a cell (:func:`compute_cell`) and storing it (:func:`store_cell`) are separate steps.
:func:`run_cell` does both in one process: one cell after the other in the calling process
(:mod:`normlab.engine.runner`) and side by side in local worker processes (:mod:`normlab.engine.parallel`).
A distributed worker (:mod:`normlab.engine.executors`) only computes (:func:`compute_cell_away`, in a
temporary directory whose files it ships back) and the driver stores, so workers need no shared
filesystem. Every way seeds and checks the cell the same way, so a cell's numbers do not depend on how
it was run.
"""

from __future__ import annotations

import hashlib
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from normlab.atomic import atomic_write, atomic_write_bytes, make_dirs
from normlab.engine.spec import METRIC_COLUMNS, Cell, CellContext, CellResult, Study
from normlab.engine.store import RunStore


def cell_seed(cell: Cell) -> int:
    """A torch seed derived from the cell's key: the same cell always starts from the same RNG state."""
    return int(hashlib.sha1(cell.key.encode()).hexdigest()[:8], 16)


def cell_label(cell: Cell) -> str:
    return cell.arm + "".join(f" {k}={v}" for k, v in cell.params)


def run_cell(study: Study, config: Any, store: RunStore, cell: Cell, device: str | torch.device,
             tensorboard: bool, update=None) -> float:
    """Run one cell into its (wiped) directory and store it with its DONE marker; returns its seconds."""
    cell_dir = store.prepare_cell(cell)
    result, seconds = compute_cell(study, config, cell, device, tensorboard, cell_dir, update)
    store_cell(store, cell, result, seconds, tensorboard)
    return seconds


def compute_cell(study: Study, config: Any, cell: Cell, device: str | torch.device, tensorboard: bool,
                 cell_dir: Path, update=None) -> tuple[CellResult, float]:
    """Seed torch from the cell's key and run the cell with ``cell_dir`` as its place for files (its
    ``probe/`` and ``tb/``); returns its checked result and seconds. Writes nothing else."""
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
    return result, time.perf_counter() - tc


def store_cell(store: RunStore, cell: Cell, result: CellResult, seconds: float, tensorboard: bool,
               files: dict[str, bytes] | None = None) -> None:
    """Store a computed cell in its prepared directory: ``files`` (those the cell wrote elsewhere, by path
    relative to its directory), its TensorBoard scalars, its tables, then its DONE marker."""
    cell_dir = store.cell_dir(cell)
    make_dirs(cell_dir / "probe")
    for name, data in (files or {}).items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ValueError(f"cell {cell.arm!r}: file {name!r} lies outside the cell directory")
        path = cell_dir / name
        make_dirs(path.parent)
        atomic_write_bytes(path, data)
    if tensorboard and len(result.metrics):
        write_tensorboard(cell_dir / "tb" / "metrics", result.metrics)
    store.write_cell(cell, result, seconds)


@dataclass
class ComputedCell:
    """A cell computed away from the run directory (by a worker of another machine), for the driver to
    store: its result, seconds, and the files it wrote into its directory, by relative path."""

    result: CellResult
    seconds: float
    files: dict[str, bytes] = field(default_factory=dict)


def compute_cell_away(study: Study, config: Any, cell: Cell, device: str | torch.device,
                      tensorboard: bool) -> ComputedCell:
    """:func:`compute_cell` in a temporary directory, shipping back what the cell wrote there."""
    with tempfile.TemporaryDirectory(prefix="normlab-cell-") as tmp:
        root = Path(tmp)
        result, seconds = compute_cell(study, config, cell, device, tensorboard, root)
        files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    return ComputedCell(result, seconds, files)


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
