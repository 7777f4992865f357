"""bn-running-stats: seed 004's numbers to the digit, seed 002's momentum, convergence oracle, verdicts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from normlab.engine.spec import Cell, CellContext, StoredRun
from normlab.studies.bn_running_stats import BnRunningStats, Config, population

STUDY = BnRunningStats()
CONFIG = Config(**BnRunningStats.quick_overrides)



def _run(cell: Cell, config: Config = CONFIG) -> pd.DataFrame:
    ctx = CellContext(cell=cell, device=torch.device("cpu"), probe_dir=Path("."), tb_dir=None)
    out = STUDY.run_cell(config, ctx).metrics.assign(arm=cell.arm)
    for key, value in cell.params:
        out[key] = value
    return out


def _value(table: pd.DataFrame, metric: str, step: int | None = None) -> float:
    sel = table["metric"] == metric
    if step is not None:
        sel &= table["step"] == step
    return float(table.loc[sel, "value"].iloc[0])


def test_seed004_walkthrough_to_the_digit():
    table = _run(Cell("walkthrough", (0,)), dataclasses.replace(CONFIG, walk_iterations=3))
    # Hand-computed from running = 0.7 * running + 0.3 * batch, starting at mean 0, var 1; the batch
    # variance of a constant feature is 0. Iteration 0 is what seed 004 prints.
    expected = {
        0: {"f0": (0.3, 0.7), "f1": (0.6, 0.7)},
        1: {"f0": (0.51, 0.49), "f1": (1.02, 0.49)},
        2: {"f0": (0.657, 0.343), "f1": (1.314, 0.343)},
    }
    for step, features in expected.items():
        for f, (mean, var) in features.items():
            assert round(_value(table, f"running_mean/{f}", step), 4) == mean
            assert round(_value(table, f"running_var/{f}", step), 4) == var
    # Feature of 5s, iteration 0: mean 0.3 * 5 = 1.5.
    assert _value(table, "running_mean/f4", 0) == pytest.approx(1.5, abs=1e-6)


def test_layer_facts_measure_torchs_default_and_estimators():
    table = _run(Cell("layer-facts", (0,)))
    assert _value(table, "default_momentum") == 0.1
    assert _value(table, "normlab_default_momentum") == 0.1
    assert _value(table, "seed002_formula_momentum") == pytest.approx(0.9, abs=1e-12)
    assert _value(table, "momentum0.9_mean_ratio") == pytest.approx(0.9, abs=1e-12)
    batch = _value(table, "batch_size")
    assert _value(table, "running_var_over_unbiased") == pytest.approx(1.0, abs=1e-12)
    assert _value(table, "running_var_over_biased") == pytest.approx(batch / (batch - 1), abs=1e-12)
    assert _value(table, "output_vs_biased_maxdiff") < 1e-12 < _value(table, "output_vs_unbiased_maxdiff")


def test_keras_convention_equals_torch_exactly():
    table = _run(Cell("conventions", (0, 1)), dataclasses.replace(CONFIG, convention_steps=10))
    assert table["value"].max() == 0.0
    assert len(table) == 2 * 2 * len(CONFIG.convention_momenta)


@pytest.mark.parametrize("momentum", [0.3, None])
def test_seeds_as_channels_match_a_hand_loop(momentum):
    """The vectorized convergence arm vs one seed's running mean computed by hand (float64)."""
    config = dataclasses.replace(CONFIG, steps=30, early_step=5)
    label = "cumulative" if momentum is None else "0.3"
    table = _run(Cell(f"converge/m={label}", (0, 7), (("batch_size", 4),)), config)
    pop = population(config).double()
    mu, sd = pop.mean(0), pop.var(0, correction=0).sqrt()
    gen = torch.Generator().manual_seed(7)
    running = torch.zeros(config.features, dtype=torch.float64)
    for t in range(1, config.steps + 1):
        batch_mean = pop[torch.randint(len(pop), (4,), generator=gen)].mean(0)
        m = 1.0 / t if momentum is None else momentum
        running = (1 - m) * running + m * batch_mean
    expected = float((((running - mu) / sd) ** 2).mean().sqrt())
    got = table[(table["seed"] == 7) & (table["metric"] == "mean_err") & (table["step"] == config.steps)]
    assert float(got["value"].iloc[0]) == pytest.approx(expected, rel=1e-4)


