"""deep-bn: the model, per-layer numbers against a hand-written oracle, overflow as data, growth-rate fit; the
learning-rate sweep against torch's own modules and optimizer; every verdict flipped by synthetic data; a dead
network is inconclusive, not a crash."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
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
from normlab.studies.deep_bn.config import arms, train_arms
from normlab.studies.deep_bn.lr_claims import chance_loss, sign_claim
from normlab.studies.deep_bn.model import CLASSES, batch_order, build_mlp, train_seeds

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
    c = Config(depth=40, seeds=4, fit_skip=5, control_batches=(), train_inits=())
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


# -- the learning-rate sweep: the stacked trainer equals torch's modules and optimizer, seed by seed ----------

@pytest.mark.parametrize(("init", "bn"), [("kaiming", True), ("default", False), ("normal", True)])
def test_stacked_training_equals_independent_torch_runs(init, bn):
    c = Config(train_depth=3, train_width=8, train_batch=5, train_steps=6, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(23, 7, generator=gen), torch.randint(0, CLASSES, (23,), generator=gen)
    seeds, lr = (0, 5), 0.05
    got = train_seeds(c, init, bn, lr, seeds, x, y)
    for i, s in enumerate(seeds):
        torch.manual_seed(s)
        lins = build_mlp(c, init, x.shape[1])
        layers = []
        for lin in lins[:-1]:
            layers += [lin, *([nn.BatchNorm1d(c.train_width)] if bn else []), nn.ReLU()]
        net = nn.Sequential(*layers, lins[-1])
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=c.momentum)
        order = batch_order(len(y), c, s)
        want = []
        for t in range(c.train_steps):
            loss = nn.functional.cross_entropy(net(x[order[t]]), y[order[t]])
            opt.zero_grad()
            loss.backward()
            opt.step()
            want.append(float(loss.detach()))
        np.testing.assert_allclose(got[:, i].numpy(), want, rtol=2e-4, atol=1e-6)


def test_batches_are_epochs_of_a_seeded_shuffle():
    c = Config(train_batch=4, train_steps=5)
    order = batch_order(8, c, seed=3)
    assert order.shape == (5, 4)
    assert sorted(order[:2].flatten().tolist()) == list(range(8))  # the first 8 indices: one full epoch
    assert torch.equal(order, batch_order(8, c, seed=3)) and not torch.equal(order, batch_order(8, c, seed=4))


def test_sweep_cells_share_seeds_across_arms_and_rates():
    c = Config()
    sweep = [cell for cell in STUDY.cells(c) if "lr" in cell.param_dict]
    assert len(sweep) == len(c.train_inits) * 2 * len(c.lrs) == len(train_arms(c))
    assert {cell.seeds for cell in sweep} == {tuple(range(c.train_seeds))}
    assert {(cell.arm, cell.param_dict["lr"]) for cell in sweep} == {(a, lr) for a, _, _, lr in train_arms(c)}


@pytest.mark.parametrize(("change", "match"), [
    ({"lrs": (0.1, 0.01)}, "lrs: expected increasing"),
    ({"tail": 300}, "tail: expected <= train_steps"),
    ({"train_batch": 1}, "BatchNorm needs two samples"),
    ({"train_inits": ("xavier",)}, "train_inits"),
    ({"trains_below": 1.5}, "trains_below"),
])
def test_bad_sweep_config_is_rejected(change, match):
    with pytest.raises(ValueError, match=match):
        STUDY.check_config(Config(**change))


# -- synthetic runs: every verdict follows the data ---------------------------------------------------------

SYN = Config(depth=30, fit_skip=5, seeds=8, control_batches=(128,), train_seeds=12)
THEORY_FWD = {"plain/default": 0.41, "plain/normal": 11.0, "plain/kaiming": 1.0}
THEORY_BWD = {"plain/kaiming": 1.0}


def _init_rows(c: Config, fwd: dict[str, float], bwd: dict[str, float], sd: float = 0.002) -> list[dict]:
    """Per-layer act_std = f^k and grad_w = g^(depth-k), with f, g drawn per seed around the given factors
    (BN arms default to 1 forward and Yang's rate backward)."""
    rng = np.random.default_rng(0)
    rows = []
    for arm, init, bn, batch in arms(c):
        f0 = fwd.get(arm, 1.0)
        g0 = bwd.get(arm, YANG_RELU_RATE if bn else 1.0)
        for seed in range(c.seeds):
            f, g = f0 * (1 + rng.normal(0, sd)), g0 * (1 + rng.normal(0, sd))
            for k in range(1, c.depth + 1):
                base = {"arm": arm, "seed": seed, "step": k, "init": init, "bn": bn, "batch": batch}
                rows.append({**base, "metric": "act_std", "value": f**k})
                rows.append({**base, "metric": "grad_w", "value": g ** (c.depth - k)})
    return rows


def _sweep_rows(c: Config, lr_max: dict[tuple[bool, str], np.ndarray], best: dict[tuple[bool, str], np.ndarray]
                ) -> list[dict]:
    """Per seed and arm: final loss ``best`` at every rate up to the grid index ``lr_max`` (-1: none trains),
    stuck at chance one rate above it, diverged beyond."""
    rows = []
    for (bn, init), top in lr_max.items():
        arm = f"train/{'bn' if bn else 'plain'}/{init}"
        for seed in range(c.train_seeds):
            for i, lr in enumerate(c.lrs):
                base = {"arm": arm, "seed": seed, "step": c.train_steps, "init": init, "bn": bn,
                        "batch": c.train_batch, "lr": lr}
                diverged = i > top[seed] + 1
                rows.append({**base, "metric": "diverged", "value": float(diverged)})
                if not diverged:
                    loss = best[(bn, init)][seed] if i <= top[seed] else chance_loss()
                    rows.append({**base, "metric": "final_loss", "value": float(loss)})
    return rows


def _run(c: Config, rows: list[dict]) -> StoredRun:
    return StoredRun(c, pd.DataFrame(rows), pd.DataFrame(), pd.DataFrame(), {}, Path("."))


def _verdicts(run: StoredRun) -> dict[str, str]:
    return {cl.id: cl.verdict for cl in STUDY.claims(run)}


def _sweep(bn_top, plain_top, bn_best, plain_best, bn_default_best=None, plain_default_best=None, c=SYN):
    """A sweep with per-seed largest trainable grid index and best loss per arm (kaiming init; the default
    init's best losses as given, same largest rates)."""
    n = c.train_seeds
    full = lambda v: np.broadcast_to(np.asarray(v, dtype=float), (n,)).copy()  # noqa: E731
    lr_max = {(True, "kaiming"): full(bn_top), (False, "kaiming"): full(plain_top),
              (True, "default"): full(bn_top), (False, "default"): full(plain_top)}
    rng = np.random.default_rng(1)
    noisy = lambda v: full(v) * np.exp(rng.normal(0, 0.05, n))  # noqa: E731
    best = {(True, "kaiming"): noisy(bn_best), (False, "kaiming"): noisy(plain_best),
            (True, "default"): noisy(bn_default_best if bn_default_best is not None else bn_best),
            (False, "default"): noisy(plain_default_best if plain_default_best is not None else plain_best)}
    return _sweep_rows(c, lr_max, best)


def test_init_verdicts_supported_when_the_data_follow_the_post_and_yang():
    v = _verdicts(_run(SYN, _init_rows(SYN, THEORY_FWD, THEORY_BWD) + _sweep(5, 2, 0.05, 0.08, 0.06, 1.5)))
    assert {k: v[k] for k in v if not k.startswith("bn-grad-rate")} == {
        "bn-std-stable": "supported", "plain-default-vanishes": "supported", "plain-normal-explodes": "supported",
        "plain-kaiming-stable": "supported", "bn-grad-grows": "supported", "plain-kaiming-grad-flat": "supported",
        "bn-larger-lr": "supported", "bn-faster": "supported", "bn-init-insensitive": "supported"}
    assert {k for k in v if k.startswith("bn-grad-rate")} == {
        "bn-grad-rate/bn/default", "bn-grad-rate/bn/normal", "bn-grad-rate/bn/kaiming",
        "bn-grad-rate/bn/kaiming/batch=128"}
    assert all(v[k] == "supported" for k in v if k.startswith("bn-grad-rate"))


def test_init_verdicts_refuted_when_the_data_say_the_opposite():
    fwd = {"plain/default": 1.3, "plain/normal": 0.6, "plain/kaiming": 1.2, "bn/normal": 1.05}
    bwd = {"bn/default": 0.9, "bn/normal": 1.4, "bn/kaiming": 1.4, "bn/kaiming/batch=128": 1.0,
           "plain/kaiming": 1.3}
    v = _verdicts(_run(SYN, _init_rows(SYN, fwd, bwd) + _sweep(2, 5, 0.08, 0.05, 1.5, 0.06)))
    assert v == {
        "bn-std-stable": "refuted", "plain-default-vanishes": "refuted", "plain-normal-explodes": "refuted",
        "plain-kaiming-stable": "refuted", "bn-grad-grows": "refuted", "bn-grad-rate/bn/default": "refuted",
        "bn-grad-rate/bn/normal": "refuted", "bn-grad-rate/bn/kaiming": "refuted",
        "bn-grad-rate/bn/kaiming/batch=128": "refuted", "plain-kaiming-grad-flat": "refuted",
        "bn-larger-lr": "refuted", "bn-faster": "refuted", "bn-init-insensitive": "refuted"}


def test_init_verdicts_inconclusive_when_the_seeds_are_too_noisy():
    """Factors right at the margins with a large spread: no interval excludes or includes the margin."""
    c = dataclasses.replace(SYN, seeds=3)
    fwd = {"plain/default": 0.99, "plain/normal": 1.01, "plain/kaiming": 1.0}
    v = _verdicts(_run(c, _init_rows(c, fwd, {"bn/kaiming": 1.0}, sd=0.03)))
    for k in ("bn-std-stable", "plain-default-vanishes", "plain-normal-explodes", "plain-kaiming-stable",
              "plain-kaiming-grad-flat", "bn-grad-rate/bn/default"):
        assert v[k] == "inconclusive", k


def test_larger_lr_flips_with_the_per_seed_rates():
    rows_init = _init_rows(SYN, THEORY_FWD, THEORY_BWD)
    n = SYN.train_seeds
    top = len(SYN.lrs) - 1
    assert _verdicts(_run(SYN, rows_init + _sweep(4, 2, 0.05, 0.05)))["bn-larger-lr"] == "supported"
    assert _verdicts(_run(SYN, rows_init + _sweep(2, 2, 0.05, 0.05)))["bn-larger-lr"] == "refuted"  # all tie
    assert _verdicts(_run(SYN, rows_init + _sweep(1, 3, 0.05, 0.05)))["bn-larger-lr"] == "refuted"
    half = np.where(np.arange(n) % 2 == 0, 4, 1)  # larger in half the seeds, smaller in the other half
    assert _verdicts(_run(SYN, rows_init + _sweep(half, 2, 0.05, 0.05)))["bn-larger-lr"] == "inconclusive"
    both_top = {c.id: c for c in STUDY.claims(_run(SYN, rows_init + _sweep(top, top, 0.05, 0.05)))}["bn-larger-lr"]
    assert both_top.verdict == "inconclusive" and "tied at the top" in both_top.detail  # the grid cannot tell
    none = _verdicts(_run(SYN, rows_init + _sweep(-1, -1, 2.3, 2.3)))["bn-larger-lr"]
    assert none == "refuted"  # neither trains at any rate: equal, not larger


def test_faster_and_init_insensitive_flip():
    rows_init = _init_rows(SYN, THEORY_FWD, THEORY_BWD)
    v = _verdicts(_run(SYN, rows_init + _sweep(4, 2, 0.05, 0.05, 0.05, 0.05)))
    assert v["bn-faster"] == "inconclusive"  # equal up to per-seed noise
    assert _verdicts(_run(SYN, rows_init + _sweep(4, 2, 0.03, 0.09)))["bn-faster"] == "supported"
    assert _verdicts(_run(SYN, rows_init + _sweep(4, 2, 0.09, 0.03)))["bn-faster"] == "refuted"
    # init sensitivity: BN's best loss moves 1.2x between inits, no-BN's 30x (supported) / the other way round
    assert _verdicts(_run(SYN, rows_init + _sweep(4, 2, 0.05, 0.05, 0.06, 1.5)))["bn-init-insensitive"] == "supported"
    assert _verdicts(_run(SYN, rows_init + _sweep(4, 2, 0.05, 0.05, 1.5, 0.06)))["bn-init-insensitive"] == "refuted"


def test_every_claim_has_its_unit_and_an_int_n():
    claims = STUDY.claims(_run(SYN, _init_rows(SYN, THEORY_FWD, THEORY_BWD) + _sweep(5, 2, 0.05, 0.08)))
    for cl in claims:
        assert cl.unit == "seed", cl.id
        assert isinstance(cl.n, int) and cl.n > 0, cl.id
    by_id = {cl.id: cl for cl in claims}
    assert by_id["bn-std-stable"].n == SYN.seeds and by_id["bn-larger-lr"].n == SYN.train_seeds


def test_seed_sentences_name_claims_the_study_returns_whatever_the_arms():
    c = dataclasses.replace(SYN, inits=("kaiming",), train_inits=(), control_batches=())
    ids = {cl.id for cl in STUDY.claims(_run(c, _init_rows(c, THEORY_FWD, THEORY_BWD)))}
    named = {i for s in STUDY.seed_sentences for i in s.tested_by}
    assert named <= ids
    assert STUDY.post_titles == {"004": "正则化和批标准化"}
    assert any("更大学习率" in s.quote for s in STUDY.seed_sentences)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-1, 4), st.integers(-1, 4)), min_size=2, max_size=20))
