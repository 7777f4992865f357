"""create_norm builds normlab layers by name; FrozenBatchNorm2d is BatchNorm2d's eval function."""

from __future__ import annotations

import pytest
import torch

import normlab.nn as N


@pytest.mark.parametrize(
    ("name", "kwargs", "cls", "x_shape"),
    [
        ("batchnorm", {}, N.BatchNorm1d, (4, 8)),
        ("batchnorm", {"dim": 2}, N.BatchNorm2d, (4, 8, 3, 3)),
        ("batchnorm", {"dim": 3, "momentum": 0.99, "momentum_convention": "keras"}, N.BatchNorm3d, (2, 8, 2, 2, 2)),
        ("layernorm", {"bias": False}, N.LayerNorm, (4, 5, 8)),
        ("layernorm2d", {}, N.LayerNorm2d, (2, 8, 3, 3)),
        ("rmsnorm", {"eps": 1e-6}, N.RMSNorm, (4, 5, 8)),
        ("rmsnorm2d", {}, N.RMSNorm2d, (2, 8, 3, 3)),
        ("groupnorm", {"num_groups": 4}, N.GroupNorm, (2, 8, 3, 3)),
        ("instancenorm", {"affine": True}, N.InstanceNorm1d, (2, 8, 5)),
        ("instancenorm", {"dim": 2}, N.InstanceNorm2d, (2, 8, 3, 3)),
        ("none", {}, torch.nn.Identity, (2, 8)),
    ],
)
def test_create_norm_builds_the_named_layer(name, kwargs, cls, x_shape):
    layer = N.create_norm(name, 8, **kwargs)
    assert type(layer) is cls
    x = torch.randn(x_shape)
    assert layer(x).shape == x.shape
    if name == "none":
        assert layer(x) is x


def test_create_norm_groupnorm_default_groups_divide_the_width():
    assert N.create_norm("groupnorm", 64).num_groups == 32
    assert N.create_norm("groupnorm", 48).num_groups == 24
    assert N.create_norm("groupnorm", 7).num_groups == 7


def test_create_norm_keras_momentum_reaches_the_layer():
    assert N.create_norm("batchnorm", 8, momentum=0.99, momentum_convention="keras").momentum == 0.01


def test_frozen_batchnorm_equals_batchnorm_in_eval_and_loads_its_checkpoint():
    gen = torch.Generator().manual_seed(0)
    bn = torch.nn.BatchNorm2d(4)
    for _ in range(3):
        bn(torch.randn(8, 4, 3, 3, generator=gen) * 2 + 1)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    bn.eval()
    frozen = N.FrozenBatchNorm2d(4)
    frozen.load_state_dict(bn.state_dict(), strict=True)  # num_batches_tracked is dropped
    x = torch.randn(2, 4, 5, 5, generator=gen)
    torch.testing.assert_close(frozen(x), bn(x))
    torch.testing.assert_close(frozen.train()(x), bn(x))  # train mode changes nothing
    torch.testing.assert_close(N.FrozenBatchNorm2d.from_batchnorm(bn)(x), bn(x))
    assert set(frozen.state_dict()) == {"weight", "bias", "running_mean", "running_var"}
    assert list(frozen.parameters()) == []
    xc = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(frozen(xc), bn(x))
    assert frozen(x.half()).dtype == torch.float16


def test_frozen_from_untracked_batchnorm_is_refused():
    with pytest.raises(ValueError, match="track_running_stats=False"):
        N.FrozenBatchNorm2d.from_batchnorm(torch.nn.BatchNorm2d(3, track_running_stats=False))


def test_everything_is_exported():
    for name in ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "LayerNorm2d", "RMSNorm", "RMSNorm2d",
                 "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "FrozenBatchNorm2d",
                 "create_norm"]:
        assert hasattr(N, name), name
    for name in ["batch_norm", "layer_norm", "rms_norm", "group_norm", "instance_norm"]:
        assert callable(getattr(N.functional, name)), name
