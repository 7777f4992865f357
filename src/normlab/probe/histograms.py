"""Device-side histograms with symmetric log-spaced bins.

Why this binning
----------------
Gradients, weights, updates and activations of one network span many orders of magnitude: a bias gradient
may sit near 1e-6 while an unnormalized activation reaches 1e2. Linear bins fitted to each tensor's own
range (TensorBoard's default) make every tensor look alike and put all the small values of a heavy-tailed
tensor into one or two bins. A histogram over ``sign(x) * log10|x|`` instead shows the *scale* of the values,
and with **fixed** edges the same bin means the same magnitude for every tensor at every step, so
histograms stack into heatmaps over time and compare across layers, arms and seeds without rebinning.

Edges (``bins`` even, ``k = bins // 2`` bins per sign, decades ``[10^min_exp, 10^max_exp]``)::

    -inf | -10^max_exp ... (k-2 log-spaced bins) ... -10^min_exp | 0 | 10^min_exp ... 10^max_exp | +inf

so each side has one open-ended overflow bin, ``k - 2`` log-uniform bins and one bin ``[0, 10^min_exp)``
(resp. ``[-10^min_exp, 0)``) that collects values too small to matter, exact zeros in the positive one.
The defaults (``bins=64``, decades 1e-7 .. 1e3) give 3 bins per decade. Bins are half-open ``[lo, hi)``,
as in ``numpy.histogram``. NaN values are not counted (the scalar statistics show them).
"""

from __future__ import annotations

import numpy as np
import torch

DEFAULT_MIN_EXP = -7
DEFAULT_MAX_EXP = 3
CHUNK_ELEMENTS = 1 << 16  # values binned per pass (see segment_counts)


class SymLogBins:
    """Fixed symmetric log-spaced bin edges, with one-op binning on the tensor's device.

    Args:
        bins: total number of bins, an even int >= 6.
        min_exp, max_exp: the log-spaced range is ``[10^min_exp, 10^max_exp]`` on each side.
    """

    def __init__(self, bins: int = 64, min_exp: int = DEFAULT_MIN_EXP, max_exp: int = DEFAULT_MAX_EXP):
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 6 or bins % 2:
            raise ValueError(f"Probe: bins must be an even int >= 6 (bins per sign = bins // 2), got {bins!r}")
        if not min_exp < max_exp:
            raise ValueError(f"SymLogBins: need min_exp < max_exp, got min_exp={min_exp}, max_exp={max_exp}")
        self.bins = bins
        self.min_exp, self.max_exp = min_exp, max_exp
        positive = np.logspace(min_exp, max_exp, bins // 2 - 1)  # k-1 edges bound k-2 log bins
        self._inner = np.concatenate([-positive[::-1], [0.0], positive])  # bins - 1 finite edges
        self._device_edges: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def inner_edges(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The ``bins - 1`` finite edges as a tensor (cached per device and dtype)."""
        key = (torch.device(device), dtype)
        if key not in self._device_edges:
            self._device_edges[key] = torch.tensor(self._inner, device=device, dtype=dtype)
        return self._device_edges[key]

    def edges(self, dtype: torch.dtype = torch.float32) -> np.ndarray:
        """All ``bins + 1`` edges in float64, holding exactly the values compared against data of ``dtype``."""
        inner = torch.tensor(self._inner, dtype=dtype).double().numpy()
        return np.concatenate([[-np.inf], inner, [np.inf]])

    def _padded_edges(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``[-inf, inner edges..., nan]``: entry ``i`` is bin ``i``'s lower edge; the NaN makes the upper
        edge of the last bin compare false, so +inf stays in the last bin."""
        key = (torch.device(device), dtype, "padded")
        if key not in self._device_edges:
            inner = self.inner_edges(device, dtype)
            self._device_edges[key] = torch.cat([inner.new_full((1,), -np.inf), inner, inner.new_full((1,), np.nan)])
        return self._device_edges[key]

    def bucket(self, x: torch.Tensor) -> torch.Tensor:
        """Bin index of every element, in ``[0, bins)``; NaN goes to ``bins`` (a slot callers drop).

        Equal to ``torch.bucketize(x, inner_edges, right=True)`` (tested on the edges and their float
        neighbours), at about half its cost on CPU: the bin is estimated from ``log10|x|`` (the edges are
        log-uniform), then moved by at most one bin by comparing with the two edges around it, so rounding
        in ``log10`` cannot misplace a value.
        """
        k = self.bins // 2
        per_bin = (self.max_exp - self.min_exp) / (k - 2)  # decades per log bin
        # count of positive edges <= |x|, estimated: floor((log10|x| - min_exp) / per_bin) + 1, in [0, k-1]
        estimate = x.abs().log10_().mul_(1 / per_bin).add_(1 - self.min_exp / per_bin).floor_().clamp_(0, k - 1)
        # x >= 0: k + count; x < 0: k - 1 - count (a -0.0 lands one off and is corrected below)
        estimate = estimate.add_(0.5).copysign_(x).add_(k - 0.5).nan_to_num_(0.0)
        index = estimate.to(torch.int64)
        edges = self._padded_edges(x.device, x.dtype)
        index.add_((edges.take(index + 1) <= x).to(torch.int64))  # x at or above the next edge
        index.sub_((edges.take(index) > x).to(torch.int64))  # x below this bin's lower edge
        return index.masked_fill_(x.isnan(), self.bins)

    def segment_counts(self, x: torch.Tensor, slot_offsets: torch.Tensor, n_slots: int) -> torch.Tensor:
        """Counts per segment: ``slot_offsets`` (``x``'s shape, or broadcastable to it) is ``segment * (bins + 1)``.

        Returns an int64 tensor ``(n_slots, bins)`` from a single ``bincount``. Binned in chunks of
        ``CHUNK_ELEMENTS``: the binning's temporaries then stay in cache and in the allocator's pool
        (measured: whole-vector binning of a few hundred thousand values costs 2-3x more per value).
        """
        width = self.bins + 1
        flat, offsets = x.reshape(-1), slot_offsets.broadcast_to(x.shape).reshape(-1)
        index = torch.empty(flat.shape, dtype=torch.int64, device=x.device)
        for start in range(0, flat.numel(), CHUNK_ELEMENTS):
            end = start + CHUNK_ELEMENTS
            torch.add(self.bucket(flat[start:end]), offsets[start:end], out=index[start:end])
        counts = torch.bincount(index, minlength=n_slots * width)
        return counts.view(n_slots, width)[:, : self.bins]

    def rows_counts(self, rows: torch.Tensor, slot_offsets: torch.Tensor, n_segments: int) -> torch.Tensor:
        """Counts ``(R, n_segments, bins)`` of every row of ``rows`` ``(R, C)``, whose columns belong to
        segments given by ``slot_offsets`` ``(C,)`` ``= segment * (bins + 1)``; one ``bincount``."""
        n_rows, n_columns = rows.shape
        width = self.bins + 1
        stride = n_segments * width
        index = torch.empty((n_rows, n_columns), dtype=torch.int64, device=rows.device)
        per_chunk = max(1, CHUNK_ELEMENTS // max(n_columns, 1))
        for first in range(0, n_rows, per_chunk):
            last = min(n_rows, first + per_chunk)
            block = self.bucket(rows[first:last]).add_(slot_offsets)
            block.add_(torch.arange(first * stride, last * stride, stride, device=rows.device)[:, None])
            index[first:last] = block
        counts = torch.bincount(index.reshape(-1), minlength=n_rows * stride)
        return counts.view(n_rows, n_segments, width)[:, :, : self.bins]
