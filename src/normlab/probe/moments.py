"""The device half of the probe's reductions: raw moments of segments, in few kernels and no host sync.

A *segment* is one tensor of one ensemble member (``layout.py``). Its raw moments are its mean,
population variance, absmax and fraction of zeros (``layout.MOMENTS``); everything the tables report is
derived from them on the host by the quantities (``quantities/``). Moments are two-pass (mean first, then
centered squares): the one-pass ``E[x²] - E[x]²`` loses all its digits in float32 when ``|mean| >> std``,
which is the normal case for a LayerNorm gain near 1. The row-wise kernels of large tensors take one pass
only where it is as accurate (``_one_pass_variance``: every row's mean within a standard deviation of 0,
checked on CPU).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from normlab.probe.policy import DEFAULT_POLICY, ReductionPolicy


def activation_moments(x: torch.Tensor, members: int) -> torch.Tensor:
    """Raw moments ``(members, 4)`` of one module output: mean, var, absmax, fraction of zeros.

    ``x`` has shape ``(members, ...)`` for an ensemble, any shape when ``members == 1``. A fixed handful
    of kernels, independent of the tensor's size, and no host sync. Used for large outputs; small ones are
    reduced all together at the step (``segment_moments``: same moments, fewer kernels).
    """
    flat = x.detach().reshape(members, -1)
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()  # half precision accumulates in float32
    return _rows_moments(flat)


class Scratch:
    """A reused buffer for a temporary as large as a tensor: allocating and freeing one per tensor and
    step interleaves large blocks with small ones in the C allocator's heap, which then holds freed
    memory it cannot give back (peak RSS then grows by up to a parameter copy)."""

    def __init__(self) -> None:
        self._buffer: torch.Tensor | None = None

    def like(self, x: torch.Tensor) -> torch.Tensor:
        """An uninitialized tensor of ``x``'s shape, dtype and device, valid until the next call."""
        size = x.numel()
        buffer = self._buffer
        if buffer is None or buffer.numel() < size or buffer.dtype != x.dtype or buffer.device != x.device:
            buffer = self._buffer = torch.empty(size, device=x.device, dtype=x.dtype)
        return buffer[:size].view(x.shape)


def _one_pass_variance(rows: torch.Tensor, mean: torch.Tensor) -> torch.Tensor | None:
    """``E[x²] - mean²`` per row, where that is as accurate as the two-pass variance; else ``None``.

    One pass reads the rows once and writes nothing, where the two-pass variance writes a centered copy and
    reads it back. Its rounding error is about ``eps * E[x²] = eps * (var + mean²)``: relative to the variance,
    ``eps * (1 + mean²/var)``, so with ``mean² <= var`` in every row it loses at most a factor 2 on the
    two-pass error (the weights and gradients of a layer's matrices: mean near 0). A row that fails it (a
    LayerNorm gain near 1, a constant row, NaN) sends every row to two passes. Only on CPU: the check
    is a host sync, free there, which the probe avoids on an accelerator.
    """
    if rows.device.type != "cpu":
        return None
    var = torch.linalg.vector_norm(rows, dim=1).square_().div_(rows.shape[1]).sub_(mean * mean)
    if bool((mean * mean <= var).all()):
        return var
    return None


def _rows_moments(rows: torch.Tensor, zeros: bool = True, scratch: Scratch | None = None,
                  absmax: bool = True) -> torch.Tensor:
    """Moments ``(R, 4)`` of each row of ``rows`` ``(R, n)``, with kernels that stream through memory.

    Kernel choice is for speed, not aesthetic: on CPU, ``var_mean``, ``vector_norm(inf)``, ``aminmax(dim=)``
    and ``count_nonzero(dim=)`` are slower than the plain streaming reductions used here
    (``benchmarks/probe.py`` times the probe). Without
    ``zeros`` the zero fraction is left at 0 (parameters and updates do not report it). ``scratch``: where
    the centered values go (else a temporary). Without ``absmax`` it is NaN (an update's is never read).
    """
    mean = rows.mean(dim=1)
    var = _one_pass_variance(rows, mean)
    centered = None
    if var is None:
        centered = torch.sub(rows, mean[:, None], out=scratch.like(rows)) if scratch is not None else rows - mean[:, None]
        var = torch.linalg.vector_norm(centered, dim=1).square_().div_(rows.shape[1])
    if absmax:
        extreme = torch.maximum(rows.amax(dim=1), rows.amin(dim=1).neg_())
    else:
        extreme = torch.full_like(mean, float("nan"))
    if not zeros:
        zero_frac = torch.zeros_like(mean)
    else:  # 0/1 floats summed: a streaming sum, faster than count_nonzero on CPU (exact below 2^24 per row)
        if scratch is not None:
            nonzero = torch.ne(rows, 0, out=centered if centered is not None else scratch.like(rows))
        else:
            nonzero = torch.ne(rows, 0).to(rows.dtype)
        zero_frac = 1 - nonzero.mean(dim=1)
    return torch.stack((mean, var, extreme, zero_frac), dim=1)


