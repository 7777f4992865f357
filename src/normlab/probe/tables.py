"""Raw buffer chunks -> long-format pandas tables.

The device rows hold raw moments in a fixed layout described by a ``Catalog``; this module is the only
place that knows that layout. Scalars: ``step, member, name, kind, stat, value``. Histograms:
``step, member, name, kind, bin_lo, bin_hi, count`` (every bin, empty ones included, so a table pivots
straight into a step × bin heatmap; or only the occupied bins, for storage).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from normlab.probe.buffer import Chunk
from normlab.probe.layout import OUTPUTS, REGIONS, StepLayout
from normlab.probe.quantities import DEFAULT_QUANTITIES, Quantity, SegmentMoments, Sources

SCALAR_COLUMNS = ("step", "member", "name", "kind", "stat", "value")
HISTOGRAM_COLUMNS = ("step", "member", "name", "kind", "bin_lo", "bin_hi", "count")


@dataclass(frozen=True)
class Catalog:
    """What each value of a row means: the rows' ``StepLayout``, the quantities derived from them, the
    histogram bin edges (None without histograms), and the parameters no attached optimizer steps (no
    ``update`` records)."""

    layout: StepLayout
    bin_edges: np.ndarray | None
    unstepped: frozenset[int] = frozenset()
    quantities: tuple[Quantity, ...] = DEFAULT_QUANTITIES

    @property
    def members(self) -> int:
        return self.layout.members

    @property
    def activation_slots(self) -> tuple[tuple[str, str], ...]:
        return self.layout.output_slots

    @property
    def param_names(self) -> tuple[str, ...]:
        return self.layout.regions["grad"].tensor_names

    @property
    def running_names(self) -> tuple[str, ...]:
        return self.layout.regions["running_value"].tensor_names

    @property
    def scalar_width(self) -> int:
        return self.layout.scalar_width

    @property
    def histogram_segments(self) -> int:
        return self.layout.histogram_segments


class _Columns:
    """Accumulates blocks of derived values ``(n_rows, D)`` with their per-column labels and validity."""

    def __init__(self, n_rows: int):
        self.n_rows = n_rows
        self.values: list[np.ndarray] = []
        self.valid: list[np.ndarray] = []
        self.labels: dict[str, list[np.ndarray]] = {"member": [], "name": [], "kind": [], "stat": []}

    def add(self, values: np.ndarray, valid: np.ndarray, **labels: np.ndarray) -> None:
        """``values``/``valid``: ``(n_rows, *shape)``; each label broadcastable to ``shape``."""
        shape = values.shape[1:]
        self.values.append(values.reshape(self.n_rows, -1))
        self.valid.append(np.broadcast_to(valid, values.shape).reshape(self.n_rows, -1))
        for key, label in labels.items():
            self.labels[key].append(np.broadcast_to(label, shape).reshape(-1))

    def frame(self, steps: np.ndarray) -> pd.DataFrame:
        """The long table: for each row ``r`` of the blocks, the valid values of ``steps[r]``, in column order.

        Every column is written once, straight into its final array: runs of rows whose values are all
        valid -- nearly all rows -- by broadcasting the labels and copying the blocks, the other rows
        through their mask. Full-size masks and intermediate tables would touch fresh memory for every
        cell, which costs more than the arithmetic that fills it. Columns absent from every row (the update ratio of a one-element tensor, whose
        std is always 0) are dropped first, so that rows with a value missing stay the rare case.
        """
        if not self.values:
            return empty_scalars()
        present = [valid.any(axis=0) for valid in self.valid]
        valid = np.concatenate([v[:, p] for v, p in zip(self.valid, present, strict=True)], axis=1)
        labels = {key: np.concatenate([label[p] for label, p in zip(blocks, present, strict=True)])
                  for key, blocks in self.labels.items()}
        n_rows, width = valid.shape
        per_row = valid.sum(axis=1)
        total = int(per_row.sum())
        labels["member"] = labels["member"].astype(np.int64)
        categories = {}
        for key in ("name", "kind", "stat"):
            categories[key], labels[key] = _used_codes(labels[key], np.ones(width, dtype=bool))
        columns = {"step": np.empty(total, np.int64), **{key: np.empty(total, label.dtype) for key, label in labels.items()},
                   "value": np.empty(total, np.result_type(*self.values))}
        full = per_row == width
        row_starts = np.concatenate([[0], np.cumsum(per_row)])
        runs = np.flatnonzero(np.diff(full.astype(np.int8))) + 1
        for a, b in itertools.pairwise([0, *runs.tolist(), n_rows]):
            out = slice(int(row_starts[a]), int(row_starts[b]))
            values = [block[a:b] if p.all() else block[a:b][:, p] for block, p in zip(self.values, present, strict=True)]
            if full[a]:
                columns["step"][out].reshape(b - a, width)[:] = steps[a:b, None]
                for key, label in labels.items():
                    columns[key][out].reshape(b - a, width)[:] = label
                np.concatenate(values, axis=1, out=columns["value"][out].reshape(b - a, width))
            else:
                mask = valid[a:b]
                columns["step"][out] = np.broadcast_to(steps[a:b, None], mask.shape)[mask]
                for key, label in labels.items():
                    columns[key][out] = np.broadcast_to(label, mask.shape)[mask]
                columns["value"][out] = np.concatenate(values, axis=1)[mask]
        for key, cats in categories.items():
            columns[key] = pd.Categorical.from_codes(columns[key], categories=cats)
        # copy=False: pandas would otherwise stack the two int64 columns into one new block (a copy).
        return pd.DataFrame(columns, columns=list(SCALAR_COLUMNS), copy=False)


def _used_codes(label: np.ndarray, present: np.ndarray, repeat: int = 1) -> tuple[pd.Index, np.ndarray]:
    """Categories that occur in a present column, and the code of every column of ``np.repeat(label,
    repeat)`` (-1 where the category does not occur)."""
    categories, codes = np.unique(label.astype(str), return_inverse=True)
    codes = np.repeat(codes.reshape(-1), repeat)
    used = np.unique(codes[present])
    remap = np.full(len(categories), -1, dtype=np.int8 if len(used) < 127 else np.int32)
    remap[used] = np.arange(len(used))
    return pd.Index(categories[used]), remap[codes]


def _tiled_categorical(label: np.ndarray, n_rows: int, valid: np.ndarray, repeat: int = 1) -> pd.Categorical:
    """``pd.Categorical(np.tile(np.repeat(label, repeat), n_rows)[valid])`` with only the categories that
    occur, built from integer codes: the strings are factorized once per row layout, not once per cell,
    and the unused categories are found per column (``valid.any`` over rows), never by sorting the table."""
    categories, codes = _used_codes(label, valid.reshape(n_rows, -1).any(axis=0), repeat)
    return pd.Categorical.from_codes(np.tile(codes, n_rows)[valid], categories=categories)


def _segment_labels(names: Sequence[str], members: int) -> tuple[np.ndarray, np.ndarray]:
    """Name and member of every segment (tensor-major, member-minor)."""
    return np.repeat(np.array(names, dtype=object), members), np.tile(np.arange(members), len(names))


def _missing_mask(chunk: Chunk, key_of, n_items: int) -> np.ndarray:
    """``(n_rows, n_items)`` True where item ``i`` is present: ``key_of(i)`` not in the row's missing set."""
    valid = np.ones((len(chunk.steps), n_items), dtype=bool)
    for row, missing in enumerate(chunk.missing):
        if missing:
            for item in range(n_items):
                if key_of(item) in missing:
                    valid[row, item] = False
    return valid


