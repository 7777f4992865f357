"""The probe on ``torch.compile``d third-party models: training works, the probe adds no graph break,
and the statistics equal those of the same steps run eagerly.

The graph breaks are counted by Dynamo (``torch._dynamo.utils.counters["graph_break"]``), the same with
any backend, so the quick test compiles with ``backend="eager"`` (Dynamo's graphs run op by op, without
Inductor's code generation); the slow one runs Inductor.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo as dynamo
from torch._dynamo.utils import counters

from normlab.probe import Probe
from third_party_models import batch, gpt2, llama

STEPS = 3


def _train(build, name, *, probe: bool, backend: str | None, histograms=False):
    """(graph breaks, probe or None) after STEPS training steps of a fresh model."""
    dynamo.reset()
    counters.clear()
    model = build().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    forward = torch.compile(model, backend=backend) if backend is not None else model
    attached = Probe(model, optimizer, histograms=histograms) if probe else None
    try:
        for step in range(STEPS):
            forward(**batch(name, step)).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        if attached is not None:
            attached.close()
    return sum(counters["graph_break"].values()), attached


def _assert_same_tables(compiled: Probe, eager: Probe, rtol: float):
    keys = ["step", "member", "name", "kind", "stat"]
    a = compiled.scalars().astype({"name": str, "kind": str, "stat": str}).sort_values(keys).reset_index(drop=True)
    e = eager.scalars().astype({"name": str, "kind": str, "stat": str}).sort_values(keys).reset_index(drop=True)
    assert len(a) == len(e) and a[keys].equals(e[keys])  # the same rows: every hook ran under compile
    # relative to the value, or to the largest statistic of the same tensor (a mean near 0, such as the
    # mean of a softmax-output gradient, which sums to 0, has no digits of its own to be relative to)
    series = e.assign(size=e["value"].abs()).groupby(["name", "kind"], observed=True)["size"]
    scale = e["value"].abs() + series.transform("max")
    gap = (a["value"] - e["value"]).abs()
    bad = gap > rtol * scale
    assert not bad.any(), e.assign(compiled=a["value"], gap=gap)[bad].to_string()


@pytest.mark.parametrize("histograms", [False, True], ids=["scalars", "histograms"])
def test_probe_adds_no_graph_break_and_records_the_eager_numbers(histograms):
    plain_breaks, _ = _train(llama, "llama", probe=False, backend="eager")
    probe_breaks, compiled = _train(llama, "llama", probe=True, backend="eager", histograms=histograms)
    assert probe_breaks == plain_breaks == 0
    _, eager = _train(llama, "llama", probe=True, backend=None, histograms=histograms)
    _assert_same_tables(compiled, eager, rtol=1e-6)
    if histograms:
        assert compiled.histograms()["count"].equals(eager.histograms()["count"])


@pytest.mark.slow
def test_gpt2_probe_adds_no_graph_break():
    plain_breaks, _ = _train(gpt2, "gpt2", probe=False, backend="eager")  # transformers' own (logging)
    probe_breaks, _ = _train(gpt2, "gpt2", probe=True, backend="eager", histograms=True)
    assert probe_breaks == plain_breaks


@pytest.mark.slow
def test_inductor_compiled_llama_trains_with_the_probe(monkeypatch):
    # torch 2.13: after a compile of the same model without the probe, AOTAutograd's cache replays stale
    # view metadata into the probed graph ("invalid shape dimension -1298424774751616222"; the family of
    # pytorch#177812 and #185630). Without that cache, or in a process that compiled it only with the
    # probe attached, it trains; docs/probe-on-your-model.md says so.
    monkeypatch.setattr("torch._functorch.config.enable_autograd_cache", False)
    plain_breaks, _ = _train(llama, "llama", probe=False, backend="inductor")
    probe_breaks, compiled = _train(llama, "llama", probe=True, backend="inductor", histograms=True)
    assert probe_breaks == plain_breaks == 0
    _, eager = _train(llama, "llama", probe=True, backend=None, histograms=True)
    _assert_same_tables(compiled, eager, rtol=1e-5)  # Inductor fuses and reorders float32 arithmetic
