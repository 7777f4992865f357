"""Bad input gets an error naming the argument, what was expected and what was given."""

from __future__ import annotations

import pytest
import torch

import normlab.nn as N
from normlab.nn import functional as NF

BAD_INPUTS = [
    # (layer factory, input, exception, words the message must contain)
    (lambda: N.BatchNorm2d(4), torch.randn(2, 3, 5, 5), ValueError, ["num_features=4", "3 channels"]),
    (lambda: N.BatchNorm1d(4), torch.randn(1, 4), ValueError, ["more than 1 value per channel", "(1, 4)"]),
    (lambda: N.BatchNorm2d(4), torch.randn(1, 4, 1, 1), ValueError, ["more than 1 value per channel"]),
    (lambda: N.BatchNorm2d(4), torch.randn(4, 5, 5), ValueError, ["expected 4D", "got 3D"]),
    (lambda: N.BatchNorm1d(4), torch.randn(2, 4, 3, 3), ValueError, ["expected 2D or 3D", "got 4D"]),
    (lambda: N.BatchNorm3d(4), torch.randn(2, 4, 3, 3), ValueError, ["expected 5D", "got 4D"]),
    (lambda: N.BatchNorm2d(4), torch.ones(2, 4, 3, 3, dtype=torch.long), TypeError, ["floating", "torch.int64"]),
    (lambda: N.LayerNorm(8), torch.randn(2, 7), ValueError, ["normalized_shape=(8,)", "(2, 7)"]),
    (lambda: N.LayerNorm((3, 8)), torch.randn(2, 4, 8), ValueError, ["normalized_shape=(3, 8)"]),
    (lambda: N.LayerNorm(8), torch.ones(2, 8, dtype=torch.int32), TypeError, ["floating", "torch.int32"]),
    (lambda: N.RMSNorm(8), torch.randn(8, 4), ValueError, ["normalized_shape=(8,)", "(8, 4)"]),
    (lambda: N.RMSNorm(8), torch.ones(2, 8, dtype=torch.bool), TypeError, ["floating", "torch.bool"]),
    (lambda: N.GroupNorm(2, 8), torch.randn(2, 6, 4), ValueError, ["num_channels=8", "6 channels"]),
    (lambda: N.GroupNorm(2, 8), torch.randn(8), ValueError, ["at least 2 dims"]),
    (lambda: N.InstanceNorm2d(4, affine=True), torch.randn(2, 3, 5, 5), ValueError, ["num_features=4"]),
    (lambda: N.InstanceNorm2d(4), torch.randn(2, 4, 1, 1), ValueError, ["more than 1 spatial element"]),
    (lambda: N.InstanceNorm1d(4), torch.randn(2, 4, 5, 5), ValueError, ["expected 2D or 3D", "got 4D"]),
    (lambda: N.LayerNorm2d(4), torch.randn(2, 3, 5, 5), ValueError, ["num_channels=4", "3 channels"]),
    (lambda: N.RMSNorm2d(4), torch.randn(2, 3, 5, 5), ValueError, ["num_channels=4", "3 channels"]),
    (lambda: N.LayerNorm2d(4), torch.randn(4), ValueError, ["at least 2 dims"]),
    (lambda: N.FrozenBatchNorm2d(4), torch.randn(2, 3, 5, 5), ValueError, ["num_features=4", "3 channels"]),
]


@pytest.mark.parametrize(("make", "x", "exc", "words"), BAD_INPUTS)
def test_bad_input_is_named(make, x, exc, words):
    with pytest.raises(exc) as info:
        make()(x)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


BAD_CONSTRUCTORS = [
    (lambda: N.GroupNorm(3, 8), ["num_channels must be divisible by num_groups", "num_channels=8",
                                 "num_groups=3"]),
    (lambda: N.GroupNorm(0, 8), ["num_groups must be a positive int", "0"]),
    (lambda: N.BatchNorm2d(4, eps=0), ["eps must be", "> 0", "got 0"]),
    (lambda: N.BatchNorm2d(4, eps=-1e-5), ["eps must be"]),
    (lambda: N.LayerNorm(4, eps=0.0), ["eps must be"]),
    (lambda: N.RMSNorm(4, eps=-1.0), ["eps must be"]),
    (lambda: N.GroupNorm(2, 4, eps=0), ["eps must be"]),
    (lambda: N.InstanceNorm2d(4, eps=float("nan")), ["eps must be"]),
    (lambda: N.FrozenBatchNorm2d(4, eps=0), ["eps must be"]),
    (lambda: N.BatchNorm1d(0), ["num_features must be a positive int", "got 0"]),
    (lambda: N.BatchNorm1d(4, momentum=1.5), ["momentum must be a number in [0, 1]", "1.5"]),
    (lambda: N.BatchNorm1d(4, momentum_convention="tf"), ["momentum_convention", "'tf'"]),
    (lambda: N.LayerNorm(()), ["normalized_shape must name at least one dim"]),
    (lambda: N.LayerNorm((4, 0)), ["normalized_shape must be a positive int"]),
    (lambda: N.create_norm("batchnrom", 4), ["unknown norm 'batchnrom'", "batchnorm"]),
    (lambda: N.create_norm("batchnorm", 4, dim=4), ["dim must be one of [1, 2, 3]", "got 4"]),
    (lambda: N.create_norm("groupnorm", 6, num_groups=4), ["divisible by num_groups"]),
]


@pytest.mark.parametrize(("make", "words"), BAD_CONSTRUCTORS)
def test_bad_constructor_argument_is_named(make, words):
    with pytest.raises(ValueError) as info:
        make()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_functional_errors_name_the_argument():
    x = torch.randn(4, 3, 5)
    with pytest.raises(ValueError, match="running_mean must have 3 elements"):
        NF.batch_norm(x, torch.zeros(4), torch.ones(3), training=False)
    with pytest.raises(ValueError, match="divisible by num_groups"):
        NF.group_norm(x, 2)
    with pytest.raises(ValueError, match="eps must be"):
        NF.layer_norm(x, [5], eps=0.0)
    with pytest.raises(ValueError, match=r"weight must have shape \(5,\)"):
        NF.rms_norm(x, [5], torch.ones(4))
    with pytest.raises(TypeError, match="floating"):
        NF.instance_norm(x.long())
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        NF.batch_norm(torch.randn(1, 3), None, None, training=True)


def test_instancenorm_without_affine_keeps_torch_warning_on_channel_mismatch():
    """num_features is unused without affine or running stats; torch only warns there, and so do we."""
    x = torch.randn(2, 3, 5)
    with pytest.warns(UserWarning, match="does not match num_features"):
        y = N.InstanceNorm1d(4)(x)
    torch.testing.assert_close(y, torch.nn.InstanceNorm1d(3)(x))


def test_eval_batchnorm_accepts_one_value_per_channel():
    bn = N.BatchNorm1d(4).eval()
    torch.testing.assert_close(bn(torch.ones(1, 4)), torch.nn.BatchNorm1d(4).eval()(torch.ones(1, 4)))
