"""Where records go: Parquet files (written atomically) and TensorBoard event files.

TensorBoard events are written with TensorBoard's own ``EventFileWriter`` and protobufs, batching all the
values of one step into a single event: one ``Summary`` per step instead of one event per value keeps the
cost of ``logdir=`` small next to training.

The Parquet files go through :func:`normlab.atomic.atomic_write_parquet` (whole or absent, a
:class:`~normlab.atomic.WriteError` naming the file when the disk refuses). The event file is a stream
that TensorBoard reads while training runs, so it is appended to, not replaced: a kill can leave a
truncated last record, which TensorBoard's reader skips (every record carries its length and CRC). A
failed write to it raises a ``WriteError`` naming the logdir at the next ``write``/``flush``/``close``
(TensorBoard's writer thread also prints its own traceback when it fails).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from normlab.atomic import WriteError, atomic_write_parquet, make_dirs

_DBL_MAX = float(np.finfo(np.float64).max)  # TensorBoard's convention for an open last bucket


def write_parquet_atomic(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``frame`` to ``path`` atomically (see :func:`normlab.atomic.atomic_write`).

    A reader sees the old file or the new one, never a partial one, even if the process is killed.
    """
    atomic_write_parquet(path, frame)
    return Path(path)


def _tags(frame: pd.DataFrame, columns: tuple[str, ...], members: int) -> list[str]:
    """One tag per row: the ``columns`` joined by '/', plus ``member_m`` for ensembles. Built once per
    distinct combination (a flush has thousands of rows but only hundreds of distinct tags)."""
    parts = [frame[c].astype(str).to_numpy().tolist() for c in columns]
    if members > 1:
        parts.append([f"member_{m}" for m in frame["member"].to_numpy().tolist()])
    cache: dict[tuple, str] = {}
    tags = []
    for key in zip(*parts, strict=True):
        tag = cache.get(key)
        if tag is None:
            tag = cache[key] = "/".join(key)
        tags.append(tag)
    return tags


class TensorBoardWriter:
    """Scalars as ``kind/name/stat`` and histograms as ``kind/name`` (``/member_m`` for ensembles)."""

    def __init__(self, logdir: str | os.PathLike, members: int, bins: int):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.logdir = make_dirs(logdir)
        self.members = members
        self.bins = bins
        # A deep queue: the training thread hands events over and never waits for the disk.
        with self._disk_errors():
            self._writer = EventFileWriter(str(logdir), max_queue_size=1 << 16)

    @contextlib.contextmanager
    def _disk_errors(self) -> Iterator[None]:
        try:
            yield
        except OSError as e:
            if isinstance(e, WriteError):
                raise
            raise WriteError(self.logdir, e) from e

    def write(self, scalars: pd.DataFrame, histograms: pd.DataFrame) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary

        values_by_step: dict[int, list] = {}
        if len(scalars):
            tags = _tags(scalars, ("kind", "name", "stat"), self.members)
            for step, tag, value in zip(scalars["step"].to_numpy().tolist(), tags,
                                        scalars["value"].to_numpy().tolist(), strict=True):
                values_by_step.setdefault(step, []).append(Summary.Value(tag=tag, simple_value=value))
        if len(histograms):
            # Rows come in runs of `bins` consecutive rows per (step, kind, name, member): reshape, no groupby.
            bins = self.bins
            heads = histograms.iloc[::bins]
            tags = _tags(heads, ("kind", "name"), self.members)
            lo = histograms["bin_lo"].to_numpy()[:bins]
            hi = histograms["bin_hi"].to_numpy()[:bins]
            counts = histograms["count"].to_numpy().reshape(-1, bins).astype(np.float64)
            for step, tag, fields in zip(heads["step"].to_numpy().tolist(), tags,
                                         _histogram_fields(lo, hi, counts), strict=True):
                values_by_step.setdefault(step, []).append(Summary.Value(tag=tag, histo=HistogramProto(**fields)))
        now = time.time()
        with self._disk_errors():
            for step, values in sorted(values_by_step.items()):
                self._writer.add_event(Event(wall_time=now, step=step, summary=Summary(value=values)))

    def flush(self) -> None:
        with self._disk_errors():
            self._writer.flush()

    def close(self) -> None:
        with self._disk_errors():
            self._writer.close()


def _histogram_fields(lo: np.ndarray, hi: np.ndarray, counts: np.ndarray) -> list[dict]:
    """TensorBoard histogram fields for every row of ``counts`` ``(H, bins)`` at once. ``min``/``max``/
    ``sum`` come from the non-empty bins' edges and midpoints (the exact values are in the scalar tier);
    open bins are represented by their finite edge, and the open last limit by DBL_MAX as TensorFlow does."""
    finite_lo = np.where(np.isfinite(lo), lo, hi)
    finite_hi = np.where(np.isfinite(hi), hi, lo)
    mid = (finite_lo + finite_hi) / 2
    nonempty = counts > 0
    first = nonempty.argmax(axis=1)
    last = counts.shape[1] - 1 - nonempty[:, ::-1].argmax(axis=1)
    limits = np.where(np.isfinite(hi), hi, _DBL_MAX).tolist()
    columns = {
        "min": finite_lo[first].tolist(), "max": finite_hi[last].tolist(), "num": counts.sum(axis=1).tolist(),
        "sum": (counts @ mid).tolist(), "sum_squares": (counts @ mid**2).tolist(), "bucket": counts.tolist(),
    }
    return [
        {**{key: column[row] for key, column in columns.items()}, "bucket_limit": limits}
        for row in range(counts.shape[0])
    ]
