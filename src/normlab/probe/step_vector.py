"""One flat device vector per recorded step, holding everything that is reduced at that step.

Layout (``T_p`` parameter elements, ``T_r`` running-stat elements, ``T_a`` kept activation elements)::

    | update Δp | running value | running Δ | grad | weight (before the step) | kept activations |
      T_p         T_r             T_r         T_p    T_p                        T_a (varies)

One call of ``segment_moments`` reduces every segment of every region at once, and the histogram
tier bins the contiguous suffix ``grad | weight | activations`` with one ``bincount``. Kernel count per
step is therefore fixed, whatever the number of parameters and modules.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from normlab.probe.histograms import SymLogBins
from normlab.probe.stats import ReductionPlan, SegmentLayout, segment_moments

SPLIT_ABOVE_ELEMENTS = 1 << 17  # larger step vectors follow a ReductionPlan (large tensors one by one)


class StepVector:
    """Regions of the flat vector, and the cached segment ids for each set of kept activation shapes."""

    def __init__(self, params: SegmentLayout, running: SegmentLayout, device: torch.device, dtype: torch.dtype,
                 binning: SymLogBins | None):
        self.params, self.running, self.binning = params, running, binning
        self.device, self.dtype = device, dtype
        tp, tr, sp, sr = params.total, running.total, params.n_segments, running.n_segments
        starts = np.cumsum([0, tp, tr, tr, tp, tp])
        self._slices = dict(zip(("update", "running_value", "running_delta", "grad", "weight"),
                                (slice(a, b) for a, b in itertools.pairwise(starts)), strict=True))
        self.fixed_total = int(starts[-1])
        self.histogram_start = self._slices["grad"].start
        segment_starts = np.cumsum([0, sp, sr, sr, sp])
        self._fixed_segment = torch.cat([
            layout.segment + int(first)
            for layout, first in zip((params, running, running, params, params), segment_starts, strict=True)
        ])
        self._fixed_counts = np.concatenate([params.counts, running.counts, running.counts, params.counts,
                                             params.counts])
        self.fixed_segments = len(self._fixed_counts)
        self.histogram_param_segments = 2 * sp
        self.members = params.members
        self._fixed_lengths = [*params.lengths, *running.lengths, *running.lengths, *params.lengths, *params.lengths]
        self._vector = torch.zeros(self.fixed_total, device=device, dtype=dtype)
        self._staged: torch.Tensor | None = None  # where the fixed regions are written, if not in _vector
        self._keys: dict[tuple, tuple] = {}
        self._regions: dict[str, torch.Tensor] = {}

    def region(self, name: str) -> torch.Tensor:
        view = self._regions.get(name)
        if view is None:  # views are cached until the vector grows or is staged elsewhere
            view = self._regions[name] = self.fixed()[self._slices[name]]
        return view

    def stage(self, target: torch.Tensor | None) -> None:
        """Write this step's fixed regions into ``target`` (``fixed_total`` values, e.g. the next row of a
        ring: the step then needs no copy into it) instead of the own vector; ``None``: the own vector."""
        if target is not None and target.shape != (self.fixed_total,):
            raise ValueError(f"StepVector.stage: expected ({self.fixed_total},), got {tuple(target.shape)}")
        if target is not self._staged:
            self._staged = target
            self._regions = {}

    @property
    def staged(self) -> torch.Tensor | None:
        return self._staged

    def unstage(self) -> None:
        """Copy the staged fixed regions back into the own vector (before :meth:`reduce`)."""
        if self._staged is not None:
            self._vector[: self.fixed_total].copy_(self._staged)
            self.stage(None)

    def _reserve(self, total: int) -> None:
        if self._vector.numel() < total:  # grow, keeping the regions captured before the step
            grown = torch.zeros(max(total, 2 * self._vector.numel()), device=self.device, dtype=self.dtype)
            grown[: self.fixed_total] = self._vector[: self.fixed_total]
            self._vector = grown
            self._regions = {}

    def _activation_key(self, slots: tuple[int, ...], shapes: tuple, members: int) -> tuple:
        key = (slots, shapes)
        cached = self._keys.get(key)
        if cached is None:
            layout = SegmentLayout(shapes, members, self.device)
            segment = torch.cat([self._fixed_segment, layout.segment + self.fixed_segments])
            counts = np.concatenate([self._fixed_counts, layout.counts])
            counts = torch.as_tensor(counts, device=self.device, dtype=self.dtype)
            rows = torch.tensor([slot * members + m for slot in slots for m in range(members)],
                                device=self.device, dtype=torch.int64)
            offsets = None
            if self.binning is not None:
                # histogram segments: grad (sp), weight (sp), then the activation segments
                offsets = (segment[self.histogram_start :] - (self.fixed_segments - self.histogram_param_segments))
                offsets = offsets * (self.binning.bins + 1)
            plan = None
            if self.fixed_total + layout.total > SPLIT_ABOVE_ELEMENTS:
                plan = ReductionPlan(self._fixed_lengths + layout.lengths, members, self.device, self.dtype,
                                     zeros_from=len(self._fixed_lengths))
            segment_lengths = np.concatenate([self._fixed_counts, layout.counts])
            cached = self._keys[key] = (layout.total, segment, counts, rows, offsets, layout.n_segments, plan,
                                        segment_lengths)
        return cached

    def fixed(self) -> torch.Tensor:
        """The fixed regions ``update | running value | running Δ | grad | weight``, as one flat view."""
        return self._staged if self._staged is not None else self._vector[: self.fixed_total]

    def layout(self, kept: dict[int, torch.Tensor], members: int) -> tuple:
        """``(activation elements, staging rows, histogram offsets, activation segments, segment lengths)``
        of the step vector holding ``kept`` (cached per set of slots and shapes)."""
        slots = tuple(sorted(kept))
        total, _, _, rows, offsets, n_act, _, lengths = self._activation_key(
            slots, tuple(kept[slot].shape for slot in slots), members)
        return total, rows, offsets, n_act, lengths

    def reduce(self, kept: dict[int, torch.Tensor], members: int, histograms: bool
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Reduce every region plus the ``kept`` activations (slot -> tensor).

        Returns the fixed regions' moments ``(4, fixed_segments)``, the activations' moments
        ``(activation segments, 4)`` with their staging rows, and, if ``histograms``, the counts
        ``(2 * param segments + activation segments, bins)``.
        """
        slots = tuple(sorted(kept))
        tensors = [kept[slot] for slot in slots]
        total, segment, counts, rows, offsets, n_act, plan, _ = self._activation_key(
            slots, tuple(t.shape for t in tensors), members)
        live = self.fixed_total + total
        self.unstage()
        self._reserve(live)
        vector = self._vector[:live]
        if tensors:
            torch.cat([t.reshape(-1) for t in tensors], out=vector[self.fixed_total :])
        if plan is not None:
            moments = plan.moments(vector)  # (4, S)
        else:
            moments = segment_moments(vector, segment, counts)
        fixed = moments[:, : self.fixed_segments]
        activations = moments[:, self.fixed_segments :].t()
        histogram = None
        if histograms:
            n_segments = self.histogram_param_segments + n_act
            histogram = self.binning.segment_counts(vector[self.histogram_start :], offsets, n_segments)
        return fixed, activations, rows, histogram
