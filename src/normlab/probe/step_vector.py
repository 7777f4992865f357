"""One flat device vector per recorded step, holding everything that is reduced at that step.

Where each tensor sits in it is ``layout.StepLayout``'s to say (update Δp, running value, running Δ,
gradients, weights before the step, then the kept module outputs). One call of ``segment_moments``
reduces every segment of every region at once, and the histogram tier bins the contiguous suffix
``grad | weight | outputs`` with one ``bincount``: the kernel count per step is fixed, whatever the
number of parameters and modules.

A *lean* layout (for models whose step vectors are too large to be deferred in a ring, which are then
reduced at every recorded step anyway) stores no update: right after the step the update's moments are
computed tensor by tensor from the parameters and the weights captured before the step
(``capture_update``), so the probe holds two flat copies of the parameters, not three; the weights'
and gradients' moments are taken where they are captured (``capture_weights``/``capture_grads``,
``tensorwise.py``), and a gradient is copied into the vector only on a histogram step. Large vectors
are reduced with a ``ReductionPlan`` and binned with a ``SegmentBinning``, which keep no per-element
segment ids: memory beyond the vector is bounded by the largest tensor. ``ReductionPolicy`` decides
which vectors are large.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from normlab.probe.histograms import SegmentBinning, SymLogBins
from normlab.probe.layout import N_MOMENTS, OutputsLayout, StepLayout
from normlab.probe.moments import ReductionPlan, Scratch, SegmentLayout, _rows_moments, segment_moments
from normlab.probe.policy import DEFAULT_POLICY, ReductionPolicy
from normlab.probe.tensorwise import TensorwiseMoments


class _OutputsReduction:
    """What reducing a step vector with one set of kept outputs needs on the device, beside its
    ``OutputsLayout``; the per-element arrays (segment ids, histogram offsets: 8 bytes per element) are
    built only when a path that reads them asks."""

    def __init__(self, vector: StepVector, outputs: OutputsLayout):
        self._vector = vector
        self.layout = outputs
        self.outputs = SegmentLayout(outputs.shapes, vector.members, vector.device)
        self.rows = torch.as_tensor(outputs.rows, device=vector.device)
        step = vector.layout
        self.plan = None
        if step.lean:  # the parameter regions are reduced at capture (tensorwise.py): the plan is the outputs'
            self.plan = ReductionPlan(outputs.lengths, vector.members, vector.device, vector.dtype,
                                      policy=vector.policy)
        elif vector.policy.splits(outputs.length):
            self.plan = ReductionPlan(step.stored_lengths + outputs.lengths, vector.members, vector.device,
                                      vector.dtype, zeros_from=len(step.stored_lengths), policy=vector.policy)
        if self.plan is not None:
            self.plan.scratch = vector._centered  # one buffer for the centered values of every large tensor
        self._segment = self._counts = self._offsets = self._binning = None

    @property
    def segment(self) -> torch.Tensor:
        if self._segment is None:
            vector = self._vector
            self._segment = torch.cat([vector._fixed_segment, self.outputs.segment + vector.layout.fixed_segments])
        return self._segment

    @property
    def counts(self) -> torch.Tensor:
        if self._counts is None:
            self._counts = torch.as_tensor(self.layout.segment_lengths, device=self._vector.device,
                                           dtype=self._vector.dtype)
        return self._counts

    @property
    def offsets(self) -> torch.Tensor | None:
        """Bin-slot offset of every binned element: histogram segments are the binned regions' (grad,
        weight), then the outputs'."""
        vector = self._vector
        if self._offsets is None and vector.binning is not None:
            step = vector.layout
            first = step.fixed_segments - step.histogram_param_segments
            self._offsets = (self.segment[step.histogram_start :] - first) * (vector.binning.bins + 1)
        return self._offsets

    @property
    def segment_binning(self) -> SegmentBinning:
        if self._binning is None:
            vector = self._vector
            first = vector.layout.fixed_segments - vector.layout.histogram_param_segments
            self._binning = SegmentBinning(vector.binning, self.layout.segment_lengths[first:], vector.device,
                                           vector.policy.long_segment_elements)
        return self._binning


