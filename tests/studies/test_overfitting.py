"""overfitting: the seed's model, data and dropout demo; ensemble == independent runs; verdict logic."""

from __future__ import annotations

import dataclasses
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
from normlab.studies.overfitting import Config, Overfitting, dropout_demo, make_data, mlp, train_arm
from normlab.studies.overfitting import claims as claims_module
from normlab.studies.overfitting.model import WD_CHECK_W, weight_decay_step

STUDY = Overfitting()



def test_mlp_is_the_seeds():
    net = mlp(200, 0.0)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1, 200), (200, 200), (200, 200), (200, 1)]
    assert sum(isinstance(m, nn.ReLU) for m in net) == 3 and not any(isinstance(m, nn.Dropout) for m in net)
    kinds = [type(m).__name__ for m in mlp(200, 0.5)]
    # Dropout after each hidden ReLU, before the next Linear (the seed's notes); never after the output.
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    torch.manual_seed(3)
    a = mlp(16, 0.0).state_dict()
    torch.manual_seed(3)
    b = mlp(16, 0.5).state_dict()  # dropout draws nothing at init: arms of a seed share weights
    assert [v.shape for v in a.values()] == [v.shape for v in b.values()]
    assert all(torch.equal(x, y) for x, y in zip(a.values(), b.values(), strict=True))


def test_data_is_the_seeds_gen_data():
    c = Config()
    torch.manual_seed(7)  # the seed's gen_data, verbatim, on the global generator
    train_x = torch.linspace(-1, 1, 10).unsqueeze_(1)
    train_y = 1.5 * train_x + torch.normal(0, 0.5, size=train_x.size())
    test_x = torch.linspace(-1, 1, 10).unsqueeze_(1)
    test_y = 1.5 * test_x + torch.normal(0, 0.3, size=test_x.size())
    d = make_data(c, 7, 10)
    for name, t in (("train_x", train_x), ("train_y", train_y), ("test_x", test_x), ("test_y", test_y)):
        assert torch.equal(d[name], t), name
    assert d["held_x"].shape == (c.n_heldout, 1) and d["held_x"].abs().max() <= 1


def test_dropout_demo_reproduces_the_seeds_numbers():
    c = Config()
    out = dropout_demo(c, tuple(range(300)))
    train = out[out["metric"] == "train_output"]["value"].to_numpy()
    evals = out[out["metric"] == "eval_output"]["value"].to_numpy()
    assert (evals == 10000).all()  # eval is exact
    assert (train % 2 == 0).all()  # 2 x (units kept)
    assert abs(train.mean() - 10000) < 5 * 100 / np.sqrt(len(train))  # 2*Binomial(10000, 1/2): sd 100
    assert 70 < train.std(ddof=1) < 130

    class Net(nn.Module):  # the seed's Net, verbatim in spirit
        def __init__(self, neural_num, d_prob=0.5):
            super().__init__()
            self.linears = nn.Sequential(nn.Dropout(d_prob), nn.Linear(neural_num, 1, bias=False), nn.ReLU(inplace=True))

        def forward(self, x):
            return self.linears(x)

    torch.manual_seed(5)
    net = Net(10000)
    net.linears[1].weight.detach().fill_(1.0)
    net.train()
    with torch.no_grad():
        assert train[5] == float(net(torch.ones(10000)))  # seed s is exactly the seed's script after manual_seed(s)


