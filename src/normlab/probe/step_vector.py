"""One flat device vector per recorded step, holding everything that is reduced at that step.

Layout (``T_p`` parameter elements, ``T_r`` running-stat elements, ``T_a`` kept activation elements)::

    | update Δp | running value | running Δ | grad | weight (before the step) | kept activations |
      T_p         T_r             T_r         T_p    T_p                        T_a (varies)

One call of ``segment_moments`` reduces every segment of every region at once, and the histogram
tier bins the contiguous suffix ``grad | weight | activations`` with one ``bincount``. Kernel count per
step is therefore fixed, whatever the number of parameters and modules.

A *lean* vector (``lean=True``: for models whose step vectors are too large to be deferred in a ring,
which are then reduced at every recorded step anyway) has no update region: right after the step the
update's moments are computed tensor by tensor from the parameters and the weights captured before the
step (``capture_update``), so the probe holds two flat copies of the parameters, not three. Large
vectors are reduced with a ``ReductionPlan`` and binned with a ``SegmentBinning``, which keep no
per-element segment ids: memory beyond the vector is bounded by the largest tensor.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

from normlab.probe.histograms import SegmentBinning, SymLogBins
from normlab.probe.moments import ReductionPlan, Scratch, SegmentLayout, _rows_moments, segment_moments
from normlab.probe.policy import DEFAULT_POLICY, ReductionPolicy


class _ActivationLayout:
    """What reducing a step vector with one set of kept outputs needs; the per-element arrays (segment ids,
    histogram offsets: 8 bytes per element) are built only when a path that reads them asks."""

    def __init__(self, vector: StepVector, slots: tuple[int, ...], shapes: tuple, members: int):
        self._vector = vector
        self.outputs = layout = SegmentLayout(shapes, members, vector.device)
        self.total, self.n_act = layout.total, layout.n_segments
        self.rows = torch.tensor([slot * members + m for slot in slots for m in range(members)],
                                 device=vector.device, dtype=torch.int64)
        self.segment_lengths = np.concatenate([vector._fixed_counts, layout.counts])
        self.plan = None
        if vector.lean or vector.policy.splits(vector.fixed_total + layout.total):
            self.plan = ReductionPlan(vector._stored_lengths + layout.lengths, members, vector.device, vector.dtype,
                                      zeros_from=len(vector._stored_lengths), policy=vector.policy)
            self.plan.scratch = vector._centered  # one buffer for the centered values of every large tensor
        self._segment = self._counts = self._offsets = self._binning = None

    @property
    def segment(self) -> torch.Tensor:
        if self._segment is None:
            self._segment = torch.cat([self._vector._fixed_segment, self.outputs.segment + self._vector.fixed_segments])
        return self._segment

    @property
    def counts(self) -> torch.Tensor:
        if self._counts is None:
            self._counts = torch.as_tensor(self.segment_lengths, device=self._vector.device, dtype=self._vector.dtype)
        return self._counts

    @property
    def offsets(self) -> torch.Tensor | None:
        """Bin-slot offset of every binned element: histogram segments are grad (sp), weight (sp), then the
        activation segments."""
        vector = self._vector
        if self._offsets is None and vector.binning is not None:
            first = vector.fixed_segments - vector.histogram_param_segments
            self._offsets = (self.segment[vector.histogram_start :] - first) * (vector.binning.bins + 1)
        return self._offsets

    @property
    def segment_binning(self) -> SegmentBinning:
        if self._binning is None:
            vector = self._vector
            first = vector.fixed_segments - vector.histogram_param_segments
            self._binning = SegmentBinning(vector.binning, self.segment_lengths[first:], vector.device,
                                           vector.policy.long_segment_elements)
        return self._binning


class StepVector:
    """Regions of the flat vector, and the cached layouts for each set of kept activation shapes.

    ``activation_capacity``: room allocated up front for kept outputs (growing the vector later copies
    it, twice the vector's memory for a moment); ``lean``: no update region (see the module docstring).
    """

    def __init__(self, params: SegmentLayout, running: SegmentLayout, device: torch.device, dtype: torch.dtype,
                 binning: SymLogBins | None, *, activation_capacity: int = 0, lean: bool = False,
                 policy: ReductionPolicy = DEFAULT_POLICY):
        self.params, self.running, self.binning = params, running, binning
        self.device, self.dtype, self.lean, self.policy = device, dtype, lean, policy
        tp, tr, sp = params.total, running.total, params.n_segments
        starts = np.cumsum([0, 0 if lean else tp, tr, tr, tp, tp])
        self._slices = dict(zip(("update", "running_value", "running_delta", "grad", "weight"),
                                (slice(a, b) for a, b in itertools.pairwise(starts)), strict=True))
        self.fixed_total = int(starts[-1])
        self.histogram_start = self._slices["grad"].start
        self._region_layouts = (params, running, running, params, params)
        self._fixed_counts = np.concatenate([layout.counts for layout in self._region_layouts])
        self.fixed_segments = len(self._fixed_counts)
        self.histogram_param_segments = 2 * sp
        self.members = params.members
        self._fixed_lengths = [n for layout in self._region_layouts for n in layout.lengths]
        self._stored_lengths = self._fixed_lengths[len(params.lengths) :] if lean else self._fixed_lengths
        self._vector = torch.empty(self.fixed_total + activation_capacity, device=device, dtype=dtype)
        self._vector[: self.fixed_total].zero_()  # the tail is written before it is read (pages left untouched)
        self._fixed_segment_ids: torch.Tensor | None = None
        self._staged: torch.Tensor | None = None  # where the fixed regions are written, if not in _vector
        self._keys: dict[tuple, _ActivationLayout] = {}
        self._regions: dict[str, torch.Tensor] = {}
        self._centered = Scratch()
        if lean:
            self._update_plan = ReductionPlan(params.lengths, self.members, device, dtype,
                                              zeros_from=len(params.lengths), policy=policy)
            self._update_starts = dict(zip(np.cumsum([0, *params.lengths[:-1]]).tolist(),
                                           range(len(params.lengths)), strict=True)) if params.lengths else {}
            self._update_scratch: torch.Tensor | None = None
            self._update_moments = torch.full((4, sp), float("nan"), device=device, dtype=dtype)

    @property
    def _fixed_segment(self) -> torch.Tensor:
        """Segment id of every element of the fixed regions (the segment path only: small vectors)."""
        if self._fixed_segment_ids is None:
            first = np.cumsum([0, *(layout.n_segments for layout in self._region_layouts)])
            self._fixed_segment_ids = torch.cat([
                layout.segment + int(start) for layout, start in zip(self._region_layouts, first, strict=False)])
        return self._fixed_segment_ids

    def region(self, name: str) -> torch.Tensor:
        view = self._regions.get(name)
        if view is None:  # views are cached until the vector grows or is staged elsewhere
            view = self._regions[name] = self.fixed()[self._slices[name]]
        return view

    def capture_update(self, params: Sequence[torch.Tensor]) -> None:
        """Lean vector: the update's moments (mean, var, absmax; zero fraction 0), now, from ``params``
        after the step minus the weight region, a run of short tensors or one large tensor at a time."""
        weight = self.region("weight")
        pieces = []
        for step in self._update_plan.steps:
            if step[0] == "run":
                _, begin, end, segment, counts = step
                delta = self._delta(params, weight, begin, end)
                pieces.append(segment_moments(delta, segment, counts))
                continue
            _, begin, end, length, _ = step
            for start in range(begin, end, length):
                delta = self._delta(params, weight, start, start + length)
                pieces.append(_rows_moments(delta.view(self.members, -1), zeros=False, scratch=self._centered).t())
        if pieces:
            torch.cat(pieces, dim=1, out=self._update_moments)

    def _delta(self, params: Sequence[torch.Tensor], weight: torch.Tensor, begin: int, end: int) -> torch.Tensor:
        """``flatten(params)[begin:end] - weight[begin:end]`` in a reused buffer (``begin``, ``end``: tensor
        boundaries)."""
        if self._update_scratch is None or self._update_scratch.numel() < end - begin:
            self._update_scratch = torch.empty(end - begin, device=self.device, dtype=self.dtype)
        delta = self._update_scratch[: end - begin]
        start, index = begin, self._update_starts[begin]
        while start < end:
            p = params[index]
            n = p.numel()
            torch.sub(p, weight[start : start + n].view(p.shape), out=delta[start - begin : start - begin + n].view(p.shape))
            start, index = start + n, index + 1
        return delta

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

    def _activation_key(self, slots: tuple[int, ...], shapes: tuple, members: int) -> _ActivationLayout:
        key = (slots, shapes)
        cached = self._keys.get(key)
        if cached is None:
            cached = self._keys[key] = _ActivationLayout(self, slots, shapes, members)
        return cached

    def fixed(self) -> torch.Tensor:
        """The fixed regions ``update | running value | running Δ | grad | weight``, as one flat view."""
        return self._staged if self._staged is not None else self._vector[: self.fixed_total]

    def layout(self, kept: dict[int, torch.Tensor], members: int) -> tuple:
        """``(activation elements, staging rows, histogram offsets, activation segments, segment lengths)``
        of the step vector holding ``kept`` (cached per set of slots and shapes)."""
        slots = tuple(sorted(kept))
        layout = self._activation_key(slots, tuple(kept[slot].shape for slot in slots), members)
        return layout.total, layout.rows, layout.offsets, layout.n_act, layout.segment_lengths

    def reduce(self, kept: dict[int, torch.Tensor], members: int, histograms: bool
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Reduce every region plus the ``kept`` activations (slot -> tensor).

        Returns the fixed regions' moments ``(4, fixed_segments)``, the activations' moments
        ``(activation segments, 4)`` with their staging rows, and, if ``histograms``, the counts
        ``(2 * param segments + activation segments, bins)``.
        """
        slots = tuple(sorted(kept))
        tensors = [kept[slot] for slot in slots]
        layout = self._activation_key(slots, tuple(t.shape for t in tensors), members)
        live = self.fixed_total + layout.total
        self.unstage()
        self._reserve(live)
        vector = self._vector[:live]
        if tensors:
            torch.cat([t.reshape(-1) for t in tensors], out=vector[self.fixed_total :])
        if layout.plan is not None:
            moments = layout.plan.moments(vector)  # (4, S), without the update's segments if lean
            if self.lean:
                moments = torch.cat([self._update_moments, moments], dim=1)
        else:
            moments = segment_moments(vector, layout.segment, layout.counts)
        fixed = moments[:, : self.fixed_segments]
        activations = moments[:, self.fixed_segments :].t()
        histogram = None
        if histograms:
            if layout.plan is not None:
                histogram = layout.segment_binning.counts(vector[self.histogram_start :])
            else:
                n_segments = self.histogram_param_segments + layout.n_act
                histogram = self.binning.segment_counts(vector[self.histogram_start :], layout.offsets, n_segments)
        return fixed, activations, layout.rows, histogram
