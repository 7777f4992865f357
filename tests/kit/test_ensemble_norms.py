"""Norm layers in stacked ensembles: the registry's LayerNorm/RMSNorm (torch's and normlab's) take the
stacked fast path, and each member of the ensemble trains as an independent run (oracle: plain loops)."""

import pytest
import torch
from torch import nn

import normlab.nn as N
from normlab.kit.ensemble import (
    StackedLayerNorm,
    StackedRMSNorm,
    VmapEnsemble,
    make_ensemble,
    member_losses,
    unstack_member,
)

X = torch.linspace(-2, 2, 12).reshape(6, 2)
Y = torch.sin(X.sum(1))
NORMS = {"normlab-layernorm": lambda: N.LayerNorm(8), "normlab-rmsnorm": lambda: N.RMSNorm(8),
         "torch-rmsnorm": lambda: nn.RMSNorm(8), "normlab-layernorm-nobias": lambda: N.LayerNorm(8, bias=False)}
TWINS = {"normlab-layernorm": StackedLayerNorm, "normlab-rmsnorm": StackedRMSNorm, "torch-rmsnorm": StackedRMSNorm,
         "normlab-layernorm-nobias": StackedLayerNorm}


def _net(norm):
    return nn.Sequential(nn.Linear(2, 8), norm(), nn.Tanh(), nn.Linear(8, 1))


def _train(model, steps, loss_fn):
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        loss_fn(model).backward()
        opt.step()
        opt.zero_grad()
    return model


@pytest.mark.parametrize("kind", sorted(NORMS))
def test_registry_norms_stack_and_members_equal_independent_runs(kind):
    seeds = (0, 4, 9)
    ens = make_ensemble(lambda: _net(NORMS[kind]), seeds, allow_vmap=False)
    assert type(ens[1]) is TWINS[kind]
    _train(ens, 20, lambda m: member_losses(m(X).squeeze(-1), Y).sum())
    for i, seed in enumerate(seeds):
        torch.manual_seed(seed)
        ref = _train(_net(NORMS[kind]), 20, lambda m: nn.MSELoss()(m(X).squeeze(-1), Y)).state_dict()
        got = unstack_member(ens, i)
        assert got.keys() == ref.keys()
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-6)


def test_stacked_normlab_layernorm_recenters_large_means_as_its_members():
    """A mean 1e4 times the spread: normlab's LayerNorm recenters, torch's float32 kernel loses digits;
    the stacked twin of normlab's layer must give normlab's numbers."""
    members = [N.LayerNorm(16) for _ in range(2)]
    x = 1e4 + 1e-2 * torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(0))
    y = StackedLayerNorm.from_members(members)(x)
    for i, m in enumerate(members):
        torch.testing.assert_close(y[i], m(x[i]), rtol=0, atol=1e-5)


def test_channels_first_and_subclassed_norms_are_not_stacked_as_trailing_norms():
    class MyLayerNorm(nn.LayerNorm):  # may change forward: only registered classes, matched exactly, stack
        pass

    for norm in (lambda: N.LayerNorm2d(8), lambda: MyLayerNorm(8)):
        ens = make_ensemble(lambda norm=norm: nn.Sequential(nn.Linear(2, 8), norm()), (0, 1))
        assert isinstance(ens, VmapEnsemble)