class StepVector:
    """The device vector laid out by ``layout`` (a ``StepLayout``), its region views, and the cached
    reductions for each set of kept output shapes.

    ``activation_capacity``: room allocated up front for kept outputs (growing the vector later copies
    it, twice the vector's memory for a moment). A lean layout has no update region (see the module
    docstring).
    """

    def __init__(self, layout: StepLayout, device: torch.device, dtype: torch.dtype,
                 binning: SymLogBins | None, *, activation_capacity: int = 0,
                 policy: ReductionPolicy = DEFAULT_POLICY):
        self.layout, self.binning = layout, binning
        self.device, self.dtype, self.lean, self.policy = device, dtype, layout.lean, policy
        self.members = layout.members
        self.fixed_total, self.fixed_segments = layout.fixed_total, layout.fixed_segments
        self._region_segments = {name: SegmentLayout([(n,) for n in region.tensor_lengths], self.members, device)
                                 for name, region in layout.regions.items()}
        self._vector = torch.empty(self.fixed_total + activation_capacity, device=device, dtype=dtype)
        self._vector[: self.fixed_total].zero_()  # the tail is written before it is read (pages left untouched)
        self._fixed_segment_ids: torch.Tensor | None = None
        self._staged: torch.Tensor | None = None  # where the fixed regions are written, if not in _vector
        self._reductions: dict[OutputsLayout, _OutputsReduction] = {}
        self._regions: dict[str, torch.Tensor] = {}
        self._centered = Scratch()
        if self.lean:
            params = list(layout.regions["weight"].tensor_lengths)
            self._grads = TensorwiseMoments(params, self.members, device, dtype, policy)
            self._weights = TensorwiseMoments(params, self.members, device, dtype, policy)
            running = [n for name in ("running_value", "running_delta") for n in layout.regions[name].tensor_lengths]
            self._running_plan = ReductionPlan(running, self.members, device, dtype, zeros_from=len(running),
                                               policy=policy)
            self._running_plan.scratch = self._centered
            update = layout.regions["update"]
            lengths = list(update.tensor_lengths)
            self._update_plan = ReductionPlan(lengths, self.members, device, dtype, zeros_from=len(lengths),
                                              policy=policy)
            self._update_starts = dict(zip(np.cumsum([0, *lengths[:-1]]).tolist(),
                                           range(len(lengths)), strict=True)) if lengths else {}
            self._update_scratch: torch.Tensor | None = None
            self._update_moments = torch.full((N_MOMENTS, update.n_segments), float("nan"), device=device,
                                              dtype=dtype)

    @property
    def _fixed_segment(self) -> torch.Tensor:
        """Segment id of every element of the fixed regions (the segment path only: small vectors)."""
        if self._fixed_segment_ids is None:
            self._fixed_segment_ids = torch.cat([
                self._region_segments[name].segment + region.segments.start
                for name, region in self.layout.regions.items()])
        return self._fixed_segment_ids

    def region(self, name: str) -> torch.Tensor:
        view = self._regions.get(name)
        if view is None:  # views are cached until the vector grows or is staged elsewhere
            view = self._regions[name] = self.fixed()[self.layout.regions[name].elements]
        return view

    def capture_weights(self, params: Sequence[torch.Tensor]) -> None:
        """Lean vector: copy ``params`` into the weight region (the update is computed from it) and take
        their moments, tensor by tensor (``tensorwise.py``)."""
        self._weights.capture(params, self.region("weight"), copy=True)

    def capture_grads(self, grads: Sequence[torch.Tensor], *, binned: bool) -> None:
        """Lean vector: the moments of ``grads``, tensor by tensor; copied into the grad region only if
        the step is ``binned`` (a histogram step: the binning reads the region)."""
        self._grads.capture(grads, self.region("grad"), copy=binned)

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
                pieces.append(_rows_moments(delta.view(self.members, -1), zeros=False, scratch=self._centered,
                                            absmax=False).t())
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

    def _reduction(self, kept: dict[int, torch.Tensor]) -> _OutputsReduction:
        slots = tuple(sorted(kept))
        outputs = self.layout.outputs(slots, tuple(kept[slot].shape for slot in slots))
        reduction = self._reductions.get(outputs)
        if reduction is None:
            reduction = self._reductions[outputs] = _OutputsReduction(self, outputs)
        return reduction

    def fixed(self) -> torch.Tensor:
        """The fixed regions ``update | running value | running Δ | grad | weight``, as one flat view."""
        return self._staged if self._staged is not None else self._vector[: self.fixed_total]

    def outputs(self, kept: dict[int, torch.Tensor]) -> tuple[OutputsLayout, torch.Tensor, torch.Tensor | None]:
        """The ``OutputsLayout`` of the step vector holding ``kept`` (slot -> tensor), its output rows and
        its histogram offsets on the device (cached per set of slots and shapes)."""
        reduction = self._reduction(kept)
        return reduction.layout, reduction.rows, reduction.offsets

    def reduce(self, kept: dict[int, torch.Tensor], histograms: bool
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Reduce every region plus the ``kept`` activations (slot -> tensor).

        Returns the fixed regions' moments ``(4, fixed_segments)``, the activations' moments
        ``(activation segments, 4)`` with their staging rows, and, if ``histograms``, the counts
        ``(2 * param segments + activation segments, bins)``.
        """
        tensors = [kept[slot] for slot in sorted(kept)]
        layout = self._reduction(kept)
        live = layout.layout.length
        self.unstage()
        self._reserve(live)
        vector = self._vector[:live]
        if tensors:
            torch.cat([t.reshape(-1) for t in tensors], out=vector[self.fixed_total :])
        if self.lean:  # (4, S): the parameter regions were reduced at capture
            grad = self.layout.regions["grad"]
            moments = torch.cat([self._update_moments, self._running_plan.moments(vector[: grad.start]),
                                 self._grads.moments, self._weights.moments,
                                 layout.plan.moments(vector[self.fixed_total :])], dim=1)
        elif layout.plan is not None:
            moments = layout.plan.moments(vector)
        else:
            moments = segment_moments(vector, layout.segment, layout.counts)
        fixed = moments[:, : self.fixed_segments]
        activations = moments[:, self.fixed_segments :].t()
        histogram = None
        if histograms:
            if layout.plan is not None:
                histogram = layout.segment_binning.counts(vector[self.layout.histogram_start :])
            else:
                histogram = self.binning.segment_counts(vector[self.layout.histogram_start :], layout.offsets,
                                                        layout.layout.histogram_segments)
        return fixed, activations, layout.rows, histogram
