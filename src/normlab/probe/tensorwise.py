"""Lean step vectors: the moments of a parameter region, taken tensor by tensor where it is captured.

A lean step vector (``step_vector.py``: too large to defer, so reduced at every recorded step anyway)
gets the moments of its parameters and gradients here, at capture, instead of from the flat copy at the
end of the step. A weight matrix of up to a few MB stays in cache across the handful of streaming
kernels of ``moments._rows_moments`` when they run right after it was read, while the flat copy is read
back from memory for each of them after the optimizer has streamed its own state through the cache. A
gradient need not be copied at all, except on a histogram step, whose binning reads the flat region.

Small tensors are still laid end to end in the region and reduced as runs with the segment kernels
(``moments.ReductionPlan`` decides which are small); a tensor that is not contiguous, or not in the
vector's dtype, is copied into the region and reduced there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from normlab.probe.layout import N_MOMENTS
from normlab.probe.moments import ReductionPlan, Scratch, _rows_moments, segment_moments
from normlab.probe.policy import ReductionPolicy


class TensorwiseMoments:
    """Raw moments ``(4, segments)`` of one parameter region (tensors of ``lengths`` values, ``members``
    segments each), computed by :meth:`capture` from the tensors themselves; ``moments`` holds the last."""

    def __init__(self, lengths: Sequence[int], members: int, device: torch.device, dtype: torch.dtype,
                 policy: ReductionPolicy, *, absmax: bool = True):
        """``absmax``: whether the region's segments need their absmax (an update's is never read: NaN)."""
        self.members, self.dtype, self.absmax = members, dtype, absmax
        self.plan = ReductionPlan(lengths, members, device, dtype, zeros_from=len(lengths), policy=policy)
        self.moments = torch.full((N_MOMENTS, len(lengths) * members), float("nan"), device=device, dtype=dtype)
        self._scratch = Scratch()  # the centered values of one tensor at a time

    def capture(self, tensors: Sequence[torch.Tensor], region: torch.Tensor, *, copy: bool) -> None:
        """Reduce ``tensors`` (the region's, in order) into :attr:`moments`; with ``copy`` also lay them
        end to end in ``region`` (small tensors always are: they are reduced there)."""
        pieces = []
        for step, indices in zip(self.plan.steps, self.plan.tensors, strict=True):
            if step[0] == "run":
                _, begin, end, segment, counts = step
                run = region[begin:end]
                torch.cat([tensors[i].reshape(-1) for i in indices], out=run)
                pieces.append(segment_moments(run, segment, counts))
                continue
            _, begin, _, length, _ = step
            for start, i in zip(range(begin, begin + length * len(indices), length), indices, strict=True):
                tensor = tensors[i]
                direct = tensor.dtype == self.dtype and tensor.is_contiguous()
                if copy or not direct:
                    region[start : start + length].view(tensor.shape).copy_(tensor)
                rows = (tensor if direct else region[start : start + length]).view(self.members, -1)
                pieces.append(_rows_moments(rows, zeros=False, scratch=self._scratch, absmax=self.absmax).t())
        if pieces:
            torch.cat(pieces, dim=1, out=self.moments)
