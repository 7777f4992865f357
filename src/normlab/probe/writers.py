"""Where records go: Parquet files (written atomically) and TensorBoard event files.

TensorBoard events are written with TensorBoard's own ``EventFileWriter`` and protobufs, batching all the
values of one step into a single event: one ``Summary`` per step instead of one event per value keeps the
cost of ``logdir=`` small next to training.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

_DBL_MAX = float(np.finfo(np.float64).max)  # TensorBoard's convention for an open last bucket


def write_parquet_atomic(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``frame`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    A reader sees the old file or the new one, never a partial one, even if the process is killed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _tag(kind: str, name: str, stat: str | None, member: int, members: int) -> str:
    parts = [kind, name] + ([stat] if stat else [])
    if members > 1:
        parts.append(f"member_{member}")
    return "/".join(parts)


class TensorBoardWriter:
    """Scalars as ``kind/name/stat`` and histograms as ``kind/name`` (``/member_m`` for ensembles)."""

    def __init__(self, logdir: str | os.PathLike, members: int, bins: int):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        Path(logdir).mkdir(parents=True, exist_ok=True)
        self.members = members
        self.bins = bins
        self._writer = EventFileWriter(str(logdir))

    def write(self, scalars: pd.DataFrame, histograms: pd.DataFrame) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary

        values_by_step: dict[int, list] = {}
        for step, kind, name, stat, member, value in zip(
            scalars["step"].to_numpy(), scalars["kind"].astype(str).to_numpy(),
            scalars["name"].astype(str).to_numpy(), scalars["stat"].astype(str).to_numpy(),
            scalars["member"].to_numpy(), scalars["value"].to_numpy(), strict=True,
        ):
            tag = _tag(kind, name, stat, member, self.members)
            values_by_step.setdefault(int(step), []).append(Summary.Value(tag=tag, simple_value=float(value)))
        if len(histograms):
            # Rows come in runs of `bins` consecutive rows per (step, kind, name, member): reshape, no groupby.
            bins = self.bins
            heads = histograms.iloc[::bins]
            lo = histograms["bin_lo"].to_numpy()[:bins]
            hi = histograms["bin_hi"].to_numpy()[:bins]
            counts = histograms["count"].to_numpy().reshape(-1, bins)
            for row, (step, kind, name, member) in enumerate(zip(
                heads["step"].to_numpy(), heads["kind"].astype(str).to_numpy(),
                heads["name"].astype(str).to_numpy(), heads["member"].to_numpy(), strict=True,
            )):
                values_by_step.setdefault(int(step), []).append(
                    Summary.Value(tag=_tag(kind, name, None, member, self.members),
                                  histo=_histogram_proto(HistogramProto, lo, hi, counts[row]))
                )
        now = time.time()
        for step, values in sorted(values_by_step.items()):
            self._writer.add_event(Event(wall_time=now, step=step, summary=Summary(value=values)))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def _histogram_proto(proto, lo: np.ndarray, hi: np.ndarray, counts: np.ndarray):
    """TensorBoard histogram from binned counts; min/max/sum are those of the non-empty bins' edges and
    midpoints (the exact values are in the scalar tier). Open bins are represented by their finite edge."""
    counts = counts.astype(np.float64)
    nonempty = np.flatnonzero(counts)
    finite_lo = np.where(np.isfinite(lo), lo, hi)
    finite_hi = np.where(np.isfinite(hi), hi, lo)
    mid = (finite_lo + finite_hi) / 2
    first, last = (nonempty[0], nonempty[-1]) if len(nonempty) else (0, 0)
    limits = np.where(np.isfinite(hi), hi, _DBL_MAX)
    return proto(
        min=float(finite_lo[first]), max=float(finite_hi[last]), num=float(counts.sum()),
        sum=float((counts * mid).sum()), sum_squares=float((counts * mid**2).sum()),
        bucket_limit=limits.tolist(), bucket=counts.tolist(),
    )
