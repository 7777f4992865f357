"""A vectorized ensemble reports, per member, exactly what each member reports when trained alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from probe_oracle import PATHS
from torch import nn

from normlab.probe import Probe

MEMBERS = 3


class StackedLinear(nn.Module):
    """``members`` independent Linear layers in one: weight ``(N, out, in)``, input ``(N, batch, in)``."""

    def __init__(self, members: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features, dtype=torch.float64))
        self.bias = nn.Parameter(torch.empty(members, out_features, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias[:, None, :], x, self.weight.transpose(1, 2))  # (N, B, out)


def _members_and_ensemble():
    torch.manual_seed(0)
    singles = [nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1)).double() for _ in range(MEMBERS)]
    ensemble = nn.Sequential(StackedLinear(MEMBERS, 2, 8), nn.ReLU(), StackedLinear(MEMBERS, 8, 1))
    ensemble.ensemble_size = MEMBERS
    with torch.no_grad():
        for index in (0, 2):
            ensemble[index].weight.copy_(torch.stack([s[index].weight for s in singles]))
            ensemble[index].bias.copy_(torch.stack([s[index].bias for s in singles]))
    return singles, ensemble


def _train(model, x, y, steps=3, policy=None):
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    with Probe(model, optimizer, histograms=True, bins=16, policy=policy) as probe:
        for _ in range(steps):
            # the ensemble's loss is the sum of the members' losses, so each member gets its own gradient
            out = model(x)
            loss = ((out.squeeze(-1) - y) ** 2).mean(dim=-1).sum()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return probe


@pytest.mark.parametrize("path", ["deferred", "segments", "hook", "split"])
def test_per_member_statistics_equal_each_member_trained_alone(path):
    policy = PATHS[path]
    singles, ensemble = _members_and_ensemble()
    torch.manual_seed(1)
    x, y = torch.randn(10, 2, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    together = _train(ensemble, x.expand(MEMBERS, -1, -1), y, policy=policy)
    scalars, histograms = together.scalars(), together.histograms()
    assert sorted(scalars.member.unique()) == list(range(MEMBERS))
    keys = ["step", "name", "kind", "stat"]
    for member, single in enumerate(singles):
        alone = _train(single, x, y, policy=policy)
        expected = alone.scalars().astype({"name": str, "kind": str, "stat": str})
        actual = scalars[scalars.member == member].astype({"name": str, "kind": str, "stat": str})
        merged = pd.merge(expected, actual, on=keys, suffixes=("_alone", "_ensemble"), how="outer")
        assert len(merged) == len(expected) == len(actual)
        np.testing.assert_allclose(merged.value_ensemble, merged.value_alone, rtol=1e-9, atol=1e-12)
        alone_h = alone.histograms()
        ens_h = histograms[histograms.member == member]
        np.testing.assert_array_equal(ens_h["count"].to_numpy(), alone_h["count"].to_numpy())
        assert (ens_h.name.astype(str).to_numpy() == alone_h.name.astype(str).to_numpy()).all()


def test_members_argument_overrides_and_shapes_are_checked():
    _, ensemble = _members_and_ensemble()
    with pytest.raises(ValueError, match=r"parameter '0.weight' has shape \(3, 8, 2\).*ensemble of 2"):
        Probe(ensemble, members=2)
    with pytest.raises(ValueError, match="members must be a positive int"):
        Probe(ensemble, members=0)
    merged = nn.Sequential(StackedLinear(MEMBERS, 2, 8), nn.Flatten(0, 1))  # (N, B, 8) -> (N * B, 8)
    merged.ensemble_size = MEMBERS
    with Probe(merged):  # members from ensemble_size
        with pytest.raises(ValueError, match=r"module '1' gave a tensor of shape \(30, 8\).*\(3, batch, ...\)"):
            merged(torch.randn(MEMBERS, 10, 2, dtype=torch.float64))
