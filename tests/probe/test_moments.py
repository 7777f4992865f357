"""The row moments' variance: one pass where that is as accurate as two, two passes otherwise, against a
float64 oracle, in float32 where the difference shows."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab.probe.moments import _one_pass_variance, _rows_moments


def _oracle_var(rows: torch.Tensor) -> np.ndarray:
    return rows.to(torch.float64).var(dim=1, correction=0).numpy()


@settings(max_examples=80, deadline=None, derandomize=True)
@given(rows=st.integers(1, 4), n=st.integers(2, 3000), shift=st.floats(-1.0, 1.0), scale=st.floats(1e-6, 1e6),
       seed=st.integers(0, 2**16))
def test_float32_variance_is_within_a_few_ulps_of_the_float64_oracle_whatever_the_mean(rows, n, shift, scale, seed):
    """``shift`` in [-1, 1] std gives the one-pass path; the same rows moved by 1e4 std (a LayerNorm gain's
    shape) take two passes. Either way the float32 variance is close to float64's."""
    generator = torch.Generator().manual_seed(seed)
    x = (torch.randn(rows, n, generator=generator, dtype=torch.float64) + shift) * scale
    for offset in (0.0, 1e4 * scale):
        data = (x + offset).to(torch.float32)
        got = _rows_moments(data, zeros=False)[:, 1].to(torch.float64).numpy()
        np.testing.assert_allclose(got, _oracle_var(data), rtol=2e-5)


def test_one_pass_is_taken_only_where_the_mean_is_within_a_standard_deviation():
    centred = torch.randn(3, 1000)
    assert _one_pass_variance(centred, centred.mean(dim=1)) is not None
    gains = 1 + 1e-3 * torch.randn(3, 1000)  # mean 1, std 1e-3: one pass would lose ~6 of float32's 7 digits
    assert _one_pass_variance(gains, gains.mean(dim=1)) is None
    mixed = torch.cat([centred[:2], gains[:1]])  # one such row sends all rows to two passes
    assert _one_pass_variance(mixed, mixed.mean(dim=1)) is None
    constant = torch.full((1, 100), 3.0)  # variance 0 with a mean: two passes give exactly 0
    assert _one_pass_variance(constant, constant.mean(dim=1)) is None
    assert _rows_moments(constant, zeros=False)[0, 1].item() == 0.0
    nan = torch.tensor([[1.0, float("nan"), 2.0]])
    assert _one_pass_variance(nan, nan.mean(dim=1)) is None and torch.isnan(_rows_moments(nan)[0, 1])


def test_gain_like_rows_keep_their_digits():
    """The case the two passes exist for: with one pass this variance would come out wrong by ~100%."""
    gains = (1 + 1e-3 * torch.randn(2, 5000, generator=torch.Generator().manual_seed(0))).to(torch.float32)
    np.testing.assert_allclose(_rows_moments(gains, zeros=False)[:, 1].numpy(), _oracle_var(gains), rtol=1e-4)
    one_pass = (gains.to(torch.float32).square().mean(dim=1) - gains.mean(dim=1).square()).numpy()
    assert np.abs(one_pass / _oracle_var(gains) - 1).max() > 1e-2  # why the guard is needed
