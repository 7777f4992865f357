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
INDEX_ELEMENTS = 1 << 18  # SegmentBinning: bin indices held before they are counted


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
        neighbours, and on both ends of every float32 key interval below), at a fraction of its cost:

        * float32: the top 16 bits of a float (sign, exponent, 7 mantissa bits) cut the line into 65536
          intervals, each less than 1% wide relative to its values, so each holds at most one bin edge
          when the edges are further apart than that (always, for the log-spaced ones: 3 bins per
          decade are 115% apart). A table gives the bin of each interval's lowest value and the lower
          edge of the next bin; one comparison moves a value past that edge. Five streaming kernels and
          two table lookups, against about twenty for the estimate below.
        * otherwise: the bin is estimated from ``log10|x|`` (the edges are log-uniform), then moved by at
          most one bin by comparing with the two edges around it, so rounding in ``log10`` cannot
          misplace a value.
        """
        if x.dtype == torch.float32 and self._key_tables_apply:
            return self._bucket_by_key(x)
        return self._bucket_by_log(x)

    # A float32's top 16 bits, shifted to [0, 65536): the index of its key interval.
    KEY_SHIFT, KEY_OFFSET, KEYS = 16, 1 << 15, 1 << 16

    @property
    def _key_tables_apply(self) -> bool:
        """Whether adjacent log-spaced edges are further apart than a key interval (2^-7 relative; with a
        factor 2 of margin), so no interval holds two edges."""
        decades_per_bin = (self.max_exp - self.min_exp) / (self.bins // 2 - 2)
        return decades_per_bin > 2 * np.log10(1 + 2.0**-7)

    def _key_tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(bin of the lowest value, lower edge of the next bin)`` for every key interval (cached).

        The lowest value of interval ``i`` has the low 16 bits all 0 for a positive key and all 1 for a
        negative one (a larger magnitude). Intervals of NaNs map to the NaN slot, with a NaN next edge
        (never crossed). The two intervals holding an infinity hold NaNs too, but only *signalling* NaNs
        with an empty top of the mantissa (never the result of arithmetic): those are binned with the
        infinity."""
        key = (torch.device(device), "key tables")
        if key not in self._device_edges:
            signed = np.arange(self.KEYS, dtype=np.int64) - self.KEY_OFFSET
            high = (signed << self.KEY_SHIFT).astype(np.int64)
            ends = [(end & 0xFFFFFFFF).astype(np.uint32).view(np.float32) for end in (high, high | 0xFFFF)]
            # NumPy's fmin: a NaN end is ignored, NaN only if both are (torch 2.13's fmin returns NaN
            # when the NaN is a signalling one, as the all-ones low bits next to an infinity make)
            lowest = torch.from_numpy(np.fmin(*ends))
            edges = self.inner_edges("cpu", torch.float32)
            bins = torch.bucketize(lowest, edges, right=True).masked_fill_(lowest.isnan(), self.bins)
            padded = torch.cat([self._padded_edges("cpu", torch.float32), torch.tensor([np.nan])])
            next_edge = padded[bins + 1]  # the NaN slot's next edge is the appended NaN
            self._device_edges[key] = (bins.to(device), next_edge.to(device))
        return self._device_edges[key]

    def _bucket_by_key(self, x: torch.Tensor) -> torch.Tensor:
        bins, next_edge = self._key_tables(x.device)
        flat = x.reshape(-1)
        index = torch.bitwise_right_shift(flat.view(torch.int32), self.KEY_SHIFT).add_(self.KEY_OFFSET)
        bucket = bins.index_select(0, index)
        bucket += next_edge.index_select(0, index) <= flat  # past the one edge inside the interval
        return bucket.view(x.shape)

    def _bucket_by_log(self, x: torch.Tensor) -> torch.Tensor:
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
        ``CHUNK_ELEMENTS``: the binning's temporaries then stay in cache and in the allocator's pool,
        where binning the whole vector at once would stream every temporary through main memory.
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


class SegmentBinning:
    """Counts ``(n_segments, bins)`` of a flat vector cut into consecutive segments of ``lengths`` values,
    in memory bounded whatever the vector's size.

    ``SymLogBins.segment_counts`` holds an int64 offset and an int64 bin index for every value: 16 bytes
    per 4-byte value, four times a large model's parameters for its gradients and weights. Here a long
    segment adds one constant offset to its bins, runs of short segments keep per-value offsets (short
    segments are small tensors), and the indices are counted every ``INDEX_ELEMENTS`` values. The counts
    are the same integers."""

    def __init__(self, binning: SymLogBins, lengths: np.ndarray, device: torch.device, long_segment_elements: int):
        """``long_segment_elements``: segments this long get one constant offset, not one per value
        (``ReductionPolicy.long_segment_elements``)."""
        self.binning = binning
        self.n_segments = len(lengths)
        width = binning.bins + 1
        self.pieces: list[tuple[int, int, int | torch.Tensor]] = []  # (begin, end, offset(s) of its values)
        lengths = np.asarray(lengths, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        run: list[int] = []

        def close_run():
            if run:
                slots = torch.as_tensor(np.asarray(run, dtype=np.int64) * width, device=device)
                offsets = torch.repeat_interleave(slots, torch.as_tensor(lengths[run], device=device))
                self.pieces.append((int(starts[run[0]]), int(starts[run[-1] + 1]), offsets))
                run.clear()

        for segment, length in enumerate(lengths.tolist()):
            if length < long_segment_elements:
                run.append(segment)
                continue
            close_run()
            self.pieces.append((int(starts[segment]), int(starts[segment + 1]), segment * width))
        close_run()
        self.total = int(starts[-1])

    def counts(self, x: torch.Tensor) -> torch.Tensor:
        """int64 counts ``(n_segments, bins)`` of the flat ``x`` (``total`` values)."""
        width = self.binning.bins + 1
        slots = self.n_segments * width
        index = torch.empty(min(INDEX_ELEMENTS, max(x.numel(), 1)), dtype=torch.int64, device=x.device)
        counts = torch.zeros(slots, dtype=torch.int64, device=x.device)
        filled = 0
        for begin, end, offset in self.pieces:
            for start in range(begin, end, CHUNK_ELEMENTS):
                stop = min(end, start + CHUNK_ELEMENTS)
                if filled + stop - start > index.numel():
                    counts += torch.bincount(index[:filled], minlength=slots)
                    filled = 0
                shift = offset if isinstance(offset, int) else offset[start - begin : stop - begin]
                torch.add(self.binning.bucket(x[start:stop]), shift, out=index[filled : filled + stop - start])
                filled += stop - start
        if filled:
            counts += torch.bincount(index[:filled], minlength=slots)
        return counts.view(self.n_segments, width)[:, : self.binning.bins]
