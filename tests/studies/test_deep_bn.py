"""deep-bn: the model, per-layer numbers against a hand-written oracle, overflow as data, growth-rate fit."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from normlab.engine.spec import CellContext, StoredRun
from normlab.studies.deep_bn import (
    YANG_RELU_RATE,
    Config,
    DeepBn,
    build,
    factors,
    no_data_reason,
    run_seed,
)

STUDY = DeepBn()



def test_model_is_the_usual_setup():
    linears, norms = build(Config(), "default", bn=True)
    assert len(linears) == 100 and all(m.bias is None and m.weight.shape == (256, 256) for m in linears)
    assert all(isinstance(n, nn.BatchNorm1d) and n.num_features == 256 for n in norms)
    _, plain = build(Config(depth=3), "default", bn=False)
    assert all(isinstance(n, nn.Identity) for n in plain)
    lin, _ = build(Config(depth=1), "normal", bn=False)
    assert 0.9 < float(lin[0].weight.detach().std()) < 1.1
    lin, _ = build(Config(depth=1), "kaiming", bn=False)
    assert float(lin[0].weight.detach().std()) == pytest.approx(math.sqrt(2 / 256), rel=0.05)


@pytest.mark.parametrize(("init", "bn"), [("kaiming", True), ("default", False)])
def test_per_layer_numbers_match_a_hand_written_oracle(init, bn):
    """Rebuild the same weights, run the math with plain tensor ops and autograd, compare."""
    c = Config(depth=6, width=12, batch=5)
    got = run_seed(c, init, bn, c.batch, seed=3)
    torch.manual_seed(3)
    linears, _ = build(c, init, bn)
    weights = [lin.weight.detach().double().requires_grad_() for lin in linears]
    x, g = torch.randn(c.batch, c.width).double(), torch.randn(c.batch, c.width).double()
    h, stds = x, []
    for w in weights:
        z = h @ w.T
        if bn:  # training-mode BN, weight 1, bias 0: biased batch variance, eps 1e-5
            z = (z - z.mean(0)) / torch.sqrt(z.var(0, correction=0) + 1e-5)
        h = torch.relu(z)
        stds.append(float(h.detach().std()))
    grads = torch.autograd.grad((h * g).sum(), weights)
    np.testing.assert_allclose(got["act_std"], stds, rtol=1e-4)
    np.testing.assert_allclose(got["grad_w"], [float(gr.norm()) for gr in grads], rtol=1e-3)
    assert got["overflow_layer"] is None


def test_overflow_is_recorded_not_raised():
    c = Config(depth=45)
    r = run_seed(c, "normal", False, c.batch, seed=0)  # std grows ~11x per layer: float32 overflows near 34
    assert r["overflow_layer"] is not None and 25 < r["overflow_layer"] < 45
    assert len(r["act_std"]) == r["overflow_layer"] - 1 and all(math.isfinite(v) for v in r["act_std"])
    assert r["grad_w"] == []  # no backward through infinities


def test_growth_factor_fit_recovers_a_known_rate():
    c = Config(depth=40, fit_skip=5)
    rows = [(s, k, "grad_w", 1.3 ** (c.depth - k) * (1 + 0.01 * s)) for s in range(3) for k in range(1, c.depth + 1)]
    m = pd.DataFrame(rows, columns=["seed", "step", "metric", "value"]).assign(arm="bn/default")
    np.testing.assert_allclose(factors(m, "bn/default", "grad_w", c, backward=True), 1.3, rtol=1e-9)
    rows = [(0, k, "act_std", 2.0**k) for k in range(1, 20)]  # overflowed at 20: fit the finite part
    m = pd.DataFrame(rows, columns=["seed", "step", "metric", "value"]).assign(arm="plain/normal")
    np.testing.assert_allclose(factors(m, "plain/normal", "act_std", c, backward=False), 2.0, rtol=1e-9)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> StoredRun:
    c = Config(depth=40, seeds=4, fit_skip=5, control_batches=())
    tmp = tmp_path_factory.mktemp("deep")
    frames = []
    for cell in STUDY.cells(c):
        res = STUDY.run_cell(c, CellContext(cell, torch.device("cpu"), tmp, None))
        frames.append(res.metrics.assign(arm=cell.arm, **cell.param_dict))
    return StoredRun(c, pd.concat(frames, ignore_index=True), pd.DataFrame(), pd.DataFrame(), {}, Path(tmp))


def test_metrics_never_store_nan(small_run):
    assert np.isfinite(small_run.metrics["value"]).all()
    overflow = small_run.metrics[(small_run.metrics["metric"] == "overflow_layer")]
    assert set(overflow["arm"]) == {"plain/normal"} and len(overflow) == 4


def test_claims_follow_the_data(small_run):
    verdicts = {c.id: c.verdict for c in STUDY.claims(small_run)}
    assert verdicts["bn-std-stable"] == "supported"
    assert verdicts["plain-default-vanishes"] == "supported"
    assert verdicts["plain-normal-explodes"] == "supported"
    assert verdicts["bn-grad-grows"] == "supported"
    bn = factors(small_run.metrics, "bn/kaiming", "grad_w", small_run.config, backward=True)
    assert 1.1 < bn.mean() < 1.4  # batch 16: a little above Yang's large-batch 1.21
    assert YANG_RELU_RATE == pytest.approx(1.2111, abs=1e-4)


def test_figures_say_why_a_line_is_missing(small_run):
    figs = STUDY.figures(small_run)
    assert [f.name for f in figs] == ["per_layer_act_std", "per_layer_grad_w", "growth_factors"]
    labels = [t.get_text() for ax in figs[1].figure.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert any("overflowed" in t for t in labels)  # plain/normal has no gradient: the legend says so
    for f in figs:
        plt.close(f.figure)


def test_underflowed_gradients_are_named_not_dropped():
    table = pd.DataFrame([[0.0, 0.0], [0.0, 0.0]], index=[0, 1], columns=[1, 2])
    assert "exactly 0" in no_data_reason(pd.DataFrame(columns=["arm", "metric"]), "plain/default", "grad_w", table)
    assert no_data_reason(pd.DataFrame(columns=["arm", "metric"]), "x", "grad_w", table + 1.0) == ""


def test_bad_init_is_named():
    with pytest.raises(ValueError, match="inits"):
        STUDY.check_config(Config(inits=("xavier",)))
