"""Which modules the probe treats as norms (norm_in/norm_out rows): decided by class through the norm
registry, never by a "Norm" in the class name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import normlab.nn as N
from normlab.nn.surgery import _families, freeze_batchnorm, register_norm_class
from normlab.probe.hooks import is_norm_layer


class NormalizedLinear(nn.Linear):
    """A linear layer with "Norm" in its name: not a normalization layer."""


class BatchNormish(nn.Module):  # neither a torch norm subclass nor registered
    def forward(self, x):
        return x


class MyRMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


@pytest.fixture
def registered_rmsnorm():
    register_norm_class(MyRMSNorm, "rmsnorm", read=lambda m: {"normalized_shape": tuple(m.weight.shape)})
    yield MyRMSNorm
    _families._REGISTERED.pop(MyRMSNorm)


@pytest.mark.parametrize("module", [
    nn.BatchNorm2d(4), nn.SyncBatchNorm(4), nn.LayerNorm(4), nn.GroupNorm(2, 4), nn.InstanceNorm1d(4), nn.RMSNorm(4),
    N.BatchNorm1d(4), N.LayerNorm(4), N.LayerNorm2d(4), N.RMSNorm(4), N.RMSNorm2d(4), N.GroupNorm(2, 4),
    N.FrozenBatchNorm2d(4),
], ids=lambda m: f"{type(m).__module__.split('.')[0]}.{type(m).__name__}")
def test_torch_and_normlab_norms_count(module):
    assert is_norm_layer(module)


def test_names_do_not_decide():
    assert not is_norm_layer(NormalizedLinear(2, 2))
    assert not is_norm_layer(BatchNormish())
    assert not is_norm_layer(nn.Linear(2, 2))


def test_surgery_frozen_batchnorm_counts():
    model = nn.Sequential(nn.BatchNorm2d(3).eval())
    freeze_batchnorm(model)
    assert type(model[0]).__name__ == "FrozenBatchNorm" and is_norm_layer(model[0])


def test_registered_third_party_norm_counts(registered_rmsnorm):
    assert is_norm_layer(registered_rmsnorm(4))


def test_unregistered_third_party_norm_does_not_count():
    assert not is_norm_layer(MyRMSNorm(4))


def test_known_by_path_llama_rmsnorm_counts():
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    assert is_norm_layer(llama.LlamaRMSNorm(8))
