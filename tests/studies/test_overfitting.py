"""overfitting: the seed's model, data and dropout demo; ensemble == independent runs; verdict logic."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from normlab.engine.spec import CellContext, StoredRun
from normlab.studies.overfitting import Config, Overfitting, dropout_demo, make_data, mlp, train_arm

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


@pytest.mark.parametrize("arm", ["none", "weight_decay"])
def test_ensemble_equals_independent_runs(arm):
    c = Config(n_hidden=16, steps=6, eval_every=3, n_heldout=50)
    seeds = (0, 4)
    got = train_arm(c, arm, seeds, 10)["metrics"]
    for s in seeds:
        d = make_data(c, s, 10)
        torch.manual_seed(s)
        net = mlp(16, 0.0)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=c.weight_decay if arm != "none" else 0)
        for _ in range(c.steps):
            loss = nn.functional.mse_loss(net(d["train_x"]), d["train_y"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            held = float(nn.functional.mse_loss(net(d["held_x"]), d["held_y"]))
        row = got[(got["seed"] == s) & (got["step"] == c.steps) & (got["metric"] == "heldout_mse")]
        assert float(row["value"].iloc[0]) == pytest.approx(held, rel=1e-5)


def _synthetic(dropout_ratio: float, n_seeds: int = 12) -> StoredRun:
    """A stored run whose numbers are chosen: dropout's held-out MSE = ratio x none's."""
    c = Config(seeds=n_seeds, size_sweep=(), demo_draws=50)
    rng = np.random.default_rng(0)
    rows = []
    for s in range(n_seeds):
        base = 0.2 * np.exp(rng.normal(0, 0.1))
        for arm, held, train in (("none", base, 0.01), ("weight_decay", base * 0.9, 0.03), ("dropout", base * dropout_ratio, 0.05)):
            for metric, v in (("heldout_mse", held * np.exp(rng.normal(0, 0.01))), ("train_mse", train), ("test_mse", held)):
                rows.append((s, c.steps, metric, v, arm, c.n_train))
    for s in range(c.demo_draws):
        rows += [(s, 0, "train_output", 10000.0 + 2 * (s - 25), "dropout-demo", 0),
                 (s, 0, "eval_output", 10000.0, "dropout-demo", 0)]
    m = pd.DataFrame(rows, columns=["seed", "step", "metric", "value", "arm", "n_train"])
    return StoredRun(c, m, pd.DataFrame(), pd.DataFrame(), {}, Path("."))


@pytest.mark.parametrize(("ratio", "expected"), [(0.5, "refuted"), (1.0, "supported"), (1.3, "supported")])
def test_no_gain_claim_follows_the_data(ratio, expected):
    verdicts = {c.id: c.verdict for c in STUDY.claims(_synthetic(ratio))}
    assert verdicts["dropout-no-gain-tiny"] == expected
    assert verdicts["weight_decay-lowers-heldout"] == "supported"
    assert verdicts["inverted-dropout-eval-exact"] == "supported"
    assert verdicts["seed-draw-typical"] == "supported"  # 9994 sits inside the synthetic draws 9950..10048


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
