"""Histograms equal numpy.histogram with the same edges, on the device binning and through the Probe."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from probe_oracle import seed000_data, seed000_ln_model
from torch import nn

from normlab.probe import Probe, ReductionPolicy, SymLogBins
from normlab.probe.histograms import SegmentBinning


def _numpy_counts(values: torch.Tensor, edges: np.ndarray) -> np.ndarray:
    # numpy's last bin is closed on the right; with an infinite last edge that changes nothing for finite data
    finite = values.detach().double().numpy().reshape(-1)
    return np.histogram(finite[~np.isnan(finite)], bins=edges)[0]


def test_edges_are_symmetric_log_spaced_with_open_ends():
    edges = SymLogBins(64).edges(torch.float64)
    assert len(edges) == 65 and edges[0] == -np.inf and edges[-1] == np.inf and edges[32] == 0.0
    np.testing.assert_allclose(edges[1:32], -edges[33:64][::-1])
    positive = edges[33:64]
    np.testing.assert_allclose(positive[[0, -1]], [1e-7, 1e3])
    np.testing.assert_allclose(np.diff(np.log10(positive)), 1 / 3)  # 3 bins per decade


@settings(max_examples=25, deadline=None)
@given(
    bins=st.sampled_from([6, 16, 64]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    exponents=st.lists(st.floats(-12, 6), min_size=1, max_size=200),
    signs=st.lists(st.sampled_from([-1.0, 0.0, 1.0]), min_size=200, max_size=200),
)
def test_symlog_counts_equal_numpy_histogram(bins, dtype, exponents, signs):
    values = torch.tensor([s * 10.0**e for s, e in zip(signs, exponents, strict=False)], dtype=dtype)
    binning = SymLogBins(bins)
    edges = binning.edges(dtype)
    offsets = torch.zeros_like(values, dtype=torch.int64)
    counts = binning.segment_counts(values, offsets, 1)[0].numpy()
    np.testing.assert_array_equal(counts, _numpy_counts(values, edges))


def test_values_on_edges_fall_in_the_bin_they_open():
    binning = SymLogBins(6)  # edges: -inf, -1e3, -1e-7, 0, 1e-7, 1e3, inf
    edges = binning.edges(torch.float64)
    values = torch.tensor(edges[1:-1], dtype=torch.float64)
    counts = binning.segment_counts(values, torch.zeros(5, dtype=torch.int64), 1)[0].numpy()
    np.testing.assert_array_equal(counts, [0, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(counts, _numpy_counts(values, edges))


def test_nan_is_not_counted_and_infinities_land_in_the_open_bins():
    binning = SymLogBins(6)
    values = torch.tensor([float("nan"), float("inf"), -float("inf"), 5.0])
    counts = binning.segment_counts(values, torch.zeros(4, dtype=torch.int64), 1)[0].numpy()
    np.testing.assert_array_equal(counts, [1, 0, 0, 0, 1, 1])


@pytest.mark.parametrize("reduce_in_hook", [False, True])
def test_probe_histograms_equal_numpy_per_tensor(reduce_in_hook):
    policy = ReductionPolicy(reduce_in_hooks=reduce_in_hook)
    model = seed000_ln_model(torch.float32)
    x, y = seed000_data(torch.float32)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    outputs, grads, weights = {}, [], []
    model[3].register_forward_hook(lambda m, a, out: outputs.__setitem__(len(grads), out.detach().clone()))
    with Probe(model, optimizer, histograms=2, bins=16, policy=policy) as probe:
        for _ in range(4):
            nn.functional.mse_loss(model(x).squeeze(-1), y).backward()
            grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
            weights.append({n: p.detach().clone() for n, p in model.named_parameters()})
            optimizer.step()
            optimizer.zero_grad()
    table = probe.histograms()
    edges = SymLogBins(16).edges(torch.float32)
    assert sorted(table.step.unique()) == [0, 2]
    for step in (0, 2):
        for kind, tensors in (("grad", grads[step]), ("weight", weights[step])):
            for name, tensor in tensors.items():
                rows = table[(table.step == step) & (table.kind == kind) & (table.name == name)]
                np.testing.assert_array_equal(rows.bin_lo.to_numpy(), edges[:-1])
                np.testing.assert_array_equal(rows.bin_hi.to_numpy(), edges[1:])
                np.testing.assert_array_equal(rows["count"].to_numpy(), _numpy_counts(tensor, edges))
        rows = table[(table.step == step) & (table.kind == "norm_out") & (table.name == "3")]
        np.testing.assert_array_equal(rows["count"].to_numpy(), _numpy_counts(outputs[step], edges))
    # scalars are also recorded on every histogram step
    assert set(probe.scalars().step) == {0, 1, 2, 3}
    # the sparse table is the full one without its empty bins, with only the categories that occur
    sparse = probe.histograms(empty_bins=False)
    occupied = table[table["count"] > 0].reset_index(drop=True)
    assert 0 < len(sparse) < len(table)
    pd.testing.assert_frame_equal(sparse.astype({"name": str, "kind": str}),
                                  occupied.astype({"name": str, "kind": str}))
    assert set(sparse["name"].cat.categories) == set(occupied["name"])


def test_histograms_off_gives_empty_table_with_columns():
    model = seed000_ln_model()
    with Probe(model) as probe:
        pass
    table = probe.histograms()
    assert list(table.columns) == ["step", "member", "name", "kind", "bin_lo", "bin_hi", "count"]
    assert len(table) == 0


@pytest.mark.parametrize("bins", [5, 4, 0, True, 64.0, "64"])
def test_bad_bins_are_rejected_with_the_argument_named(bins):
    with pytest.raises(ValueError, match="bins"):
        Probe(seed000_ln_model(), histograms=True, bins=bins)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bins", [6, 16, 64, 100])
def test_bucket_equals_torch_bucketize_on_edges_neighbours_and_extremes(bins, dtype):
    binning = SymLogBins(bins)
    edges = binning.inner_edges("cpu", dtype)
    finfo = torch.finfo(dtype)
    special = torch.tensor([0.0, -0.0, np.inf, -np.inf, np.nan, finfo.tiny, -finfo.tiny, finfo.max, -finfo.max,
                            finfo.eps, 1e-45 if dtype == torch.float32 else 5e-324], dtype=dtype)
    up, down = torch.nextafter(edges, edges.new_full((), np.inf)), torch.nextafter(edges, edges.new_full((), -np.inf))
    generator = torch.Generator().manual_seed(bins)
    spread = torch.randn(20_000, generator=generator, dtype=dtype) * torch.exp(
        10 * torch.randn(20_000, generator=generator, dtype=dtype))
    x = torch.cat([edges, up, down, special, spread])
    for values in (x, x.repeat(2).reshape(-1, 2)[:, 0]):  # contiguous, and a strided view
        expected = torch.bucketize(values.contiguous(), edges, right=True).masked_fill_(values.isnan(), bins)
        assert torch.equal(binning.bucket(values), expected)


@pytest.mark.parametrize("chunk", [7, 64, 1 << 16])
def test_chunked_segment_and_row_counts_equal_numpy_per_segment(chunk, monkeypatch):
    monkeypatch.setattr("normlab.probe.histograms.CHUNK_ELEMENTS", chunk)
    binning = SymLogBins(16)
    edges = binning.edges(torch.float64)
    generator = torch.Generator().manual_seed(chunk)
    rows = torch.randn(5, 30, generator=generator, dtype=torch.float64) * 10.0 ** torch.randint(
        -8, 4, (5, 30), generator=generator)
    lengths = [4, 11, 15]
    segment = torch.repeat_interleave(torch.arange(3), torch.tensor(lengths))
    offsets = segment * (binning.bins + 1)
    by_row = binning.rows_counts(rows, offsets, 3)
    for r in range(5):
        flat = binning.segment_counts(rows[r], offsets, 3)
        for s, piece in enumerate(torch.split(rows[r], lengths)):
            expected = _numpy_counts(piece, edges)
            np.testing.assert_array_equal(flat[s].numpy(), expected)
            np.testing.assert_array_equal(by_row[r, s].numpy(), expected)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=8), chunk=st.sampled_from([3, 16, 1 << 16]),
       index=st.sampled_from([5, 16, 1 << 20]), long=st.sampled_from([1, 8, 1 << 12]), seed=st.integers(0, 99))
def test_segment_binning_equals_numpy_per_segment(lengths, chunk, index, long, seed, monkeypatch):
    # tiny chunks, index buffers and "long" thresholds put every piece boundary and count flush in play
    monkeypatch.setattr("normlab.probe.histograms.CHUNK_ELEMENTS", chunk)
    monkeypatch.setattr("normlab.probe.histograms.INDEX_ELEMENTS", max(index, chunk))
    binning = SymLogBins(16)
    edges = binning.edges(torch.float32)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(lengths), generator=generator) * 10.0 ** torch.randint(-8, 4, (sum(lengths),),
                                                                               generator=generator)
    counts = SegmentBinning(binning, np.array(lengths), torch.device("cpu"), long_segment_elements=long).counts(x)
    assert counts.shape == (len(lengths), 16)
    for s, piece in enumerate(torch.split(x, lengths)):
        np.testing.assert_array_equal(counts[s].numpy(), _numpy_counts(piece, edges))


@pytest.mark.parametrize("bins", [6, 64, 100])
def test_float32_key_tables_bin_both_ends_of_every_key_interval_like_bucketize(bins):
    """Every float32 whose top 16 bits are a given key lies between the two ends (low bits all 0, all 1):
    checking both ends and some bits between, for all 65536 keys, covers every bin the table can give."""
    binning = SymLogBins(bins)
    keys = np.arange(1 << 16, dtype=np.uint64) << np.uint64(16)
    low = np.array([0x0000, 0x0001, 0x5555, 0x8000, 0xFFFE, 0xFFFF], dtype=np.uint64)
    bits = (keys[:, None] | low[None, :]).reshape(-1).astype(np.uint32)
    values = torch.from_numpy(bits.view(np.float32))
    expected = torch.bucketize(values, binning.inner_edges("cpu", torch.float32), right=True)
    expected.masked_fill_(values.isnan(), bins)
    # Signalling NaNs whose payload is only in the low 16 bits share their key with an infinity and are
    # binned with it (documented; arithmetic never produces them: its NaN has the top mantissa bit set).
    exponent_all_ones = (bits & 0x7F800000) == 0x7F800000
    shares_infinity_key = exponent_all_ones & ((bits & 0x007F0000) == 0) & ((bits & 0xFFFF) != 0)
    infinity_bin = np.where(bits >> 31, 0, bins - 1)
    expected[torch.from_numpy(shares_infinity_key)] = torch.from_numpy(infinity_bin[shares_infinity_key])
    assert binning._key_tables_apply
    assert torch.equal(binning.bucket(values), expected)


def test_dense_bins_fall_back_to_the_log_estimate():
    # 4000 bins over 10 decades: edges 0.5% apart, closer than a key interval (0.8%)
    binning = SymLogBins(4000)
    assert not binning._key_tables_apply
    x = torch.randn(10_000) * torch.exp(5 * torch.randn(10_000))
    assert torch.equal(binning.bucket(x), torch.bucketize(x, binning.inner_edges("cpu", torch.float32), right=True))
