"""The norm registry: get_norm_layer returns classes/partials that build what the table says, every
registered class is a norm of its family to surgery and the probe, and no name decides anything."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import normlab.nn as N
from normlab.nn.registry import NORM_NAMES, class_facts, create_norm, get_norm_layer
from normlab.nn.surgery import is_norm_class
from normlab.nn.surgery._families import family_of

SHAPES = {"1d": (4, 8, 5), "2d": (2, 8, 3, 3), "3d": (2, 8, 2, 2, 2), "last": (4, 5, 8), "flat": (4, 8)}
NAMED = [  # name, class built over 8 features, an input it takes
    ("batchnorm", N.BatchNorm1d, "flat"), ("batchnorm1d", N.BatchNorm1d, "1d"), ("batchnorm2d", N.BatchNorm2d, "2d"),
    ("batchnorm3d", N.BatchNorm3d, "3d"), ("frozenbatchnorm2d", N.FrozenBatchNorm2d, "2d"),
    ("syncbatchnorm", N.SyncBatchNorm, "2d"),
    ("layernorm", N.LayerNorm, "last"), ("layernorm2d", N.LayerNorm2d, "2d"), ("layernorm-chw", N.GroupNorm, "2d"),
    ("rmsnorm", N.RMSNorm, "last"), ("rmsnorm2d", N.RMSNorm2d, "2d"), ("groupnorm", N.GroupNorm, "2d"),
    ("instancenorm", N.InstanceNorm1d, "1d"), ("instancenorm1d", N.InstanceNorm1d, "1d"),
    ("instancenorm2d", N.InstanceNorm2d, "2d"), ("instancenorm3d", N.InstanceNorm3d, "3d"),
    ("none", nn.Identity, "flat"),
]


def test_every_registered_name_is_tested():
    assert sorted(name for name, _, _ in NAMED) == sorted(NORM_NAMES) == sorted(N.NORM_NAMES)
    assert N.get_norm_layer is get_norm_layer and N.create_norm is create_norm


@pytest.mark.parametrize(("name", "cls", "shape"), NAMED)
def test_get_norm_layer_is_a_class_or_partial_building_the_named_layer(name, cls, shape):
    layer = get_norm_layer(name.upper())
    assert isinstance(layer, type | functools.partial)
    built = layer(8)
    assert type(built) is cls and type(create_norm(name, 8)) is cls
    x = torch.randn(SHAPES[shape])
    assert built(x).shape == x.shape
    assert is_norm_class(cls) == (name != "none")
    facts = class_facts(cls)
    if facts is not None and name != "frozenbatchnorm2d":  # surgery does not convert frozen BatchNorms
        assert family_of(cls).kind == facts.family and family_of(cls).channels_first == facts.channels_first


def test_get_norm_layer_unknown_name_lists_the_names():
    with pytest.raises(ValueError, match=r"get_norm_layer: unknown norm 'layrnorm'; expected one of .*layernorm-chw"):
        get_norm_layer("layrnorm")
    with pytest.raises(ValueError, match="unknown norm 3"):
        get_norm_layer(3)


@settings(max_examples=15, deadline=None)
@given(c=st.integers(1, 6), h=st.integers(2, 4), w=st.integers(1, 4), n=st.integers(1, 3))
def test_layernorm_chw_is_layernorm_over_c_h_w_with_a_per_channel_affine(c, h, w, n):
    chw = get_norm_layer("layernorm-chw")(c).double()
    assert (chw.num_groups, chw.num_channels) == (1, c)
    gen = torch.Generator().manual_seed(c * 100 + h * 10 + w)
    with torch.no_grad():
        chw.weight.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
        chw.bias.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64) * 3 + 1
    plain = nn.functional.layer_norm(x, (c, h, w), eps=chw.eps)  # the oracle: torch's LayerNorm((C, H, W))
    expected = plain * chw.weight[:, None, None] + chw.bias[:, None, None]
    torch.testing.assert_close(chw(x), expected)


def test_groupnorm_default_groups_and_explicit_groups():
    assert get_norm_layer("groupnorm")(48).num_groups == 24
    assert get_norm_layer("groupnorm")(64, num_groups=8).num_groups == 8


def test_stacked_twins_only_for_trailing_layernorm_and_rmsnorm():
    stacked = {cls for cls in (nn.LayerNorm, nn.RMSNorm, N.LayerNorm, N.RMSNorm, N.LayerNorm2d, N.RMSNorm2d,
                               N.BatchNorm2d, N.GroupNorm) if class_facts(cls).stacked}
    assert stacked == {nn.LayerNorm, nn.RMSNorm, N.LayerNorm, N.RMSNorm}
    assert class_facts(nn.BatchNorm2d) is None  # facts are per exact registered class
    assert is_norm_class(nn.BatchNorm2d) and is_norm_class(nn.SyncBatchNorm)  # norms by inheritance