class SegmentLayout:
    """Tensors laid out one after another in a flat vector, cut into segments (one per tensor and
    ensemble member): segment ``i * members + m`` is member ``m`` of tensor ``i``. Tensors of an ensemble
    have shape ``(members, ...)``, so ``t.reshape(-1)`` lays the members out one after another.
    """

    def __init__(self, shapes: Sequence[torch.Size], members: int, device: torch.device):
        self.members = members
        numels = [int(np.prod(shape, dtype=np.int64)) for shape in shapes]
        self.lengths = numels  # elements of each tensor, in order
        self.counts = np.repeat(np.array(numels, dtype=np.int64) // members, members)  # (S,)
        self.n_segments = len(self.counts)
        self.total = int(sum(numels))
        self.device = device
        self._segment: torch.Tensor | None = None

    @property
    def segment(self) -> torch.Tensor:
        """``(T,)`` segment id of every flat element, built on first use: 8 bytes per element, so twice
        the parameters' own memory for a large model, which only ever reads it for short runs."""
        if self._segment is None:
            self._segment = torch.repeat_interleave(
                torch.arange(self.n_segments, device=self.device), torch.as_tensor(self.counts, device=self.device))
        return self._segment

    def flatten_into(self, tensors: Sequence[torch.Tensor], out: torch.Tensor) -> None:
        """Concatenate ``tensors`` (flattened) into the preallocated ``out`` (one kernel)."""
        torch.cat([t.detach().reshape(-1) for t in tensors], out=out)


def segment_moments(x: torch.Tensor, segment: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Raw moments ``(4, S)`` of every segment of the flat ``x``: mean, var, absmax, fraction of zeros.

    ``segment[i]`` is the segment of ``x[i]`` and ``counts`` the size of each segment (in ``x``'s dtype).
    About fifteen kernels whatever the number of segments: this is what makes per-step statistics of
    every parameter and every small module output cheap.
    """
    n = counts.shape[0]
    mean = x.new_zeros(n).index_add_(0, segment, x).div_(counts)
    centered = x - mean.index_select(0, segment)
    var = x.new_zeros(n).index_add_(0, segment, centered.mul_(centered)).div_(counts)
    absmax = x.new_zeros(n).scatter_reduce_(0, segment, x.abs(), "amax", include_self=True)
    zero_frac = x.new_zeros(n).index_add_(0, segment, (x == 0).to(x.dtype)).div_(counts)
    return torch.stack((mean, var, absmax, zero_frac))


BLOCK_ELEMENTS = 1 << 18  # a block is reduced this many values at a time (whole rows): bounds the temporaries


class ReductionPlan:
    """How to reduce a flat vector made of tensors of ``lengths`` elements (each ``members`` segments).

    Consecutive small tensors are grouped into runs reduced with ``segment_moments`` (a fixed set of
    kernels per run); consecutive larger tensors of equal length (e.g. the fixed-size samples of large
    module outputs) form blocks viewed as a matrix and reduced row-wise with streaming kernels, where the
    per-element cost of ``index_add_``/``scatter_reduce_`` would dominate. Result order is unchanged."""

    def __init__(self, lengths: Sequence[int], members: int, device: torch.device, dtype: torch.dtype,
                 zeros_from: int = 0, policy: ReductionPolicy = DEFAULT_POLICY):
        """``zeros_from``: index of the first tensor whose zero fraction is wanted (the activations);
        ``policy.small_tensor_elements``: which tensors are small."""
        self.members = members
        self.steps: list[tuple] = []
        self.tensors: list[range] = []  # which tensors (indices into ``lengths``) each step covers
        self.scratch = Scratch()
        start, run = 0, []

        def close_run():
            nonlocal start, run
            if run:
                layout = SegmentLayout([(n,) for n in run], members, device)
                counts = torch.as_tensor(layout.counts, device=device, dtype=dtype)
                self.steps.append(("run", start, start + layout.total, layout.segment, counts))
                self.tensors.append(range(index - len(run), index))
                start += layout.total
                run = []

        for index, length in enumerate(lengths):
            if policy.is_small(length // members):
                run.append(length)
                continue
            close_run()
            zeros = index >= zeros_from
            last = self.steps[-1] if self.steps else None
            if last is not None and last[0] == "block" and last[3] == length and last[4] == zeros:
                self.steps[-1] = ("block", last[1], last[2] + length, length, zeros)
                self.tensors[-1] = range(self.tensors[-1].start, index + 1)
            else:
                self.steps.append(("block", start, start + length, length, zeros))
                self.tensors.append(range(index, index + 1))
            start += length
        index = len(lengths)
        close_run()

    def moments(self, x: torch.Tensor) -> torch.Tensor:
        """Raw moments ``(4, S)``, as ``segment_moments`` gives for the whole vector."""
        pieces = []
        for step in self.steps:
            if step[0] == "run":
                _, begin, end, segment, counts = step
                pieces.append(segment_moments(x[begin:end], segment, counts))
            else:
                _, begin, end, length, zeros = step
                rows = x[begin:end].view(-1, length // self.members)
                chunk = max(1, BLOCK_ELEMENTS // rows.shape[1])  # the centered copy is one chunk, not the block
                pieces += [_rows_moments(rows[first : first + chunk], zeros, self.scratch).t()
                           for first in range(0, rows.shape[0], chunk)]
        return torch.cat(pieces, dim=1) if pieces else x.new_empty((4, 0))