def _merged(chunks: Sequence[Chunk]) -> list[Chunk]:
    """The non-empty chunks as one chunk: one table is built instead of many frames concatenated
    (pandas' concat of categorical frames costs more than building the table itself)."""
    chunks = [chunk for chunk in chunks if len(chunk.steps)]
    if len(chunks) <= 1:
        return chunks
    return [Chunk(np.concatenate([c.steps for c in chunks]), np.concatenate([c.values for c in chunks]),
                  [missing for c in chunks for missing in c.missing])]


def scalars_frame(catalog: Catalog, chunks: Sequence[Chunk]) -> pd.DataFrame:
    frames = [_scalars_chunk(catalog, chunk) for chunk in _merged(chunks)]
    return _concat(frames, ("name", "kind", "stat")) if frames else empty_scalars()


def sources(catalog: Catalog, chunk: Chunk) -> Sources:
    """The raw moments of every source in ``chunk``'s scalar rows, with their labels and presence."""
    layout, n, members = catalog.layout, len(chunk.steps), catalog.members
    slots = layout.output_slots
    found: Sources = {}
    if slots:
        present = np.repeat(_missing_mask(chunk, lambda i: ("act", i), len(slots)), members, 1)
        names, seg_members = _segment_labels([s[0] for s in slots], members)
        kinds, _ = _segment_labels([s[1] for s in slots], members)
        found[OUTPUTS] = SegmentMoments.from_raw(
            layout.output_moments(chunk.values), np.full(len(names), np.nan), present, names, kinds, seg_members)
    for name in REGIONS:
        region = layout.regions[name]
        if not region.n_segments:
            continue
        tensors = len(region.tensor_names)
        if name == "grad":
            present = np.repeat(_missing_mask(chunk, lambda i: ("grad", i), tensors), members, 1)
        elif name == "running_delta":
            present = np.repeat(_missing_mask(chunk, lambda _: ("drift",), 1), region.n_segments, 1)
        elif name == "update" and catalog.unstepped:
            stepped = np.repeat([i not in catalog.unstepped for i in range(tensors)], members)
            present = np.broadcast_to(stepped, (n, region.n_segments))
        else:
            present = np.ones((n, region.n_segments), bool)
        names, seg_members = _segment_labels(region.tensor_names, members)
        found[name] = SegmentMoments.from_raw(layout.region_moments(chunk.values, name), region.counts, present,
                                              names, np.full(len(names), name, dtype=object), seg_members)
    return found