def test_sign_claim_never_supports_both_directions(pairs):
    a, b = (np.asarray(v, dtype=float) for v in zip(*pairs, strict=True))
    lrs = (0.01, 0.1, 1.0, 10.0, 100.0)
    ab = sign_claim("x", "", "", "", a, b, 4, lrs, ("a", "b"))
    ba = sign_claim("x", "", "", "", b, a, 4, lrs, ("b", "a"))
    assert not (ab.verdict == "supported" and ba.verdict == "supported")
    assert ab.unit == "seed" and isinstance(ab.n, int)
    if ab.verdict == "supported":
        assert (a > b).sum() > (a < b).sum()


# -- a dead network: inconclusive, never a crash ------------------------------------------------------------

def test_a_dead_network_is_inconclusive_not_a_crash(tmp_path):
    """width=2: ReLU kills whole layers (exact zeros forward, underflowed gradients), so no growth factor
    exists; the claims must say inconclusive (this used to raise in the claims)."""
    c = Config(depth=30, width=2, seeds=3, fit_skip=5, control_batches=(), train_depth=2, train_width=4,
               train_steps=3, train_seeds=2, lrs=(0.01, 0.1), tail=2)
    STUDY.check_config(c)
    frames = []
    for cell in STUDY.cells(c):
        res = STUDY.run_cell(c, CellContext(cell, torch.device("cpu"), tmp_path, None))
        frames.append(res.metrics.assign(arm=cell.arm, **cell.param_dict))
    run = StoredRun(c, pd.concat(frames, ignore_index=True), pd.DataFrame(), pd.DataFrame(), {}, tmp_path)
    by_id = {cl.id: cl for cl in STUDY.claims(run)}
    for k in ("plain-default-vanishes", "plain-normal-explodes", "plain-kaiming-stable", "bn-grad-grows",
              "bn-grad-rate/bn/kaiming", "plain-kaiming-grad-flat"):
        assert by_id[k].verdict == "inconclusive", (k, by_id[k].detail)
    assert "too few to judge" in by_id["plain-kaiming-stable"].detail
    for f in STUDY.figures(run):
        plt.close(f.figure)


def test_a_layer_of_zeros_in_the_window_means_no_factor():
    c = Config(depth=20, fit_skip=2)
    vals = [2.0**-k for k in range(1, 21)]
    vals[10] = 0.0
    m = pd.DataFrame({"seed": 0, "step": range(1, 21), "metric": "act_std", "value": vals, "arm": "plain/x"})
    assert np.isnan(factors(m, "plain/x", "act_std", c, backward=False)).all()
