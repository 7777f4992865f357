"""ln-gradients: the seed's model, data and training loop exactly; measures and claims by hand."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from normlab.engine.load import load_run
from normlab.engine.runner import run_study
from normlab.engine.spec import Cell, CellContext
from normlab.report import run_and_report
from normlab.studies import get_study
from normlab.studies.ln_gradients.claims import _fluct, _settle, per_seed_measures
from normlab.studies.ln_gradients.config import ARMS, Config, datasets, inputs, linear_floor, target
from normlab.studies.ln_gradients.model import SeedModel, train_arm

# The seed's four `Model`s, layer by layer (000_*.txt).
SEED_LAYERS = {
    "dropout": ["Linear(2,20)", "Linear(20,20)", "Dropout(0.1)", "Linear(20,20)", "Linear(20,20)", "Linear(20,1)"],
    "dropout+ln": ["Linear(2,20)", "Linear(20,20)", "Dropout(0.1)", "Linear(20,20)", "LayerNorm(20)",
                   "Linear(20,20)", "LayerNorm(20)", "Linear(20,1)"],
    "ln": ["Linear(2,20)", "Linear(20,20)", "Linear(20,20)", "LayerNorm(20)", "Linear(20,20)", "LayerNorm(20)",
           "Linear(20,1)"],
    "none": ["Linear(2,20)", "Linear(20,20)", "Linear(20,20)", "Linear(20,20)", "Linear(20,1)"],
}


def _describe(m: nn.Module) -> str:
    if isinstance(m, nn.Linear):
        return f"Linear({m.in_features},{m.out_features})"
    if isinstance(m, nn.LayerNorm):
        return f"LayerNorm({m.normalized_shape[0]})"
    if isinstance(m, nn.Dropout):
        return f"Dropout({m.p})"
    return type(m).__name__


@pytest.mark.parametrize("arm", list(SEED_LAYERS))
def test_model_is_the_seeds_model(arm):
    model = SeedModel(ARMS[arm])
    assert [_describe(m) for m in model.linears] == SEED_LAYERS[arm]
    assert all(not isinstance(m, (nn.ReLU, nn.Tanh)) for m in model.modules())  # no activation anywhere


def test_data_is_the_seeds_data():
    x1, x2 = torch.arange(-10, 10).float(), torch.arange(0, 20).float()
    x = torch.cat((x1.unsqueeze(1), x2.unsqueeze(1)), dim=1)
    t = datasets()["train"]
    assert torch.equal(inputs(t), x)
    assert torch.equal(target(t), 2 * x1 - x2**2 + 1)
    held = datasets()["interp"]
    assert len(set(held.tolist()) & set(t.tolist())) == 0  # held-out points are not training points


def test_linear_floor_is_the_least_squares_fit_on_both_inputs():
    t = datasets()["train"].double()
    x = torch.cat([inputs(t), torch.ones(20, 1, dtype=torch.float64)], 1).numpy()
    y = target(t).numpy()
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    assert linear_floor() == pytest.approx(np.mean((x @ coef - y) ** 2), rel=1e-9)


@pytest.fixture
def one_thread():
    """As the runner does for this study (``threads = 1``): tiny kernels on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_ensemble_training_reproduces_the_seeds_script_per_seed(one_thread):
    """Member i of the ensemble loop == the seed's own loop run with torch.manual_seed(i)."""
    cfg = Config(seeds=2, steps=15, eval_every=5, probe=False)
    cell = Cell("ln", (0, 1))
    ctx = CellContext(cell=cell, device=torch.device("cpu"), probe_dir=None, tb_dir=None)
    res = train_arm(cfg, ctx)
    got = res.metrics[res.metrics.metric == "train_loss"]
    x1, x2 = torch.arange(-10, 10).float(), torch.arange(0, 20).float()
    x = torch.cat((x1.unsqueeze(1), x2.unsqueeze(1)), dim=1)
    y = 2 * x1 - x2**2 + 1
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = SeedModel(ARMS["ln"])
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.01)
        loss_function = torch.nn.MSELoss()
        ref = []
        for _ in range(15):  # the seed's loop, minus the logging
            loss = loss_function(y, model(x).squeeze())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            ref.append(loss.item())
        mine = got[got.seed == seed].sort_values("step")["value"].to_numpy()
        np.testing.assert_allclose(mine, ref, rtol=1e-4)


def test_measures_by_hand():
    assert _fluct(np.array([1.0, 10.0, 1.0, 10.0])) == pytest.approx(np.std([1, -1, 1], ddof=1))
    steps = np.arange(10)
    g = np.array([100, 50, 20, 9, 1.5, 1, 1, 1, 1, 1.0])
    assert _settle(steps, g) == 4  # from step 4 on within 2x of the final level 1
    rows = []
    for step in range(40):
        for metric, value in (("train_loss", 2.0 + (step % 2)), ("grad_norm", 1.0), ("grad_spread", 0.5),
                              ("grad_kurtosis", 3.0), ("train_loss_eval", 2.0), ("heldout_interp", 3.0),
                              ("heldout_extrap", 9.0)):
            rows.append(("ln", 0, step, metric, value))
    m = per_seed_measures(pd.DataFrame(rows, columns=["arm", "seed", "step", "metric", "value"]))
    r = m.iloc[0]
    assert r.final_loss == pytest.approx(2.5)  # last 5% of 40 steps: steps 38 (2.0) and 39 (3.0)
    assert r.fluctuation == pytest.approx(np.std(np.diff(np.log10([2.0, 3.0] * 10)), ddof=1))
    assert r.gap_ratio == pytest.approx(1.5) and r.spread_end == 0.5 and r.settle_step == 0


def test_tiny_run_produces_every_claim_and_figure(tmp_path):
    study = get_study("ln-gradients")
    cfg = Config(seeds=3, steps=40, eval_every=10, probe_every=10, hist_every=20)
    out = run_and_report(study, cfg, tmp_path / "run")
    ids = [c.id for c in out.claims]
    assert ids == ["C1a", "C1b", "C2a", "C2b", "C3a", "C3b", "C3c", "C3d", "C4", "C5", "C6", "C7", "C8",
                   "K1", "K2", "K3", "K4", "K5"]
    assert all(c.verdict in ("supported", "refuted", "inconclusive") for c in out.claims)
    figs = {p.stem for p in (out.run_dir / "figures").glob("*.png")}
    assert figs == {"loss_curves", "fluctuation", "gradient_heatmaps", "weight_heatmaps", "gradient_concentration",
                    "per_layer_gradients", "fits_and_heldout"}
    run = load_run(out.run_dir, study)
    assert {"grad", "weight"} <= set(run.probe_histograms["kind"].astype(str))
    assert set(run.probe_scalars["seed"]) == {0, 1, 2}


def test_subset_of_arms_gives_inconclusive_not_a_crash(tmp_path):
    study = get_study("ln-gradients")
    cfg = Config(seeds=2, steps=30, arms=("ln", "none"), probe=False)
    out = run_study(study, cfg, tmp_path / "run")
    run = load_run(out.run_dir, study)
    by_id = {c.id: c for c in study.claims(run)}
    assert by_id["C1b"].verdict == "inconclusive" and "not all run" in by_id["C1b"].detail
    with pytest.raises(ValueError, match=r"arms\[0\]: expected one of \['dropout'"):
        study.check_config(Config(arms=("bogus",)))
