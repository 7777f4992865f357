"""Deferred reduction: keep the raw step vectors of K recorded steps, reduce them all at once.

For a small model the probe's cost is not arithmetic but kernel launches and Python: reducing one step
vector of a few thousand elements takes a couple of dozen kernels, each as long as a whole small layer.
So when K step vectors fit in a modest memory budget, a recorded step only copies its step vector
(``step_vector.StepVector``, same ``layout.StepLayout``) into row ``k`` of a preallocated ``(K, L)`` ring -- one kernel --
and every K rows the ring is reduced with a fixed handful of kernels for all K steps together:

* the short segments (one per tensor and ensemble member) are grouped by their length ``n`` (and what is
  wanted of them) with one column gather, element-major: each group is a ``(K, n, G)`` view reduced along
  its middle axis, so every kernel streams over ``G`` contiguous segments at once (torch's CPU reductions
  along a short last axis cost several times more per value than along a long one); the number of groups is the number of distinct tensor sizes, not the number of tensors.
  Long segments are reduced in place along their last axis, consecutive equal-length ones as one block
  ``(K, G, n)``;
* histograms of all histogram rows come from one binning pass (``SymLogBins.bucket``) and one ``bincount``
  (row offsets).

The moments are the same two-pass ones as the per-step path (equal up to float rounding of the sums,
tested); the histograms are identical (same values, same edges).
"""

from __future__ import annotations

import numpy as np
import torch

from normlab.probe.histograms import SymLogBins
from normlab.probe.layout import OutputsLayout, StepLayout
from normlab.probe.policy import DEFAULT_POLICY, ReductionPolicy