def _synthetic_gap_run(running_short: float) -> StoredRun:
    """Stored gap arms with chosen accuracies (plus the cheap deterministic arms run for real)."""
    config = dataclasses.replace(CONFIG, momenta=(0.3, 0.01), batch_sizes=(4, 64), steps=40, early_step=5,
                                 convention_steps=5, seeds=4, gap_momenta=(0.01,), gap_seeds=6)
    frames = [_run(Cell("walkthrough", (0,)), config), _run(Cell("layer-facts", (0,)), config),
              _run(Cell("conventions", (0, 1)), config)]
    frames += [_run(Cell(f"converge/m={m}", (0, 1, 2, 3), (("batch_size", b),)), config)
               for m in ("0.3", "0.01") for b in (4, 64)]
    rng = np.random.default_rng(0)
    rows = []
    for steps, run_acc in ((config.gap_steps[0], running_short), (config.gap_steps[1], 0.9)):
        for seed in range(6):
            noise = rng.normal(0, 0.005, 3)
            for metric, v in zip(("acc_batch_stats", "acc_running", "acc_recalibrated"),
                                 (0.9 + noise[0], run_acc + noise[1], 0.9 + noise[2]), strict=True):
                rows.append({"seed": seed, "step": steps, "metric": metric, "value": v, "arm": "gap/m=0.01",
                             "steps": steps})
    frames.append(pd.DataFrame(rows))
    return StoredRun(config, pd.concat(frames, ignore_index=True), pd.DataFrame(), pd.DataFrame(), {}, Path("."))


def test_verdicts_follow_the_data():
    claims = {c.id: c for c in STUDY.claims(_synthetic_gap_run(running_short=0.5))}
    assert claims["walkthrough-feature-1s"].verdict == "supported"
    assert claims["walkthrough-feature-2s"].verdict == "supported"
    assert claims["seed002-momentum-in-its-formula"].verdict == "supported"
    assert claims["seed002-momentum-argument"].verdict == "refuted"  # torch's argument is 0.1
    assert claims["keras-equals-torch"].verdict == "supported"
    assert claims["running-var-unbiased"].verdict == "supported"
    assert claims["normalize-biased"].verdict == "supported"
    assert claims["larger-step-converges-faster"].verdict == "supported"
    # 40 steps at m=0.01 leave 0.99^40 = 67% of the start value: "after enough steps" cannot be judged.
    assert claims["larger-step-fluctuates-more"].verdict == "inconclusive"
    assert claims["short-training-eval-gap"].verdict == "supported"
    assert claims["recalibration-closes-gap"].verdict == "supported"
    assert claims["long-training-shrinks-gap"].verdict == "supported"
    # No gap in the data: the same claims must not come out supported.
    flat = {c.id: c for c in STUDY.claims(_synthetic_gap_run(running_short=0.9))}
    assert flat["short-training-eval-gap"].verdict == "refuted"
    assert flat["recalibration-closes-gap"].verdict != "supported"


def test_figures_render_from_stored_tables():
    figures = STUDY.figures(_synthetic_gap_run(running_short=0.5))
    assert [f.name for f in figures] == ["walkthrough", "convergence", "train_eval_gap"]
    assert all(f.how_to_read for f in figures)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match=r"seeds: expected an integer in \[2, 10000\], got 1"):
        STUDY.check_config(dataclasses.replace(CONFIG, seeds=1))
    with pytest.raises(ValueError, match="BatchNorm needs two samples"):
        STUDY.check_config(dataclasses.replace(CONFIG, batch_sizes=(1, 4)))
