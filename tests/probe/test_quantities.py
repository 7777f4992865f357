"""Statistics are quantities (normlab/probe/quantities/): a user adds one through Probe(quantities=...)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from probe_oracle import PATHS, Lookup, NaiveOracle, seed000_data, seed000_ln_model
from torch import nn

from normlab.probe import Probe
from normlab.probe.quantities import DEFAULT_QUANTITIES, GradStats, Quantity, UpdateStats


class WeightMeanSquare(Quantity):
    kind = "weight"
    source = "weight"
    stats = ("mean_square",)

    def compute(self, sources):
        weight = sources["weight"]
        return (weight.var + weight.mean**2)[:, None, :], weight.present[:, None, :]


class OutputSpread(Quantity):  # kind None: the outputs' own kinds (activation, norm_in, norm_out)
    kind = None
    source = "outputs"
    stats = ("spread",)
    segment_major = True

    def compute(self, sources):
        outputs = sources["outputs"]
        return (outputs.absmax / outputs.std)[:, None, :], outputs.present[:, None, :]


@pytest.mark.parametrize("path", list(PATHS))
def test_an_added_quantity_equals_its_naive_computation_on_every_path(path):
    model = seed000_ln_model()
    x, y = seed000_data()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    oracle = NaiveOracle(model)
    weights, outputs = [], []
    quantities = [*DEFAULT_QUANTITIES, WeightMeanSquare(), OutputSpread()]
    with Probe(model, optimizer, flush_every=3, policy=PATHS[path], quantities=quantities) as probe:
        for _ in range(4):
            nn.functional.mse_loss(model(x).squeeze(-1), y).backward()
            oracle.before_step()
            weights.append(oracle.weights)
            outputs.append(dict(oracle.outputs))
            optimizer.step()
            optimizer.zero_grad()
    find = Lookup(probe.scalars())
    for step in range(4):
        for name, w in weights[step].items():
            assert find(step=step, name=name, kind="weight", stat="mean_square") == pytest.approx(
                w.pow(2).mean().item(), rel=1e-9)
        out = outputs[step]["1"]
        assert find(step=step, name="1", kind="activation", stat="spread") == pytest.approx(
            (out.abs().max() / out.std(unbiased=False)).item(), rel=1e-9)
        assert find.has(step=step, name="3", kind="norm_out", stat="spread")


def test_a_quantity_left_out_leaves_its_records_out():
    model = seed000_ln_model()
    x, y = seed000_data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with Probe(model, optimizer, quantities=[GradStats(), UpdateStats()]) as probe:
        nn.functional.mse_loss(model(x).squeeze(-1), y).backward()
        optimizer.step()
    table = probe.scalars()
    assert set(table.kind.astype(str)) == {"grad", "update"}
    assert np.isfinite(table.value).all()


def test_quantities_are_checked():
    model = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="quantities must be a list of Quantity"):
        Probe(model, quantities=GradStats())
    with pytest.raises(TypeError, match="must be Quantity instances"):
        Probe(model, quantities=[GradStats, UpdateStats()])

    class Nowhere(WeightMeanSquare):
        source = "activations"

    with pytest.raises(ValueError, match="reads source 'activations'; sources: outputs, update"):
        Probe(model, quantities=[Nowhere()])

    class Twice(WeightMeanSquare):
        stats = ("mean",)

    with pytest.raises(ValueError, match="both record stat 'mean'"):
        Probe(model, quantities=[*DEFAULT_QUANTITIES, Twice()])