class GroupedSegments:
    """How to reduce rows made of segments of ``lengths`` elements (segment order = layout order).

    Short segments are gathered (one ``index_select`` of their columns) into groups of equal length;
    long segments, and runs of consecutive equal-length segments that are long in total (the members of
    one ensemble tensor), are reduced in place as blocks, so the gather never copies the bulk of a model.
    ``needs[i]``: what segment ``i`` wants besides mean and variance: ``0`` nothing (an update or running
    statistic: its absmax is never read, NaN), ``1`` its absmax (gradients, weights), ``2`` its absmax and
    zero fraction (module outputs; the others report a zero fraction of 0). Skipping the extremes of the
    update saves two of the six passes over a third of the step vector.
    """

    def __init__(self, lengths: np.ndarray, needs: np.ndarray, device: torch.device,
                 policy: ReductionPolicy = DEFAULT_POLICY):
        lengths = np.asarray(lengths, dtype=np.int64)
        needs = np.asarray(needs, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        # Runs of consecutive segments of one length (e.g. the members of one tensor) that are long in
        # total are reduced in place; the rest is gathered into groups of equal length.
        run_id = np.concatenate([[0], np.cumsum((lengths[1:] != lengths[:-1]) | (needs[1:] != needs[:-1]))])
        run_total = np.bincount(run_id, weights=lengths)[run_id] if len(lengths) else lengths
        short = (lengths <= policy.gather_max_elements) & (run_total < policy.in_place_min_elements)
        columns, order = [], []
        self.groups: list[tuple[bool, int, int, int, int]] = []  # (gathered, start, count, n, needs)
        column = 0
        for n, need in sorted(set(zip(lengths[short].tolist(), needs[short].tolist(), strict=True))):
            members = np.flatnonzero(short & (lengths == n) & (needs == need))
            order.append(members)
            columns.append((starts[members][None, :] + np.arange(n)[:, None]).reshape(-1))  # (n, G): element-major
            self.groups.append((True, column, len(members), n, need))
            column += len(members) * n
        for index in np.flatnonzero(~short):  # in place: extend the previous block or open one
            n, need = int(lengths[index]), int(needs[index])
            last = self.groups[-1] if self.groups else None
            if (last is not None and not last[0] and last[3] == n and last[4] == need
                    and last[1] + last[2] * n == starts[index]):
                self.groups[-1] = (False, last[1], last[2] + 1, n, need)
            else:
                self.groups.append((False, int(starts[index]), 1, n, need))
            order.append(np.array([index]))
        order = np.concatenate(order) if order else np.zeros(0, np.int64)
        gather = np.concatenate(columns) if columns else np.zeros(0, np.int64)
        self.gather = torch.as_tensor(gather, device=device) if len(gather) else None
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        self.inverse = torch.as_tensor(inverse, device=device)  # grouped position of each segment
        self.identity = bool(np.array_equal(inverse, np.arange(len(inverse))))
        self._buffer: torch.Tensor | None = None

    def _scratch(self, block: torch.Tensor) -> torch.Tensor:
        """A reused buffer shaped like ``block``: a fresh multi-megabyte temporary per reduction costs more
        in page faults than the arithmetic it holds."""
        size = block.numel()
        if self._buffer is None or self._buffer.numel() < size or self._buffer.dtype != block.dtype:
            self._buffer = torch.empty(size, device=block.device, dtype=block.dtype)
        return self._buffer[:size].view(block.shape)

    def moments(self, rows: torch.Tensor) -> torch.Tensor:
        """Raw moments ``(K, 4, S)`` (mean, var, absmax, zero fraction) of every segment of ``rows`` ``(K, L)``."""
        k = rows.shape[0]
        gathered = rows.index_select(1, self.gather) if self.gather is not None else None
        pieces = []
        for is_gathered, start, count, n, need in self.groups:
            if n == 0:
                pieces.append(rows.new_full((k, 4, count), float("nan")))
                continue
            if is_gathered:  # (K, n, G): reduce the middle axis
                block, axis = gathered[:, start : start + count * n].view(k, n, count), 1
            else:  # (K, G, n): reduce the last axis
                block, axis = rows[:, start : start + count * n].view(k, count, n), 2
            mean = block.mean(dim=axis)
            centered = self._scratch(block)
            torch.sub(block, mean.unsqueeze(axis), out=centered)
            if axis == 2:
                var = torch.linalg.vector_norm(centered, dim=2).square_().div_(n)
            else:  # vector_norm along a middle axis is the slow path; squares and a sum are not
                var = centered.square_().sum(dim=1).div_(n)
            if need >= 1:
                absmax = torch.maximum(block.amax(dim=axis), block.amin(dim=axis).neg_())
            else:
                absmax = torch.full_like(mean, float("nan"))
            if need >= 2:  # 0/1 floats summed: a streaming sum, faster than count_nonzero; exact below 2^24
                zero_frac = 1 - torch.ne(block, 0, out=centered).sum(dim=axis).div_(n)
            else:
                zero_frac = torch.zeros_like(mean)
            pieces.append(torch.stack((mean, var, absmax, zero_frac), dim=1))
        moments = torch.cat(pieces, dim=2)
        return moments if self.identity else moments.index_select(2, self.inverse)


class StepRing:
    """Up to ``capacity`` step vectors of one layout (one set of kept module outputs), reduced together.

    Args:
        capacity: rows (recorded steps) held before :meth:`reduce` must run.
        layout: the probe's ``StepLayout``; ``outputs``: the ``OutputsLayout`` of the kept outputs.
        histogram_offsets: bin-slot offset of every binned element (``StepVector.outputs``).
        act_rows: output segment (``slot * members + member``) of every kept-output segment, in order.
    """

    def __init__(self, capacity: int, layout: StepLayout, outputs: OutputsLayout, device: torch.device,
                 dtype: torch.dtype, binning: SymLogBins | None, histogram_offsets: torch.Tensor | None,
                 act_rows: torch.Tensor, policy: ReductionPolicy = DEFAULT_POLICY):
        self.capacity, self.length, self.fixed_segments = capacity, outputs.length, layout.fixed_segments
        self.rows = torch.empty((capacity, outputs.length), device=device, dtype=dtype)
        self.segments = GroupedSegments(outputs.segment_lengths, outputs.needs, device, policy)
        self.binning = binning
        self.histogram_start, self.histogram_offsets = layout.histogram_start, histogram_offsets
        self.histogram_segments = outputs.histogram_segments
        self.act_rows = act_rows
        self.filled = 0
        self.histogram_rows: list[int] = []

    @property
    def full(self) -> bool:
        return self.filled == self.capacity

    def next_row(self) -> torch.Tensor:
        """The row the next :meth:`append` fills (a step can write its fixed regions there directly)."""
        return self.rows[self.filled]

    def append(self, pieces: list[torch.Tensor], histogram: bool, start: int = 0) -> None:
        """Copy one step vector (given as flat pieces laid end to end) into the next row: one kernel.
        ``start``: the first ``start`` values of the row are already written (staged there)."""
        if histogram:
            self.histogram_rows.append(self.filled)
        if pieces:
            torch.cat(pieces, out=self.rows[self.filled, start:])
        self.filled += 1

    def reduce(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Moments ``(K, 4, S)`` of the filled rows, and counts ``(H, histogram_segments, bins)`` of the
        histogram rows (None if there are none); empties the ring."""
        rows = self.rows[: self.filled]
        moments = self.segments.moments(rows)
        counts = None
        if self.histogram_rows and self.binning is not None:
            picked = rows[self.histogram_rows] if len(self.histogram_rows) < self.filled else rows
            counts = self.binning.rows_counts(picked[:, self.histogram_start :], self.histogram_offsets,
                                              self.histogram_segments)
        self.filled = 0
        self.histogram_rows = []
        return moments, counts
