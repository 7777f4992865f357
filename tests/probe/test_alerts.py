"""Anomaly alerts: each anomaly injected into a real training run is flagged at its step and layer, and a
clean run of the same model raises none."""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from normlab.probe import Probe
from normlab.probe.alerts import ALERT_COLUMNS, AlertRules, find_alerts

STEPS = 16
INJECT_AT = 10


def _model():
    """Names whose alphabetical order is not the forward order (act < embed < head < norm)."""
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(embed=nn.Linear(4, 16), norm=nn.LayerNorm(16), act=nn.ReLU(),
                                     head=nn.Linear(16, 1)))


def _bn_model():
    """BatchNorm on the raw inputs: its channel-averaged batch mean is the inputs' offset."""
    torch.manual_seed(0)
    return nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))


def _data(step, shift=0.0):
    g = torch.Generator().manual_seed(step)
    return torch.randn(32, 4, generator=g) + shift, torch.randn(32, 1, generator=g)


def _train(model=None, *, lr=1e-2, loss_scale=None, hook=None, shift=0.0, **probe_kwargs):
    """STEPS Adam steps with a probe; ``loss_scale(step)`` multiplies the loss, ``hook(step)`` may return a
    forward hook installed for that step only. Returns the probe's alert table."""
    model = model or _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    with Probe(model, optimizer, alerts=True, **probe_kwargs) as probe:
        for step in range(STEPS):
            x, y = _data(step, shift)
            handle = hook(step) if hook else None
            loss = nn.functional.mse_loss(model(x), y) * (loss_scale(step) if loss_scale else 1.0)
            if handle is not None:
                handle.remove()
            probe.record_loss(loss)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return probe.alerts()


def _only(alerts, kind):
    assert list(alerts.columns) == list(ALERT_COLUMNS)
    return alerts[alerts["alert"] == kind]


def test_a_clean_run_raises_no_alert():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        alerts = _train()
    assert alerts.empty, alerts
    assert not [w for w in caught if "normlab.probe alert" in str(w.message)]


def test_loss_and_gradient_norm_spikes_are_flagged_at_their_step():
    with pytest.warns(UserWarning, match="normlab.probe alert: loss_spike at step 10"):
        alerts = _train(loss_scale=lambda step: 1000.0 if step == INJECT_AT else 1.0)
    assert list(_only(alerts, "loss_spike")["step"]) == [INJECT_AT]
    assert list(_only(alerts, "grad_norm_spike")["step"]) == [INJECT_AT]


def test_non_finite_names_the_first_module_that_produced_it():
    model = _model()

    def poison(step):  # the LayerNorm's input turns NaN at one step (an overflow there); all after it follows
        if step != INJECT_AT:
            return None
        return model.norm.register_forward_pre_hook(lambda m, a: (a[0].index_fill(0, torch.tensor([0]), math.nan),))

    with pytest.warns(UserWarning, match="non_finite"):
        alerts = _train(model, hook=poison)
    bad = _only(alerts, "non_finite")
    assert INJECT_AT in set(bad["step"])
    first = bad[bad["step"] == INJECT_AT].iloc[0]
    assert first["name"] == "norm"  # the LayerNorm (its input), not the ReLU or Linear after it
    assert "then" in first["message"]


def test_dead_units_after_a_bias_that_switches_every_relu_off():
    model = _model()
    with torch.no_grad():
        model.norm.bias.fill_(-100.0)  # LayerNorm output ~ -100: the ReLU outputs zeros only
    with pytest.warns(UserWarning, match="dead_units"):
        alerts = _train(model, lr=1e-4)
    dead = _only(alerts, "dead_units")
    assert list(dead["name"]) == ["act"] and list(dead["step"]) == [AlertRules().patience - 1]


@pytest.mark.parametrize(("lr", "side"), [(1e-9, "low"), (0.5, "high")])
def test_update_ratio_out_of_band(lr, side):
    with pytest.warns(UserWarning, match="update_ratio"):
        alerts = _train(lr=lr)
    ratio = _only(alerts, "update_ratio")
    assert "embed.weight" in set(ratio["name"]) and not any(n.endswith("bias") for n in ratio["name"])
    low, high = AlertRules().ratio_band
    assert (ratio["value"] < low).all() if side == "low" else (ratio["value"] > high).all()
    assert _only(alerts, "non_finite").empty  # an update that rounds to 0 (ratio -inf) is not a non-finite value


def test_a_tensor_that_stops_moving_is_below_the_band_not_non_finite():
    assert AlertRules().patience <= 4
    table = pd.DataFrame({"step": range(6), "member": 0, "name": "w", "kind": "update", "stat": "ratio",
                          "value": [-3.0, -3.0, -np.inf, -np.inf, -np.inf, -np.inf]})
    found = find_alerts(table)
    assert list(found["alert"]) == ["update_ratio"] and found["step"].iloc[0] == 1 + AlertRules().patience
    assert "update std 0" in found["message"].iloc[0]


def test_running_stats_that_do_not_follow_the_batches():
    model = _bn_model()
    model[0].momentum = 0.0  # the running mean stays 0 while the inputs sit near 5
    with pytest.warns(UserWarning, match="running_stats_drift"):
        alerts = _train(model, shift=5.0)
    drift = _only(alerts, "running_stats_drift")
    assert set(drift["name"]) == {"0"} and drift["step"].iloc[0] == AlertRules().patience - 1
    model = _bn_model()  # torch's momentum 0.1: the running mean warms up towards 5, the gap shrinks: no alert
    assert _only(_train(model, shift=5.0), "running_stats_drift").empty
    model = _bn_model()
    model[0].momentum = 1.0  # the running mean is the last batch's: no alert
    assert _only(_train(model, shift=5.0), "running_stats_drift").empty


def test_find_alerts_on_a_stored_table_and_rule_checks():
    table = pd.DataFrame({"step": [0], "member": [0], "name": ["x"], "kind": ["grad"], "stat": ["norm"],
                          "value": [1.0]})
    assert find_alerts(table).empty
    with pytest.raises(ValueError, match="lacks columns"):
        find_alerts(table.drop(columns="value"))
    with pytest.raises(ValueError, match="spike_factor"):
        AlertRules(spike_factor=1.0)
    with pytest.raises(ValueError, match="ratio_band"):
        AlertRules(ratio_band=(-1.0, -5.0))


def test_recorded_losses_are_rows_of_the_table_and_their_shape_is_checked():
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    recorded = {}
    with Probe(model, optimizer, flush_every=3) as probe:
        for step in range(7):
            x, y = _data(step)
            losses = [nn.functional.mse_loss(model(x[:16]), y[:16]), nn.functional.mse_loss(model(x[16:]), y[16:])]
            for loss in losses:  # two micro-batches: the mean is recorded
                probe.record_loss(loss)
                loss.backward()
            recorded[step] = sum(loss.item() for loss in losses) / 2
            optimizer.step()
            optimizer.zero_grad()
        with pytest.raises(ValueError, match=r"loss must have 1 \(as before\) element"):
            probe.record_loss(torch.ones(2))
    table = probe.scalars()
    rows = table[(table.kind == "global") & (table.name == "loss")]
    assert dict(zip(rows.step, rows.value, strict=True)) == pytest.approx(recorded)
    assert not probe._losses  # every flushed step's loss moved to the host