def _scalars_chunk(catalog: Catalog, chunk: Chunk) -> pd.DataFrame:
    out = _Columns(len(chunk.steps))
    found = sources(catalog, chunk)
    for quantity in catalog.quantities:
        source = found.get(quantity.source)
        if source is None:  # no segments: no records
            continue
        values, valid = quantity.compute(found)
        stats = np.array(quantity.stats, dtype=object)
        if quantity.per_model:
            labels = {"name": "model", "member": np.arange(catalog.members)}
        else:
            labels = {"name": source.names, "member": source.members}
        labels["kind"] = source.kinds if quantity.kind is None else quantity.kind
        if quantity.segment_major:  # (n, S, stats): the stats of a segment together
            values, valid = values.transpose(0, 2, 1), np.broadcast_to(valid, values.shape).transpose(0, 2, 1)
            labels = {key: np.asarray(label)[..., None] if np.ndim(label) else label
                      for key, label in labels.items()}
            out.add(values, valid, stat=stats, **labels)
        else:
            out.add(values, valid, stat=stats[:, None], **labels)
    return out.frame(chunk.steps)


def histograms_frame(catalog: Catalog, chunks: Sequence[Chunk], empty_bins: bool = True) -> pd.DataFrame:
    """``empty_bins=False`` leaves out the bins with count 0 (the long table is then sparse: typically most
    of a tensor's bins are empty, and the rows are dropped before any column is built)."""
    frames = [_histograms_chunk(catalog, chunk, empty_bins) for chunk in _merged(chunks)]
    return _concat(frames, ("name", "kind")) if frames else empty_histograms()


def concat_scalars(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Scalar tables one after another, name/kind/stat kept categorical."""
    return _concat([f for f in frames if len(f)] or [empty_scalars()], ("name", "kind", "stat"))


def _concat(frames: list[pd.DataFrame], categorical: tuple[str, ...]) -> pd.DataFrame:
    if len(frames) == 1:
        return frames[0]
    frame = pd.concat(frames, ignore_index=True)  # categoricals with different categories become object
    for column in categorical:
        frame[column] = frame[column].astype("category")
    return frame


def _histograms_chunk(catalog: Catalog, chunk: Chunk, empty_bins: bool) -> pd.DataFrame:
    edges, members = catalog.bin_edges, catalog.members
    bins = len(edges) - 1
    n, segments = len(chunk.steps), catalog.histogram_segments
    slots = catalog.activation_slots
    param_names, param_members = _segment_labels(catalog.param_names, members)
    names = np.concatenate([np.repeat(np.array([s[0] for s in slots], dtype=object), members),
                            param_names, param_names])
    kinds = np.concatenate([np.repeat(np.array([s[1] for s in slots], dtype=object), members),
                            np.full(len(param_names), "grad", dtype=object),
                            np.full(len(param_names), "weight", dtype=object)])
    seg_members = np.concatenate([np.tile(np.arange(members), len(slots)), param_members, param_members])
    valid = np.ones((n, segments), dtype=bool)
    valid[:, : len(slots) * members] = np.repeat(_missing_mask(chunk, lambda i: ("act", i), len(slots)), members, 1)
    valid = np.repeat(valid, bins, axis=1).reshape(-1)
    if not empty_bins:
        valid &= chunk.values.reshape(-1) > 0
    per_row = segments * bins
    frame = {
        "step": np.repeat(chunk.steps, per_row)[valid],
        "member": np.tile(np.repeat(seg_members, bins), n)[valid].astype(np.int64),
        "name": _tiled_categorical(names, n, valid, repeat=bins),
        "kind": _tiled_categorical(kinds, n, valid, repeat=bins),
        "bin_lo": np.tile(edges[:-1], n * segments)[valid],
        "bin_hi": np.tile(edges[1:], n * segments)[valid],
        "count": chunk.values.reshape(-1)[valid].astype(np.int64),
    }
    return pd.DataFrame(frame, columns=list(HISTOGRAM_COLUMNS))


def empty_scalars() -> pd.DataFrame:
    return pd.DataFrame({
        "step": pd.Series(dtype=np.int64), "member": pd.Series(dtype=np.int64),
        "name": pd.Categorical([]), "kind": pd.Categorical([]), "stat": pd.Categorical([]),
        "value": pd.Series(dtype=np.float64),
    })


def empty_histograms() -> pd.DataFrame:
    return pd.DataFrame({
        "step": pd.Series(dtype=np.int64), "member": pd.Series(dtype=np.int64),
        "name": pd.Categorical([]), "kind": pd.Categorical([]),
        "bin_lo": pd.Series(dtype=np.float64), "bin_hi": pd.Series(dtype=np.float64),
        "count": pd.Series(dtype=np.int64),
    })
