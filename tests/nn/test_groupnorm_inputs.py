"""GroupNorm on inputs whose layout or size torch handles specially: the same outcome as torch.nn.GroupNorm."""

from __future__ import annotations

import pytest
import torch

import normlab.nn as N


def _strided(shape, strides, seed=0):
    x = torch.empty_strided(shape, strides)
    x.copy_(torch.randn(shape, generator=torch.Generator().manual_seed(seed)))
    return x


@pytest.mark.parametrize(("shape", "strides"), [
    ((1, 4, 1, 5), (1, 1, 4, 4)),  # channels_last-contiguous, but torch's kernel wants it NCHW
    ((2, 4, 1, 5), (20, 1, 20, 4)),  # plain channels_last
    ((1, 4, 1, 1), (4, 1, 4, 4)),
    ((2, 6, 1, 3, 1), (18, 1, 18, 6, 6)),
])
def test_ambiguous_size_one_layouts_work_as_in_torch(shape, strides):
    x = _strided(shape, strides).requires_grad_()
    g = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    ours, theirs = N.GroupNorm(2, shape[1]), torch.nn.GroupNorm(2, shape[1])
    y = ours(x)
    (dx,) = torch.autograd.grad(y, x, g)
    y_t = theirs(x)
    (dx_t,) = torch.autograd.grad(y_t, x, g)
    torch.testing.assert_close(y, y_t)
    torch.testing.assert_close(dx, dx_t)


@pytest.mark.parametrize("shape", [(1, 4), (1, 4, 1), (1, 4, 1, 1)])
def test_one_value_per_group_raises_like_torch(shape):
    x = torch.randn(shape)
    with pytest.raises(ValueError):
        torch.nn.GroupNorm(4, 4)(x)
    with pytest.raises(ValueError, match=r"more than 1 value per group.*num_groups=4"):
        N.GroupNorm(4, 4)(x)
    with pytest.raises(ValueError, match="more than 1 value per group"):
        N.functional.group_norm(x, 4)


def test_one_value_per_group_with_a_batch_is_torchs_result():
    """torch only raises when the whole input is one value per group; with N > 1 it normalizes to beta."""
    x = torch.randn(3, 4)
    gn = N.GroupNorm(4, 4)
    with torch.no_grad():
        gn.bias.copy_(torch.arange(4.0))
    torch.testing.assert_close(gn(x), gn.bias.expand(3, 4), rtol=0, atol=1e-4)
