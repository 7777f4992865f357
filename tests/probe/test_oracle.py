"""Every scalar statistic equals a naive per-tensor computation on the same model and step."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from probe_oracle import (
    PATHS,
    Lookup,
    NaiveOracle,
    bn_relu_model,
    naive_summary,
    seed000_data,
    seed000_ln_model,
)
from torch import nn

from normlab.probe import Probe, hooks
from normlab.probe.moments import activation_moments
from normlab.probe.quantities import SegmentMoments
from normlab.probe.quantities.outputs import output_stats

RTOL = 1e-9


def _train_with_oracle(model, x, y, steps, probe_kwargs):
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.01)
    oracle = NaiveOracle(model)
    snapshots = []
    with Probe(model, optimizer, **probe_kwargs) as probe:
        for _ in range(steps):
            loss = nn.functional.mse_loss(model(x).squeeze(-1), y)
            loss.backward()
            oracle.before_step()
            optimizer.step()
            oracle.after_step()
            snapshots.append((dict(oracle.outputs), dict(oracle.inputs), oracle.grads, oracle.weights,
                              oracle.updates, oracle.running))
            optimizer.zero_grad()
    return probe, snapshots


def _close(actual, expected, rtol=RTOL, atol=1e-12):
    assert math.isclose(actual, expected, rel_tol=rtol, abs_tol=atol), (actual, expected)


@pytest.mark.parametrize(("flush_every", "path"),
                         [(1, "segments"), (3, "split"), (64, "hook"), (3, "deferred"), (64, "deferred")])
def test_seed000_statistics_equal_naive_per_tensor_computation(flush_every, path):
    model = seed000_ln_model()
    x, y = seed000_data()
    probe, snapshots = _train_with_oracle(model, x, y, steps=5,
                                          probe_kwargs={"flush_every": flush_every, "policy": PATHS[path]})
    table = probe.scalars()
    find = Lookup(table)
    assert sorted(table["step"].unique()) == [0, 1, 2, 3, 4]
    assert set(table["member"]) == {0}
    for step, (outputs, inputs, grads, weights, updates, _) in enumerate(snapshots):
        for name, output in outputs.items():
            is_norm = isinstance(model[int(name)], nn.LayerNorm)
            kinds = {"norm_out": output, "norm_in": inputs[name]} if is_norm else {"activation": output}
            for kind, tensor in kinds.items():
                expected = naive_summary(tensor)
                for stat in ("mean", "std", "rms", "absmax", "zero_frac"):
                    _close(find(step=step, name=name, kind=kind, stat=stat), expected[stat])
        for name in grads:
            for kind, tensor in (("grad", grads[name]), ("weight", weights[name])):
                expected = naive_summary(tensor)
                for stat in ("norm", "mean", "std", "absmax"):
                    _close(find(step=step, name=name, kind=kind, stat=stat), expected[stat])
            update = naive_summary(updates[name])
            _close(find(step=step, name=name, kind="update", stat="norm"), update["norm"])
            _close(find(step=step, name=name, kind="update", stat="std"), update["std"])
            weight_std = weights[name].std(unbiased=False).item()
            ratio = {"step": step, "name": name, "kind": "update", "stat": "ratio"}
            if weight_std == 0:  # LayerNorm gain and bias at init: the ratio is undefined, left out
                assert not find.has(**ratio)
            else:
                _close(find(**ratio), math.log10(update["std"] / weight_std), rtol=1e-8)
        global_norm = math.sqrt(sum(g.double().norm().item() ** 2 for g in grads.values()))
        _close(find(step=step, name="model", kind="global", stat="grad_norm"), global_norm)


@pytest.mark.parametrize("path", ["segments", "split", "deferred"])
def test_running_stats_and_zero_fraction_equal_naive(path):
    model = bn_relu_model()
    torch.manual_seed(2)
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    probe, snapshots = _train_with_oracle(model, x, y, steps=4, probe_kwargs={"policy": PATHS[path]})
    table = probe.scalars()
    find = Lookup(table)
    relu_zero = [find(step=s, name="2", kind="activation", stat="zero_frac") for s in range(4)]
    assert relu_zero == pytest.approx([naive_summary(snap[0]["2"])["zero_frac"] for snap in snapshots])
    assert 0 < relu_zero[0] < 1  # the oracle is exercised on a tensor that has zeros
    for step, snap in enumerate(snapshots):
        running = snap[5]
        for name, value in running.items():
            _close(find(step=step, name=name, kind="running_stats", stat="mean"), value.mean().item())
            _close(find(step=step, name=name, kind="running_stats", stat="rms"),
                   value.pow(2).mean().sqrt().item())
            drift = {"step": step, "name": name, "kind": "running_stats", "stat": "drift"}
            if step == 0:
                assert not find.has(**drift)  # no previous value to drift from
            else:
                previous = snapshots[step - 1][5][name]
                _close(find(**drift), (value - previous).pow(2).mean().sqrt().item())


def test_float32_model_matches_float64_oracle_to_float32_precision():
    model = seed000_ln_model(torch.float32)
    x, y = seed000_data(torch.float32)
    probe, snapshots = _train_with_oracle(model, x, y, steps=2, probe_kwargs={})
    table = probe.scalars()
    find = Lookup(table)
    _, _, grads, weights, _, _ = snapshots[1]
    for name in grads:
        _close(find(step=1, name=name, kind="grad", stat="std"), naive_summary(grads[name])["std"],
               rtol=1e-5, atol=1e-9)
        # LayerNorm gains sit near 1 with a tiny spread: two-pass moments keep the std accurate
        _close(find(step=1, name=name, kind="weight", stat="std"), naive_summary(weights[name])["std"],
               rtol=1e-4, atol=1e-7)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    scale=st.sampled_from([1e-6, 1.0, 1e4]),
    offset=st.sampled_from([0.0, 1.0, -1e3]),
    zeros=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_activation_moments_match_naive(shape, scale, offset, zeros, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=generator, dtype=torch.float64) * scale + offset
    x[torch.rand(*shape, generator=generator) < zeros] = 0.0
    stats = output_stats(SegmentMoments.from_raw(activation_moments(x, 1).numpy()[:, :, None]))[0, :, 0]
    expected = naive_summary(x)
    for i, stat in enumerate(("mean", "std", "rms", "absmax", "zero_frac")):
        assert stats[i] == pytest.approx(expected[stat], rel=1e-9, abs=1e-12 * max(scale, abs(offset))), stat


def test_unused_parameter_gradient_is_absent_not_zero():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    unused = nn.Linear(1, 1)
    model.add_module("unused", unused)
    model.forward = lambda x: model[1](model[0](x))  # `unused` never runs: its grad stays None
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with Probe(model, optimizer) as probe:
        model(torch.randn(4, 2)).sum().backward()
        optimizer.step()
    table = probe.scalars()
    find = Lookup(table)
    assert len(table[(table.name == "unused.weight") & (table.kind == "grad")]) == 0
    assert len(table[(table.name == "unused.weight") & (table.kind == "weight")]) == 4
    assert np.isfinite(find(step=0, name="model", kind="global", stat="grad_norm"))


def test_output_changed_in_place_after_its_hook_is_never_misreported():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(inplace=True), nn.Linear(8, 1)).double()
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    probe, snapshots = _train_with_oracle(model, x, y, steps=3, probe_kwargs={})
    find = Lookup(probe.scalars())
    # The oracle's clone of Linear 0's output is taken before ReLU overwrites it in place.
    assert not find.has(step=0, name="0", kind="activation", stat="mean")  # detected, dropped once
    for step in (1, 2):  # then reduced in the hook, before the in-place change
        expected = naive_summary(snapshots[step][0]["0"])
        for stat in ("mean", "std", "absmax", "zero_frac"):
            _close(find(step=step, name="0", kind="activation", stat=stat), expected[stat])
    assert find(step=2, name="1", kind="activation", stat="zero_frac") > 0


def test_large_outputs_are_summarized_from_a_sample():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(300, 300), nn.ReLU()).double()  # outputs of 90,000 elements: sampled
    x = torch.randn(300, 300, dtype=torch.float64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with Probe(model, optimizer, histograms=True, bins=16) as probe:
        outputs = [model[0](x).detach()]
        model(x).pow(2).mean().backward()
        optimizer.step()
    find = Lookup(probe.scalars())
    exact = naive_summary(outputs[0])
    assert find(step=0, name="0", kind="activation", stat="mean") == pytest.approx(exact["mean"], abs=0.05 * exact["std"])
    assert find(step=0, name="0", kind="activation", stat="std") == pytest.approx(exact["std"], rel=0.05)
    assert find(step=0, name="1", kind="activation", stat="zero_frac") == pytest.approx(0.5, abs=0.03)
    hist = probe.histograms()
    assert hist[(hist.kind == "activation") & (hist.name == "0")]["count"].sum() == hooks.SAMPLE_ABOVE_ELEMENTS  # the sample
    # parameters are never sampled
    assert hist[(hist.kind == "weight") & (hist.name == "0.weight")]["count"].sum() == 90_000
