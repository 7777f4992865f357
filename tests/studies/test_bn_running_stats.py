"""bn-running-stats: seed 004's numbers to the digit, seed 002's momentum, the measurements against hand loops,
and every claim's verdict flipped by synthetic stored tables (effect present, absent, reversed)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from normlab.data.images import load_images
from normlab.engine.spec import Cell, CellContext, StoredRun
from normlab.kit import stats
from normlab.models.cnn import build_members, train_members
from normlab.report.numbers import declared_table
from normlab.studies.bn_running_stats import BnRunningStats, Config, population
from normlab.studies.bn_running_stats.claims import values
from normlab.studies.bn_running_stats.config import momentum_label
from normlab.studies.bn_running_stats.model import ShadowStats, _log_steps

STUDY = BnRunningStats()
CONFIG = Config(**BnRunningStats.quick_overrides)
SEEDS_DIR = Path(__file__).resolve().parents[3] / "shared" / "seeds"


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


# ---------------------------------------------------------------- measurements


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
    assert _value(table, "initial_mean_maxabs") == 0.0 and _value(table, "initial_var_maxdev") == 0.0
    assert _value(table, "train_output_diff_other_running") < 1e-12 < _value(table, "eval_output_diff_other_running")
    assert _value(table, "eval_vs_running_maxdiff") < 1e-12
    assert _value(table, "running_in_state_dict") == 1.0
    assert _value(table, "mode_switch_diff_track_true") > 0.1  # train() vs eval() switches the statistics
    assert _value(table, "mode_switch_diff_track_false") == 0.0  # without running stats: batch stats in both


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


def test_shadow_statistics_equal_the_layers_own():
    """One training run tracks every momentum: each shadow equals what a BatchNorm with that momentum stores
    after the same training (training never reads the running statistics)."""
    data = load_images("digits")
    seeds = (0, 1)
    models = {m: build_members(seeds, num_classes=10, widths=(4, 4, 4), norm="batchnorm",
                               norm_kwargs={"momentum": m}) for m in (0.1, None)}
    shadows = ShadowStats(models[0.1], (0.3, 0.1, None))
    for model in models.values():
        train_members(model, data.x_train, data.y_train, seeds, batch_size=8, examples=8 * 12, lr=0.05)
    shadows.remove()
    for m, model in models.items():
        k = shadows.momenta.index(m)
        bns = [x for x in model.modules() if isinstance(x, torch.nn.modules.batchnorm._BatchNorm)]
        for layer, (rm, rv) in zip(bns, shadows.state[k], strict=True):
            torch.testing.assert_close(rm.float(), layer.running_mean, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(rv.float(), layer.running_var, rtol=1e-4, atol=1e-5)
    # m=0.3 differs from 0.1 (the shadows are not all the same estimate).
    assert not torch.allclose(shadows.state[0][0][0], shadows.state[1][0][0])


def test_gap_cell_rows():
    config = dataclasses.replace(CONFIG, gap_steps=(2, 4), gap_seeds=2, widths=(4, 4, 4))
    table = _run(Cell("gap", (0, 1), (("batch_size", 8),)), config)
    names = {"acc_batch_stats", "acc_recalibrated"} | {f"{k}/m={momentum_label(m)}" for m in config.gap_momenta
                                                       for k in ("acc_running", "stat_err")}
    assert set(table["metric"]) == names
    assert set(table["step"]) == {2, 4}
    assert len(table) == len(names) * 2 * 2
    assert (table.loc[table["metric"].str.startswith("stat_err"), "value"] > 0).all()


# ---------------------------------------------------------------- synthetic stored runs

SYN = dataclasses.replace(
    CONFIG, seeds=12, convention_steps=5, momenta=(0.3, 0.1, 0.01, None), batch_sizes=(4, 16, 64), steps=1000,
    early_step=10, gap_momenta=(0.3, 0.1, 0.01, None), gap_batch_sizes=(8, 32, 128), gap_steps=(20, 600),
    gap_seeds=8)
_EXACT: dict[int, list[pd.DataFrame]] = {}


def _exact_frames(config: Config) -> list[pd.DataFrame]:
    """The deterministic arms, run for real (cheap), once per walk length."""
    if config.walk_iterations not in _EXACT:
        _EXACT[config.walk_iterations] = [_run(Cell("walkthrough", (0,)), config),
                                          _run(Cell("layer-facts", (0,)), config),
                                          _run(Cell("conventions", (0, 1)), config)]
    return [f.copy() for f in _EXACT[config.walk_iterations]]


def physical_error(m: float | None, b: int, t: int) -> float:
    """RMS running-mean error in σ: the (0, 1) start's leftover plus an exponential average's noise floor
    sqrt(m/(2-m)/B), or 1/sqrt(B t) for the cumulative average (what a stationary population gives)."""
    if m is None:
        return math.sqrt(1.0 / (b * t))
    return math.sqrt(((1 - m) ** t) ** 2 + m / (2 - m) / b)


def _converge_frame(config: Config, error: Callable, var_bias: float, noise: float, rng) -> pd.DataFrame:
    rows = []
    for m in config.momenta:
        for b in config.batch_sizes:
            for t in _log_steps(config.steps, config.early_step):
                for seed in range(config.seeds):
                    e = error(m, b, t) * math.exp(rng.normal(0, noise))
                    rows += [(f"converge/m={momentum_label(m)}", b, seed, t, "mean_err", e),
                             (f"converge/m={momentum_label(m)}", b, seed, t, "var_err", 1.5 * e),
                             (f"converge/m={momentum_label(m)}", b, seed, t, "var_bias", var_bias + rng.normal(0, noise / 10))]
    return pd.DataFrame(rows, columns=["arm", "batch_size", "seed", "step", "metric", "value"])


def gap_physical(metric: str, m: float | None, b: int, steps: int) -> float:
    """Means of the CNN arm's metrics in a world where seed 002's CNN claims hold: a slow average is stale
    after short training, noise hurts fast averages at small batches and lag hurts slow ones at large."""
    if metric == "acc_batch_stats":
        return 0.80
    if metric == "acc_recalibrated":
        return 0.82
    stale = {None: 0.6, 0.01: 0.15, 0.1: 0.05, 0.3: 0.03}[m] * (1.0 if steps > 100 else 3.0)
    noise = {None: 0.0, 0.01: 0.02, 0.1: 0.1, 0.3: 0.3}[m] * 32 / b
    err = math.sqrt(stale ** 2 + noise ** 2)
    return err if metric == "stat_err" else 0.82 - min(0.5, err)


def _gap_frame(config: Config, gap: Callable, noise: float, rng) -> pd.DataFrame:
    rows = []
    for b in config.gap_batch_sizes:
        for steps in config.gap_steps:
            for seed in range(config.gap_seeds):
                shift = rng.normal(0, noise)  # a seed-level effect shared by every metric of the network
                for metric in ("acc_batch_stats", "acc_recalibrated"):
                    rows.append((b, seed, steps, metric, gap(metric, None, b, steps) + shift + rng.normal(0, noise / 4)))
                for m in config.gap_momenta:
                    lab = momentum_label(m)
                    rows.append((b, seed, steps, f"acc_running/m={lab}",
                                 gap("acc_running", m, b, steps) + shift + rng.normal(0, noise / 4)))
                    rows.append((b, seed, steps, f"stat_err/m={lab}",
                                 gap("stat_err", m, b, steps) * math.exp(rng.normal(0, noise))))
    return pd.DataFrame(rows, columns=["batch_size", "seed", "step", "metric", "value"]).assign(arm="gap")


def synthetic(config: Config = SYN, *, error: Callable = physical_error, var_bias: float = 0.0,
              gap: Callable = gap_physical, noise: float = 0.05, facts: dict | None = None,
              seed: int = 0) -> StoredRun:
    """A stored run whose convergence and CNN tables follow ``error`` / ``gap`` (plus noise); the deterministic
    arms are run for real, with ``facts`` (metric -> value) overwriting stored numbers."""
    rng = np.random.default_rng(seed)
    frames = [*_exact_frames(config), _converge_frame(config, error, var_bias, noise, rng),
              _gap_frame(config, gap, noise, rng)]
    metrics = pd.concat(frames, ignore_index=True)
    for (metric, step), value in (facts or {}).items():
        sel = metrics["metric"] == metric
        if step is not None:
            sel &= metrics["step"] == step
        assert sel.any(), metric
        metrics.loc[sel, "value"] = value
    return StoredRun(config, metrics, pd.DataFrame(), pd.DataFrame(), {}, Path("."))


def verdicts(run: StoredRun) -> dict[str, str]:
    return {c.id: c.verdict for c in STUDY.claims(run)}


def claim(run: StoredRun, cid: str):
    return next(c for c in STUDY.claims(run) if c.id == cid)


def test_physical_world_supports_every_seeded_claim():
    claims = {c.id: c for c in STUDY.claims(synthetic())}
    expected_refuted = {"seed002-momentum-argument", "track-running-stats-is-mode"}
    for cid, c in claims.items():
        assert c.verdict == ("refuted" if cid in expected_refuted else "supported"), (cid, c.detail)
        if c.unit == "exact":
            assert c.n is None
        else:
            assert c.unit == "seed" and isinstance(c.n, int) and c.n > 0, cid
    assert claims["running-stats-approach-truth"].n == SYN.seeds
    assert claims["cumulative-lags-in-training"].n == SYN.gap_seeds


# Exact claims: a correct stored value and a wrong one.
@pytest.mark.parametrize(("cid", "facts", "flipped"), [
    ("walkthrough-feature-1s", {("running_mean/f0", 0): 0.31}, "refuted"),
    ("walkthrough-feature-1s", {("running_var/f0", 2): 0.35}, "refuted"),
    ("walkthrough-feature-2s", {("running_mean/f1", 0): 0.61}, "refuted"),
    ("seed002-momentum-in-its-formula", {("seed002_formula_momentum", None): 0.1}, "refuted"),
    ("seed002-momentum-argument", {("default_momentum", None): 0.9}, "supported"),
    ("initial-running-stats", {("initial_var_maxdev", None): 1.0}, "refuted"),
    ("running-var-unbiased", {("running_var_over_unbiased", None): 0.875}, "refuted"),
    ("normalize-biased", {("output_vs_biased_maxdiff", None): 0.07}, "refuted"),
    ("running-stats-not-used-in-training", {("train_output_diff_other_running", None): 0.3}, "refuted"),
    ("running-stats-not-used-in-training", {("eval_output_diff_other_running", None): 0.0}, "refuted"),
    ("eval-uses-running", {("eval_vs_running_maxdiff", None): 0.2}, "refuted"),
    ("eval-uses-running", {("running_in_state_dict", None): 0.0}, "refuted"),
    ("track-running-stats-is-mode", {("mode_switch_diff_track_true", None): 0.0}, "supported"),
    ("keras-equals-torch", {("maxdiff/keras/m=0.1", None): 1e-3}, "refuted"),
])
def test_exact_claims_flip_with_the_stored_value(cid, facts, flipped):
    assert claim(synthetic(), cid).verdict != flipped
    assert claim(synthetic(facts=facts), cid).verdict == flipped


def _no_effect_of(arg: str) -> Callable:
    """``physical_error`` with one argument frozen (m at 0.1, B at 16 or t at 1000): that factor has no effect."""
    def error(m, b, t):
        return physical_error(0.1 if arg == "m" else m, 16 if arg == "b" else b, 1000 if arg == "t" else t)
    return error


def _reversed_speed(m, b, t):
    # The fast average is the slow one early on (and vice versa): speed reversed, floors unchanged.
    swap = {0.3: 0.01, 0.01: 0.3}.get(m, m) if t <= 10 else m
    return physical_error(swap, b, t)


def _cumulative_stalls(m, b, t):
    return 0.5 if m is None else physical_error(m, b, t)


def _still_falling(m, b, t):
    return physical_error(None, b, t) * (1 + (m or 0))  # every average keeps falling like 1/sqrt(B t)


def _growing(m, b, t):
    return physical_error(m, b, 1) * (1 + t / 100)


def _small_batch_closer(m, b, t):
    return physical_error(m, 64 * 4 // b, t)


def _floors_reversed(m, b, t):
    return physical_error(m, b, t) if t < 500 or m is None else math.sqrt(0.3 / b) * (0.2 + 0.01 / m)


@pytest.mark.parametrize(("cid", "error", "var_bias", "noise", "expected"), [
    ("running-stats-approach-truth", _no_effect_of("t"), 0.0, 0.05, "refuted"),
    ("running-stats-approach-truth", _growing, 0.0, 0.05, "refuted"),
    ("running-stats-approach-truth", physical_error, 0.0, 3.0, "inconclusive"),
    ("small-batch-noisier", _no_effect_of("b"), 0.0, 0.05, "refuted"),
    ("small-batch-noisier", _small_batch_closer, 0.0, 0.05, "refuted"),
    ("larger-step-converges-faster", _reversed_speed, 0.0, 0.05, "refuted"),
    ("larger-step-converges-faster", _no_effect_of("m"), 0.0, 0.05, "refuted"),
    ("larger-step-fluctuates-more", _no_effect_of("m"), 0.0, 0.05, "refuted"),
    ("larger-step-fluctuates-more", _floors_reversed, 0.0, 0.05, "refuted"),
    ("ema-error-plateaus", _still_falling, 0.0, 0.05, "refuted"),
    ("ema-error-plateaus", physical_error, 0.0, 1.5, "inconclusive"),
    ("cumulative-closest-stationary", _cumulative_stalls, 0.0, 0.05, "refuted"),
    ("cumulative-closest-stationary", physical_error, 0.0, 3.0, "inconclusive"),
    ("running-var-unbiased-estimate", physical_error, math.log(3 / 4), 0.05, "refuted"),
    ("running-var-unbiased-estimate", physical_error, 0.0, 3.0, "inconclusive"),
])
def test_convergence_claims_flip(cid, error, var_bias, noise, expected):
    assert claim(synthetic(), cid).verdict == "supported"
    assert claim(synthetic(error=error, var_bias=var_bias, noise=noise), cid).verdict == expected


def _gap_with(**changes) -> Callable:
    """``gap_physical`` with some terms replaced: ``no_stale_short`` (short training as fresh as long),
    ``recal_bad`` (recalibrated accuracy far below batch stats), ``stale_long`` (long training as stale as
    short), ``cumulative_fresh`` (None tracks like a fast average), ``no_noise`` (batch size does not matter),
    ``noise_everywhere`` (noise dominates at every batch size), ``lag_everywhere`` (lag dominates), ``no_gap``
    (every momentum's running statistics as good as recalibrated ones)."""
    def gap(metric, m, b, steps):
        if metric == "acc_recalibrated" and changes.get("recal_bad"):
            return 0.4
        if metric in ("acc_batch_stats", "acc_recalibrated"):
            return gap_physical(metric, m, b, steps)
        stale = {None: 0.6, 0.01: 0.15, 0.1: 0.05, 0.3: 0.03}[m]
        if changes.get("cumulative_fresh") and m is None:
            stale = 0.01
        if not changes.get("no_stale_short") and steps < 100:
            stale *= 3.0
        if changes.get("stale_long") and steps > 100:
            stale *= 3.0
        noise_scale = {None: 0.0, 0.01: 0.02, 0.1: 0.1, 0.3: 0.3}[m]
        noise = 0.0 if changes.get("no_noise") else noise_scale * 32 / b
        if changes.get("noise_everywhere"):
            noise = noise_scale * 4
        if changes.get("lag_everywhere"):
            noise, stale = noise_scale * 0.01, stale * 2
        err = math.sqrt(stale ** 2 + noise ** 2)
        if changes.get("no_gap"):
            return 0.1 if metric == "stat_err" else 0.82
        return err if metric == "stat_err" else 0.82 - min(0.5, err)
    return gap


@pytest.mark.parametrize(("cid", "changes", "expected"), [
    ("short-training-eval-gap", {"no_gap": True}, "refuted"),
    ("recalibration-closes-gap", {"recal_bad": True}, "refuted"),
    ("recalibration-closes-gap", {"no_gap": True}, "inconclusive"),  # two noise-sized gaps: no ratio
    ("long-training-shrinks-gap", {"stale_long": True, "no_stale_short": True}, "refuted"),
    ("long-training-shrinks-gap", {"no_gap": True}, "inconclusive"),
    ("cumulative-lags-in-training", {"cumulative_fresh": True}, "refuted"),
    ("cumulative-lags-in-training", {"no_gap": True}, "inconclusive"),
    ("small-batch-large-momentum", {"lag_everywhere": True}, "refuted"),
    ("small-batch-large-momentum", {"no_gap": True}, "inconclusive"),
    ("large-batch-small-momentum", {"noise_everywhere": True}, "refuted"),
    ("large-batch-small-momentum", {"no_gap": True}, "inconclusive"),
    ("batch-size-shifts-best-momentum", {"no_noise": True}, "inconclusive"),
    ("batch-size-shifts-best-momentum", {"no_gap": True}, "inconclusive"),
])
def test_gap_claims_flip(cid, changes, expected):
    assert claim(synthetic(), cid).verdict == "supported"
    assert claim(synthetic(gap=_gap_with(**changes)), cid).verdict == expected


def test_batch_size_interaction_reverses():
    """Noise that *grows* with the batch (the advice backwards) refutes the interaction claim."""
    def backwards(metric, m, b, steps):
        return gap_physical(metric, m, 32 * 128 // b if b != 32 else b, steps)
    assert claim(synthetic(gap=backwards), "batch-size-shifts-best-momentum").verdict == "refuted"


def test_networks_that_did_not_learn_are_not_judged():
    def untrained_small(metric, m, b, steps):
        return 0.15 if metric.startswith("acc") and b == 8 else gap_physical(metric, m, b, steps)

    claims = {c.id: c for c in STUDY.claims(synthetic(gap=untrained_small))}
    for cid in ("small-batch-large-momentum", "large-batch-small-momentum", "batch-size-shifts-best-momentum"):
        assert claims[cid].verdict == "inconclusive" and "did not learn" in claims[cid].detail
    assert claims["cumulative-lags-in-training"].verdict == "supported"  # batch 32 learned

    def untrained_all(metric, m, b, steps):
        return 0.12 if metric.startswith("acc") else gap_physical(metric, m, b, steps)

    claims = {c.id: c for c in STUDY.claims(synthetic(gap=untrained_all))}
    for cid in ("short-training-eval-gap", "recalibration-closes-gap", "long-training-shrinks-gap",
                "cumulative-lags-in-training", "small-batch-large-momentum"):
        assert claims[cid].verdict == "inconclusive" and "did not learn" in claims[cid].detail


def test_short_runs_are_not_judged_for_end_of_training_claims():
    short = dataclasses.replace(SYN, steps=200, gap_steps=(20, 100))
    v = verdicts(synthetic(short))
    assert v["larger-step-fluctuates-more"] == "inconclusive"  # 0.99^200 = 13% of the start left
    for cid in ("cumulative-lags-in-training", "small-batch-large-momentum", "large-batch-small-momentum",
                "batch-size-shifts-best-momentum"):
        assert v[cid] == "inconclusive"
        assert "(1-m)^T" in claim(synthetic(short), cid).detail


@pytest.mark.parametrize("changes", [
    {"gap_momenta": (None,)},
    {"gap_momenta": (0.1,)},
    {"momenta": (None,)},
    {"momenta": (0.1, None)},
    {"batch_sizes": (16,), "gap_batch_sizes": (32,)},
    {"momenta": (0.3, 0.01), "gap_momenta": (0.3, 0.01)},
])
def test_degenerate_configs_keep_every_claim(changes):
    """Too few momenta or batch sizes: claims show as inconclusive (named, with why), never vanish or crash."""
    config = dataclasses.replace(SYN, **changes)
    STUDY.check_config(config)
    ids = [c.id for c in STUDY.claims(synthetic(config))]
    full = [c.id for c in STUDY.claims(synthetic())]
    assert ids == full
    for c in STUDY.claims(synthetic(config)):
        if c.verdict == "inconclusive" and c.statistic == "none":
            assert c.detail and c.unit == "seed"


def test_every_sentence_names_claims_the_study_returns():
    ids = {c.id for c in STUDY.claims(synthetic())}
    tested = {i for s in STUDY.seed_sentences for i in s.tested_by}
    assert tested <= ids
    seeded = {c.id for c in STUDY.claims(synthetic()) if c.source.startswith("seed")}
    assert seeded <= tested  # every seeded claim answers some sentence
    assert set(STUDY.post_titles) == set(STUDY.seeds_from)


@pytest.mark.skipif(not SEEDS_DIR.is_dir(), reason="the seed posts are not next to this checkout")
def test_quotes_are_the_posts_own_words():
    texts = {p.name[:3]: "".join(p.read_text(encoding="utf-8").split()) for p in SEEDS_DIR.glob("00*_*.txt")}
    for s in STUDY.seed_sentences:
        assert "".join(s.quote.split()) in texts[s.seed], s.quote
    for post, title in STUDY.post_titles.items():
        assert "".join(title.split()) in texts[post]


def test_figures_render_from_stored_tables():
    figures = STUDY.figures(synthetic())
    assert [f.name for f in figures] == ["walkthrough", "convergence", "train_eval_gap"]
    assert all(f.how_to_read for f in figures)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match=r"seeds: expected an integer in \[2, 10000\], got 1"):
        STUDY.check_config(dataclasses.replace(CONFIG, seeds=1))
    with pytest.raises(ValueError, match="BatchNorm needs two samples"):
        STUDY.check_config(dataclasses.replace(CONFIG, batch_sizes=(1, 4)))
    with pytest.raises(ValueError, match="BatchNorm needs two samples"):
        STUDY.check_config(dataclasses.replace(CONFIG, gap_batch_sizes=(1, 4)))
    with pytest.raises(ValueError, match="gap_batch_sizes: expected at most"):
        STUDY.check_config(dataclasses.replace(CONFIG, gap_batch_sizes=(8, 5000)))


def test_check_available_only_when_the_fallback_cannot_run(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLAB_FASHION_MNIST_DIR", str(tmp_path))  # an empty directory: no Fashion-MNIST
    STUDY.check_available(Config())  # the digits fallback runs every cell of the default preset
    with pytest.raises(OSError, match="Fashion-MNIST is missing"):
        STUDY.check_available(dataclasses.replace(Config(), gap_batch_sizes=(8, 2000)))


def _near_one(metric, m, b, steps):
    """A CNN that classifies almost everything: accuracies of 0.97-0.99, where a 3-seed t-interval passes 1."""
    return gap_physical("stat_err", m, b, steps) if metric == "stat_err" else 0.985


def test_accuracy_bars_and_key_numbers_stay_inside_zero_one():
    config = dataclasses.replace(SYN, gap_seeds=3)
    run = synthetic(config, gap=_near_one, noise=0.01)
    run.metrics.loc[run.metrics["metric"].str.startswith("acc"), "value"] = \
        run.metrics.loc[run.metrics["metric"].str.startswith("acc"), "value"].clip(upper=1.0)
    fig = next(f for f in STUDY.figures(run) if f.name == "train_eval_gap").figure
    accuracy_panels = fig.axes[:len(config.gap_steps)]
    tops = []
    for ax in accuracy_panels:
        for coll in ax.collections:  # the bars' error bars
            tops += [float(np.asarray(seg)[:, 1].max()) for seg in coll.get_segments() if len(seg)]
        # the bars and the bands of the reference lines (axhspan): rectangles in data coordinates
        tops += [float(r.get_y() + r.get_height()) for r in ax.patches]
    assert tops and max(tops) <= 1.0
    # The same accuracies as key numbers: proportions, with intervals inside [0, 1].
    table = declared_table(STUDY.key_numbers(run))
    acc = table[table["scale"] == "proportion"]
    assert len(acc) >= 2 * len(config.gap_steps)
    assert (acc["lo"] >= 0).all() and (acc["hi"] <= 1).all()
    # the t-interval of the same values would not have stayed below 1
    vals = values(run, "gap", "acc_recalibrated", config.gap_steps[0], batch_size=32)
    assert stats.mean_ci(vals).hi > 1.0 or vals.std() == 0


def test_captions_and_notes_name_the_dataset_the_cells_used_after_a_fallback(tmp_path, monkeypatch):
    """Asked for Fashion-MNIST where it is absent, the CNN cells train on digits: the figure caption and the
    notes say so instead of naming the configured dataset."""
    import dataclasses
    import warnings

    from normlab.data import images
    from normlab.engine.load import load_run
    from normlab.engine.runner import run_study
    from normlab.studies import get_study

    monkeypatch.setenv(images.FASHION_MNIST_ENV, str(tmp_path / "absent"))
    images._load_fashion_arrays.cache_clear()
    study = get_study("bn-running-stats")
    config = dataclasses.replace(CONFIG, dataset="fashion-mnist", gap_batch_sizes=(8,),
                                 gap_steps=(2, 4), gap_seeds=2, momenta=(0.3,), batch_sizes=(4,), seeds=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the loader's fallback warning
        run_study(study, config, tmp_path / "run")
    run = load_run(tmp_path / "run", study)
    import matplotlib.pyplot as plt

    figures = study.figures(run)
    caption = next(f.how_to_read for f in figures if f.name == "train_eval_gap")
    for f in figures:
        plt.close(f.figure)
    assert "digits: Fashion-MNIST was unavailable" in caption and "fashion-mnist," not in caption
    assert "Dataset notice:" in study.notes(run) and "fell back" in study.notes(run)