@pytest.mark.parametrize(("arm", "regime"), [("none", "seed"), ("weight_decay", "seed"), ("none", "sweep")])
def test_ensemble_equals_independent_runs(arm, regime):
    c = Config(n_hidden=16, steps=6, eval_every=3, n_heldout=50, sweep_steps=6, sweep_eval_every=3)
    seeds = (0, 4)
    got = train_arm(c, arm, seeds, 10, regime=regime)["metrics"]
    for s in seeds:
        d = make_data(c, s, 10)
        torch.manual_seed(s)
        net = mlp(16, 0.0)
        if regime == "sweep":  # the sweep's regime: Adam at sweep_lr
            opt = torch.optim.Adam(net.parameters(), lr=c.sweep_lr)
        else:
            opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9,
                                  weight_decay=c.weight_decay if arm != "none" else 0)
        for _ in range(c.steps):
            loss = nn.functional.mse_loss(net(d["train_x"]), d["train_y"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            held = float(nn.functional.mse_loss(net(d["held_x"]), d["held_y"]))
        row = got[(got["seed"] == s) & (got["step"] == c.steps) & (got["metric"] == "heldout_mse")]
        assert float(row["value"].iloc[0]) == pytest.approx(held, rel=1e-5)


# ---------------------------------------------------------------------------------------------------------
# Synthetic stored runs: every verdict from numbers chosen by hand (effect present, absent, reversed).

GRID = np.linspace(-1, 1, 101)


def _world(**kw) -> dict:
    """The knobs of a synthetic run; the defaults are the post's world (every claimed effect present)."""
    w = {
        "none_train": 0.2, "none_held": 3.0,  # none's MSE / the true line's, on train and held-out points
        "wd_train": 1.3, "wd_held": 0.8,  # weight decay's MSE / none's
        "do_train": 1.5, "do_held": 0.8,  # dropout's MSE / none's (seed setting)
        "wd_norm": 0.7, "amp": {"none": 1.0, "weight_decay": 0.6, "dropout": 0.5},  # weight norm; wiggle size
        "sweep_ratio": {10: 1.0, 40: 0.8, 160: 0.6},  # sweep: dropout held-out / none's, per size
        "sweep_none_train": 0.3, "sweep_none_held": 2.0,  # sweep none at the largest size, / true line's
        "sigma": 0.02,  # per-seed spread of every ratio (0: the arms differ by exactly the ratio)
        "demo_center": 10000.0, "eval_exact": True, "dropped": 0.5, "kept_dev": 0.0, "seed_output": 9994.0,
        "wd_factor": None,  # None: torch's (1 - lr·λ)
    }
    w.update(kw)
    return w


def _synthetic(n_seeds: int = 12, **kw) -> StoredRun:
    w = _world(**kw)
    c = Config(seeds=n_seeds, sweep_seeds=n_seeds, size_sweep=tuple(w["sweep_ratio"]), demo_draws=400,
               demo_seed_output=w["seed_output"])
    rng = np.random.default_rng(0)
    rows, preds = [], []
    z = rng.normal(size=(n_seeds, 8))  # per-seed noise shared by every ratio that uses the same column

    def add(arm, n, regime, seed, values, step=c.steps):
        for metric, v in values.items():
            rows.append((seed, step, metric, float(v), arm, n, regime))

    for s in range(n_seeds):
        t_tr, t_he = 0.25 * np.exp(0.2 * z[s, 0]), 0.09 * np.exp(0.05 * z[s, 1])
        e = np.exp(w["sigma"] * z[s, 2:])
        none_tr, none_he = t_tr * w["none_train"] * np.exp(0.1 * z[s, 3]), t_he * w["none_held"] * np.exp(0.1 * z[s, 4])
        arms = {"none": (none_tr, none_he, 10.0), "weight_decay": (none_tr * w["wd_train"] * e[0], none_he * w["wd_held"] * e[1],
                10.0 * w["wd_norm"] * e[2]), "dropout": (none_tr * w["do_train"] * e[3], none_he * w["do_held"] * e[4], 10.0)}
        phase, freq = rng.uniform(0, 2 * np.pi, 3), rng.uniform(2, 6, 3)  # this seed's wiggle, shared by its arms
        wiggle = sum(np.sin(f * GRID + ph) for f, ph in zip(freq, phase, strict=True))
        for arm, (tr, he, norm) in arms.items():
            add(arm, c.n_train, "seed", s, {"train_mse": tr, "heldout_mse": he, "test_mse": he, "weight_norm": norm,
                                           "truth_train_mse": t_tr, "truth_heldout_mse": t_he})
            amp = w["amp"][arm] * (e[5] if arm != "none" else 1.0)
            preds.append(pd.DataFrame({"seed": s, "x": GRID, "pred": 1.5 * GRID + 0.3 * amp * wiggle, "arm": arm,
                                       "n_train": c.n_train, "regime": "seed"}))
        sizes = sorted(w["sweep_ratio"])
        for size in sizes:
            big = size == sizes[-1]
            s_tr = t_tr * (w["sweep_none_train"] if big else 0.3)
            s_he = t_he * (w["sweep_none_held"] if big else 2.0) * np.exp(0.1 * z[s, 6])
            add("none", size, "sweep", s, {"train_mse": s_tr, "heldout_mse": s_he, "truth_train_mse": t_tr,
                                          "truth_heldout_mse": t_he})
            ratio = w["sweep_ratio"][size] * (np.exp(w["sigma"] * z[s, 7] * (1 + sizes.index(size))))
            add("dropout", size, "sweep", s, {"train_mse": s_tr * 1.5, "heldout_mse": s_he * ratio,
                                             "truth_train_mse": t_tr, "truth_heldout_mse": t_he})
    for d in range(c.demo_draws):
        out = 2 * round((w["demo_center"] + rng.normal(0, 100)) / 2)
        ev = 10000.0 if w["eval_exact"] else 10000.0 + 2 * rng.integers(-50, 50)
        add("dropout-demo", 0, "demo", d, {"train_output": out, "eval_output": ev,
                                          "dropped_fraction": w["dropped"] + rng.normal(0, 0.005),
                                          "kept_value_maxdev": w["kept_dev"]})
    factor = 1 - c.lr * c.weight_decay if w["wd_factor"] is None else w["wd_factor"]
    for i in range(5):
        add("wd-step", 0, "exact", 0, {"wd_factor": factor, "l2_vs_wd_absdiff": 0.0}, step=i)
    m = pd.DataFrame(rows, columns=["seed", "step", "metric", "value", "arm", "n_train", "regime"])
    return StoredRun(c, m, pd.DataFrame(), pd.DataFrame(), {"predictions": pd.concat(preds, ignore_index=True)}, Path("."))


def _verdicts(run: StoredRun) -> dict[str, str]:
    claims = STUDY.claims(run)
    assert len({c.id for c in claims}) == len(claims)
    for c in claims:  # every claim says its unit and how many units its statistic used
        assert c.unit, c.id
        assert (c.unit == "exact") == (c.n is None), c.id
        judged = c.statistic != "none"  # a claim the run cannot judge says so with n = 0
        assert c.n is None or (isinstance(c.n, int) and (c.n >= 2 or not judged)), c.id
    return {c.id: c.verdict for c in claims}


SEED_SETTING = ("none-overfits", "weight_decay-raises-train-loss", "weight_decay-still-overfits",
                "weight_decay-reduces-gap", "weight_decay-lowers-heldout", "weight_decay-reduces-variance",
                "dropout-reduces-gap", "dropout-lowers-heldout", "dropout-reduces-variance",
                "weight_decay-smoother-fit", "weight_decay-shrinks-weights")


def test_every_claim_supported_in_the_posts_world():
    v = _verdicts(_synthetic())
    assert v == {**dict.fromkeys(SEED_SETTING, "supported"),
                 "weight_decay-step-post-formula": "refuted",  # torch's SGD: 1 - lr·λ, not 1 - λ
                 "weight_decay-step-sgd-formula": "supported", "weight_decay-is-l2-penalty": "supported",
                 "inverted-dropout-train-mean": "supported", "inverted-dropout-eval-exact": "supported",
                 "seed-draw-typical": "supported", "dropout-drops-fraction-p": "supported",
                 "inverted-dropout-scale": "supported",
                 "dropout-gain/n=10": "refuted", "dropout-gain/n=40": "supported", "dropout-gain/n=160": "supported",
                 "sweep-overfits-at-largest": "supported", "dropout-gain-grows-with-data": "supported",
                 "dropout-no-gain-tiny": "supported"}


def test_seed_setting_claims_are_inconclusive_without_an_effect():
    # The arms differ by exactly nothing: every paired difference is 0, so no direction can be claimed.
    v = _verdicts(_synthetic(sigma=0.0, wd_train=1.0, wd_held=1.0, do_train=1.0, do_held=1.0, wd_norm=1.0,
                             amp=dict.fromkeys(("none", "weight_decay", "dropout"), 1.0)))
    for cid in SEED_SETTING[1:]:
        if cid != "weight_decay-still-overfits":
            assert v[cid] == "inconclusive", cid
    assert v["none-overfits"] == v["weight_decay-still-overfits"] == "supported"


def test_seed_setting_claims_are_refuted_when_reversed():
    v = _verdicts(_synthetic(none_train=3.0, none_held=0.5, wd_train=0.7, wd_held=1.3, do_train=0.7, do_held=1.3,
                             wd_norm=1.4, amp={"none": 1.0, "weight_decay": 1.6, "dropout": 1.8}))
    assert {cid: v[cid] for cid in SEED_SETTING} == dict.fromkeys(SEED_SETTING, "refuted")


@pytest.mark.parametrize(("train", "held", "expected"), [
    (0.2, 3.0, "supported"), (3.0, 3.0, "refuted"), (0.2, 0.5, "refuted"), (1.0, 3.0, "inconclusive")])
def test_overfits_needs_both_halves(train, held, expected):
    # fits the training points better than the truth AND the held-out points worse; one half refuted refutes.
    # train = 1.0: the train MSE is the truth's up to per-seed noise (4 seeds): the train half cannot decide.
    v = _verdicts(_synthetic(none_train=train, none_held=held, wd_train=1.0, wd_held=1.0, sigma=0.0, n_seeds=4))
    assert v["none-overfits"] == expected
    assert v["weight_decay-still-overfits"] == expected


@pytest.mark.parametrize(("ratios", "none_large", "expected"), [
    ({10: 1.0, 40: 0.8, 160: 0.6}, (0.3, 2.0), {"dropout-no-gain-tiny": "supported", "grows": "supported"}),
    # dropout gains on tiny data too: the paper's observation is refuted here
    ({10: 0.6, 40: 0.6, 160: 0.6}, (0.3, 2.0), {"dropout-no-gain-tiny": "refuted", "grows": "refuted"}),
    # no gain anywhere: "no gain at 10" holds but is no tiny-data effect (the control at 160 decides)
    ({10: 1.0, 40: 1.0, 160: 1.0}, (0.3, 2.0), {"dropout-no-gain-tiny": "refuted", "grows": "refuted"}),
    # dropout hurts more with more data: the benefit shrinks
    ({10: 1.0, 40: 1.2, 160: 1.5}, (0.3, 2.0), {"dropout-no-gain-tiny": "refuted", "grows": "refuted"}),
    # the none arm does not overfit at the largest size: the control says so
    ({10: 1.0, 40: 0.8, 160: 0.6}, (1.5, 0.6), {"dropout-no-gain-tiny": "supported", "grows": "supported",
                                               "sweep-overfits-at-largest": "refuted"}),
])
def test_tiny_data_claim_is_a_contrast(ratios, none_large, expected):
    v = _verdicts(_synthetic(sweep_ratio=ratios, sweep_none_train=none_large[0], sweep_none_held=none_large[1]))
    assert v["dropout-no-gain-tiny"] == expected["dropout-no-gain-tiny"]
    assert v["dropout-gain-grows-with-data"] == expected["grows"]
    assert v["sweep-overfits-at-largest"] == expected.get("sweep-overfits-at-largest", "supported")


def test_tiny_data_claim_is_inconclusive_on_noise():
    v = _verdicts(_synthetic(n_seeds=4, sigma=2.0, sweep_ratio={10: 1.0, 40: 0.9, 160: 0.8}))
    assert v["dropout-no-gain-tiny"] == "inconclusive"
    assert v["dropout-gain-grows-with-data"] == "inconclusive"


def test_tiny_data_claim_reads_its_p_from_its_parts():
    claims = {c.id: c for c in STUDY.claims(_synthetic())}
    tiny = claims["dropout-no-gain-tiny"]
    parts = [claims["dropout-gain/n=160"].p_value, claims["dropout-gain-grows-with-data"].p_value]
    assert tiny.p_value >= max(parts)  # the intersection-union p: the largest of its parts
    assert "control" in tiny.detail and "no gain at 10" in tiny.detail


def test_sweep_with_one_size_is_not_judged():
    run = _synthetic(sweep_ratio={10: 1.0})
    v = _verdicts(run)
    assert v["dropout-no-gain-tiny"] == v["dropout-gain-grows-with-data"] == "inconclusive"


@pytest.mark.parametrize(("kw", "cid", "expected"), [
    ({"demo_center": 5000.0}, "inverted-dropout-train-mean", "refuted"),
    ({"demo_center": 10100.0}, "inverted-dropout-train-mean", "inconclusive"),  # CI straddles the 1% margin
    ({"eval_exact": False}, "inverted-dropout-eval-exact", "refuted"),
    ({"seed_output": 9500.0}, "seed-draw-typical", "refuted"),
    ({"dropped": 0.3}, "dropout-drops-fraction-p", "refuted"),
    ({"kept_dev": 0.5}, "inverted-dropout-scale", "refuted"),
    ({"wd_factor": 0.99}, "weight_decay-step-post-formula", "supported"),
    ({"wd_factor": 0.99}, "weight_decay-step-sgd-formula", "refuted"),
])
def test_demo_and_exact_claims_flip(kw, cid, expected):
    assert _verdicts(_synthetic(**kw))[cid] == expected


@settings(max_examples=25, deadline=None)
@given(lr=st.floats(1e-4, 2.0), lam=st.floats(1e-4, 0.5), momentum=st.sampled_from([0.0, 0.9]))
def test_weight_decay_step_is_torchs_not_the_posts(lr, lam, momentum):
    """The real one-step check, for any lr and λ: SGD multiplies w by 1 - lr·λ; the post's 1 - λ only at lr = 1."""
    c = Config(lr=lr, weight_decay=lam, momentum=momentum)
    m = weight_decay_step(c).assign(arm="wd-step", n_train=0, regime="exact")
    run = StoredRun(c, m, pd.DataFrame(), pd.DataFrame(), {}, Path("."))
    v = {cl.id: cl for cl in claims_module._weight_decay_step_claims(run)}
    assert v["weight_decay-step-sgd-formula"].verdict == "supported"
    assert v["weight_decay-is-l2-penalty"].verdict == "supported"
    expected = "supported" if abs(lr - 1.0) * lam < 1e-10 else "refuted"
    assert v["weight_decay-step-post-formula"].verdict == expected
    w = torch.tensor(WD_CHECK_W, dtype=torch.float64)
    assert np.allclose(m[m["metric"] == "wd_factor"]["value"], ((1 - lr * lam) * w / w).numpy(), rtol=1e-12)


def test_every_sentence_quotes_the_post_and_names_real_claims():
    ids = set(_verdicts(_synthetic()))
    for s in STUDY.seed_sentences:
        assert set(s.tested_by) <= ids, s.tested_by
    assert STUDY.post_titles == {"004": "正则化和批标准化"}
    post = Path("/work/shared/seeds/004_76bff55442b08271.txt")
    if post.exists():  # the post itself (not shipped with the package)
        text = post.read_text().replace("\n", "")
        assert text.startswith("PyTorch" + STUDY.post_titles["004"])
        for s in STUDY.seed_sentences:
            assert s.quote in text, s.quote


def test_quick_preset_in_memory(tmp_path):
    c = dataclasses.replace(Config(), **STUDY.quick_overrides)
    metrics, hists, extra = [], [], {}
    for cell in STUDY.cells(c):
        res = STUDY.run_cell(c, CellContext(cell, torch.device("cpu"), tmp_path, None))
        assert np.isfinite(res.metrics["value"]).all()
        metrics.append(res.metrics.assign(arm=cell.arm, **cell.param_dict))
        if res.probe_histograms is not None:  # the probe runs on the seed-sized arms only
            assert cell.param_dict["n_train"] == c.n_train and (res.probe_histograms["count"] > 0).all()
            assert set(res.probe_histograms["seed"]) == set(cell.seeds)
            hists.append(res.probe_histograms.assign(arm=cell.arm, **cell.param_dict))
        for k, t in res.extra.items():
            extra.setdefault(k, []).append(t.assign(arm=cell.arm, **cell.param_dict))
    assert len(hists) == 3
    run = StoredRun(c, pd.concat(metrics), pd.DataFrame(), pd.concat(hists),
                    {k: pd.concat(v) for k, v in extra.items()}, tmp_path)
    claims = STUDY.claims(run)
    assert {cl.verdict for cl in claims} <= {"supported", "refuted", "inconclusive"}
    assert len({cl.id for cl in claims}) == len(claims)
    figs = STUDY.figures(run)
    assert len(figs) == 6 and "distributions" in [f.name for f in figs] and all(f.how_to_read for f in figs)
    for f in figs:
        plt.close(f.figure)


def test_bad_dropout_is_named():
    with pytest.raises(ValueError, match="dropout"):
        STUDY.check_config(Config(dropout=1.0))


def test_an_exactly_zero_train_mse_is_floored_not_a_crash():
    # An interpolating net can reach a train MSE of exactly 0 in float32; the log-scale claims must still judge.
    run = _synthetic()
    m = run.metrics
    m.loc[(m["arm"] == "none") & (m["metric"] == "train_mse") & (m["seed"] < 3), "value"] = 0.0
    v = _verdicts(run)
    assert v["none-overfits"] == "supported"  # the train half only gets stronger
    assert v["weight_decay-raises-train-loss"] in {"supported", "inconclusive"}  # judged, not a ValueError
    assert claims_module.final(run, "none", 10, "train_mse")[:3].tolist() == [claims_module.MSE_FLOOR] * 3


@pytest.mark.parametrize(("held", "expected"), [(0.8, "supported"), (1.0, "inconclusive"), (1.2, "refuted")])
def test_a_gap_that_shrinks_by_fitting_worse_is_no_mitigation(held, expected):
    # The regularizer's training error is 3x none's, so the gap always shrinks; the held-out control decides.
    claims = {c.id: c for c in STUDY.claims(_synthetic(sigma=0.0, wd_train=3.0, wd_held=held, do_train=3.0,
                                                       do_held=held))}
    for arm in ("weight_decay", "dropout"):
        c = claims[f"{arm}-reduces-gap"]
        assert c.verdict == expected
        assert "gap smaller: supported" in c.detail and f"control {arm}-lowers-heldout" in c.detail
