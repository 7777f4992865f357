"""Hypothesis over shapes, values and flags: normlab == torch, and == the float64 reference."""

from __future__ import annotations

import contextlib

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import normlab.nn as N
from normlab.nn import reference as R

SETTINGS = settings(max_examples=25, deadline=None)


@contextlib.contextmanager
def _recentering_off():
    """normlab recenters rows whose |mean|/std exceeds RECENTER_RATIO (closer to float64 than torch); with
    it off, the layers must give torch's numbers exactly. Small groups hit the ratio by chance."""
    before = N.functional.RECENTER_RATIO
    N.functional.RECENTER_RATIO = float("inf")
    try:
        yield
    finally:
        N.functional.RECENTER_RATIO = before


def _x(shape, scale, offset, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64) * scale + offset


@SETTINGS
@given(
    lead=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    width=st.integers(1, 33),
    scale=st.sampled_from([1e-3, 1.0, 50.0]),
    offset=st.sampled_from([0.0, -3.0, 100.0]),
    affine=st.booleans(),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_layernorm_and_rmsnorm(lead, width, scale, offset, affine, bias, seed):
    x = _x((*lead, width), scale, offset, seed)
    ln = N.LayerNorm(width, elementwise_affine=affine, bias=bias).double()
    torch.testing.assert_close(ln(x), torch.nn.LayerNorm(width, elementwise_affine=affine, bias=bias).double()(x))
    torch.testing.assert_close(ln(x), R.layer_norm(x, [width], ln.weight, ln.bias, ln.eps))
    rms = N.RMSNorm(width, elementwise_affine=affine).double()
    torch.testing.assert_close(rms(x), torch.nn.RMSNorm(width, elementwise_affine=affine).double()(x))
    if offset == 100.0 and scale == 1e-3:
        return  # dx cancels to ~1e-5 of its terms: float32 gradients (torch's and ours) are noise there
    x32 = x.float().requires_grad_()
    g = torch.randn(x32.shape, generator=torch.Generator().manual_seed(seed + 1))
    (dx,) = torch.autograd.grad(N.RMSNorm(width)(x32), x32, g)
    (tdx,) = torch.autograd.grad(torch.nn.RMSNorm(width)(x32), x32, g)
    # dx = (g - y * mean(g * y)) / rms: float32 rounding is relative to the terms g / rms, which can be far
    # larger than dx itself (width 1: y = sign(x), the terms cancel to ~eps / x**3)
    rms = x32.detach().square().mean(dim=-1, keepdim=True).add(torch.finfo(torch.float32).eps).sqrt()
    terms = float((g.abs() / rms).max())
    torch.testing.assert_close(dx, tdx, rtol=1e-4, atol=1e-4 * float(tdx.abs().max()) + 1e-5 * terms)


@SETTINGS
@given(
    n=st.integers(2, 5),
    groups_and_per_group=st.tuples(st.integers(1, 4), st.integers(1, 3)),
    spatial=st.lists(st.integers(1, 4), min_size=0, max_size=2),
    scale=st.sampled_from([1e-2, 1.0, 30.0]),
    offset=st.sampled_from([0.0, 5.0]),
    affine=st.booleans(),
    momentum=st.sampled_from([0.1, 0.7, None]),
    seed=st.integers(0, 2**16),
)
def test_batchnorm_and_groupnorm(n, groups_and_per_group, spatial, scale, offset, affine, momentum, seed):
    groups, per_group = groups_and_per_group
    c = groups * per_group
    shape = (n, c, *spatial)
    x = _x(shape, scale, offset, seed).float()
    gn = N.GroupNorm(groups, c, affine=affine)
    if x[0, :per_group].numel() > 1:
        torch.testing.assert_close(gn(x).double(), R.group_norm(x, groups, gn.weight, gn.bias, gn.eps),
                                   rtol=1e-5, atol=1e-5)
        with _recentering_off():
            torch.testing.assert_close(gn(x), torch.nn.GroupNorm(groups, c, affine=affine)(x))
    if len(spatial) <= 1:
        ours, theirs = N.BatchNorm1d(c, momentum=momentum, affine=affine), torch.nn.BatchNorm1d(
            c, momentum=momentum, affine=affine)
        for step in range(2):
            xs = x * (step + 1)
            y = ours(xs)
            torch.testing.assert_close(y.double(), R.batch_norm(xs, ours.weight, ours.bias, ours.eps),
                                       rtol=1e-5, atol=1e-5)
            y_torch = theirs(xs)
            if offset == 0:  # else torch's float32 mean costs it ~|mean|/std * 2**-22, which normlab avoids
                torch.testing.assert_close(y, y_torch)
        torch.testing.assert_close(ours.running_mean, theirs.running_mean)
        torch.testing.assert_close(ours.running_var, theirs.running_var, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), rtol=1e-4, atol=1e-4)
