"""ln-distribution: the seed's exact numbers and model, and verdicts that follow the data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab.engine.spec import Cell, CellContext, StoredRun
from normlab.studies.ln_distribution import Config, LnDistribution
from normlab.studies.ln_distribution.claims import MetricView, retention
from normlab.studies.ln_distribution.model import order_flip_frac, pre_and_post, row_corr

STUDY = LnDistribution()



def _ctx(cell: Cell, tmp: Path) -> CellContext:
    return CellContext(cell=cell, device=torch.device("cpu"), probe_dir=tmp, tb_dir=None)


def _stored(config: Config, tmp: Path) -> StoredRun:
    """Run every cell in memory and assemble what the engine would read back."""
    metrics, extra = [], {}
    for cell in STUDY.cells(config):
        res = STUDY.run_cell(config, _ctx(cell, tmp))
        metrics.append(res.metrics.assign(arm=cell.arm))
        for name, table in res.extra.items():
            extra.setdefault(name, []).append(table.assign(arm=cell.arm))
    return StoredRun(config, pd.concat(metrics, ignore_index=True), pd.DataFrame(), pd.DataFrame(),
                     {k: pd.concat(v, ignore_index=True) for k, v in extra.items()}, tmp)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> StoredRun:
    return _stored(Config(seeds=6), tmp_path_factory.mktemp("ln"))


def _metric(run: StoredRun, arm: str, metric: str) -> np.ndarray:
    m = run.metrics
    return m[(m["arm"] == arm) & (m["metric"] == metric)].sort_values("seed")["value"].to_numpy()


def test_single_sample_matches_float64_oracle(run):
    x = np.array([2.0, 3.0, 5.0, 1.0, 4.0])
    eps = 1e-5
    y = (x - x.mean()) / np.sqrt(x.var() + eps)  # LayerNorm, weight 1, bias 0, biased variance
    table = run.extra["single_sample"].sort_values("index")
    np.testing.assert_allclose(table["after"], y, atol=1e-6)
    assert _metric(run, "single-sample", "mean")[0] == pytest.approx(0.0, abs=1e-6)
    assert _metric(run, "single-sample", "var_biased")[0] == pytest.approx(y.var(), abs=1e-6)
    # The seed prints Tensor.var(): unbiased, 5/4 of the biased value, i.e. about 1.25 and not 1.
    assert _metric(run, "single-sample", "var_unbiased")[0] == pytest.approx(y.var(ddof=1), abs=1e-6)
    assert y.var(ddof=1) == pytest.approx(1.25 * 2 / (2 + eps))


def test_seed_zero_is_the_seeds_own_run(run):
    torch.manual_seed(0)  # the seed's script, line by line
    linear, ln = torch.nn.Linear(100, 50), torch.nn.LayerNorm(50)
    x = torch.randn(100, 100, requires_grad=True)
    h = linear(x).detach()
    y = ln(linear(x)).detach()
    t = run.extra["first_seed_batch"]
    for arm, stage, expected in (("layernorm", "before", h), ("layernorm", "after", y), ("batchnorm", "before", h)):
        g = t[(t["arm"] == arm) & (t["stage"] == stage) & (t["seed"] == 0)].sort_values(["row", "col"])
        np.testing.assert_array_equal(g["value"].to_numpy().reshape(100, 50), expected.numpy())


def test_batch_metrics_against_direct_computation(run):
    t = run.extra["first_seed_batch"]
    g = t[(t["arm"] == "batchnorm") & (t["stage"] == "after")].sort_values(["row", "col"])
    y = g["value"].to_numpy().reshape(100, 50).astype(np.float64)
    var_f = y.var(axis=0)
    assert _metric(run, "batchnorm", "feature_var_cv_after")[0] == pytest.approx(var_f.std(ddof=1) / var_f.mean())
    var_s = y.var(axis=1)
    assert _metric(run, "batchnorm", "sample_var_mean_after")[0] == pytest.approx(var_s.mean())


def test_claims_follow_the_math(run):
    verdicts = {c.id: c.verdict for c in STUDY.claims(run)}
    assert verdicts == {
        "single-sample-mean-0": "supported", "single-sample-var-1": "supported",
        "seed-check-var-1": "refuted",  # 1.25, not 1
        "ln-has-learnable-affine": "supported", "batch-sample-mean-0": "supported",
        "batch-sample-var-1": "supported", "bn-feature-mean-0": "supported", "bn-feature-var-1": "supported",
        "bn-equalizes-features": "supported", "ln-keeps-feature-spread": "supported",
        "ln-keeps-sample-relations": "supported", "bn-distorts-sample-relations": "supported",
        "ln-independent-of-batch": "supported", "bn-depends-on-batch": "supported",
        "ln-makes-rows-normal": "refuted",  # LN is affine per row: skewness survives
        "bn-makes-features-normal": "refuted",  # BN is affine per feature: skewness survives
    }
    assert _metric(run, "layernorm/lognormal", "sample_skew_absdiff_max").max() < 1e-4


def test_every_claim_has_unit_and_n(run):
    for c in STUDY.claims(run):
        if c.unit == "exact":
            assert c.n is None, c.id
        else:
            assert c.unit == "seed" and c.n == run.config.seeds, (c.id, c.unit, c.n)


# ---------------------------------------------------------------- synthetic runs: every verdict can flip

SEEDS = 12
ARMS = ("layernorm", "batchnorm", "layernorm/equal", "batchnorm/equal", "layernorm/unequal", "batchnorm/unequal",
        "layernorm/lognormal", "batchnorm/lognormal")


def _synthetic(**over) -> StoredRun:
    """Stored metrics built by hand. Defaults: what LN and BN really do; ``over`` replaces one knob."""
    k = {
        "mean": 0.0, "var_biased": 0.99999, "var_unbiased": 1.2499, "learnable_affine": 1.0,
        "ln_mean_absmax": 5e-8, "ln_var": 0.99997, "bn_mean_absmax": 5e-8, "bn_var": 0.99997,
        "ln_keep": 0.95, "bn_keep": 0.0, "ln_flip": 0.0, "ln_corr_min": 1.0,
        "bn_flip_seed": 0.05, "bn_flip_null": 0.035, "ln_dep": 0.0, "bn_dep": 0.5,
        "ln_skew": 2.5, "bn_skew": 3.2,
    } | over
    rng = np.random.default_rng(0)
    noise = lambda scale: rng.normal(0, scale, SEEDS)  # noqa: E731
    cv_before_equal, cv_before_unequal = 0.14 + noise(0.01), 1.4 + noise(0.02)
    cv_after_null = {"layernorm": 0.14 + noise(0.01), "batchnorm": 3e-5 + noise(1e-6)}
    per_arm: dict[str, dict[str, np.ndarray]] = {arm: {} for arm in ARMS}
    for norm, keep in (("layernorm", k["ln_keep"]), ("batchnorm", k["bn_keep"])):
        per_arm[f"{norm}/equal"] |= {"feature_var_cv_before": cv_before_equal,
                                     "feature_var_cv_after": cv_after_null[norm]}
        kept = keep + noise(0.02)
        per_arm[f"{norm}/unequal"] |= {
            "feature_var_cv_before": cv_before_unequal,
            "feature_var_cv_after": cv_after_null[norm] + kept * (cv_before_unequal - cv_before_equal)}
    flip_ln = np.abs(k["ln_flip"] * (1 + noise(0.1)))
    for arm in ("layernorm", "layernorm/unequal"):
        per_arm[arm] |= {"order_flip_frac": flip_ln, "sample_corr_min": np.full(SEEDS, k["ln_corr_min"])}
    per_arm["layernorm"] |= {
        "sample_mean_absmax_after": np.abs(k["ln_mean_absmax"] + noise(1e-8)),
        "sample_var_mean_after": k["ln_var"] + noise(1e-6), "batch_dependence_maxdiff": np.full(SEEDS, k["ln_dep"]),
        "feature_var_cv_before": 0.16 + noise(0.01), "feature_var_cv_after": 0.155 + noise(0.01),
        "sample_skew_before": noise(0.01)}
    per_arm["batchnorm"] |= {
        "feature_mean_absmax_after": np.abs(k["bn_mean_absmax"] + noise(1e-8)),
        "feature_var_mean_after": k["bn_var"] + noise(1e-6), "batch_dependence_maxdiff": k["bn_dep"] * (1 + noise(0.1)),
        "order_flip_frac": k["bn_flip_seed"] + noise(0.002), "sample_corr_mean": 0.98 + noise(0.001)}
    per_arm["batchnorm/equal"]["order_flip_frac"] = k["bn_flip_null"] + noise(0.002)
    per_arm["batchnorm/unequal"]["order_flip_frac"] = 0.12 + noise(0.002)
    per_arm["layernorm/lognormal"] |= {"sample_skew_after": k["ln_skew"] + noise(0.1),
                                       "sample_skew_absdiff_max": np.full(SEEDS, 1e-7)}
    per_arm["batchnorm/lognormal"] |= {"feature_skew_after": k["bn_skew"] + noise(0.1),
                                       "feature_skew_before": k["bn_skew"] + noise(0.1)}
    rows = [{"arm": arm, "seed": seed, "step": 0, "metric": metric, "value": float(v[seed])}
            for arm, metrics in per_arm.items() for metric, v in metrics.items() for seed in range(SEEDS)]
    rows += [{"arm": "single-sample", "seed": 0, "step": 0, "metric": key, "value": k[key]}
             for key in ("mean", "var_biased", "var_unbiased", "learnable_affine")]
    config = dataclasses.replace(Config(), seeds=SEEDS)
    return StoredRun(config, pd.DataFrame(rows), pd.DataFrame(), pd.DataFrame(), {}, Path("."))


def _verdicts(**over) -> dict[str, str]:
    return {c.id: c.verdict for c in STUDY.claims(_synthetic(**over))}


TRUE_VERDICTS = {
    "single-sample-mean-0": "supported", "single-sample-var-1": "supported", "seed-check-var-1": "refuted",
    "ln-has-learnable-affine": "supported", "batch-sample-mean-0": "supported", "batch-sample-var-1": "supported",
    "bn-feature-mean-0": "supported", "bn-feature-var-1": "supported", "bn-equalizes-features": "supported",
    "ln-keeps-feature-spread": "supported", "ln-keeps-sample-relations": "supported",
    "bn-distorts-sample-relations": "supported", "ln-independent-of-batch": "supported",
    "bn-depends-on-batch": "supported", "ln-makes-rows-normal": "refuted", "bn-makes-features-normal": "refuted",
}


def test_synthetic_truth_gives_the_real_verdicts():
    assert _verdicts() == TRUE_VERDICTS


@pytest.mark.parametrize(("over", "expected"), [
    ({"mean": 0.1}, {"single-sample-mean-0": "refuted"}),
    ({"var_biased": 1.25}, {"single-sample-var-1": "refuted"}),
    ({"var_unbiased": 1.0}, {"seed-check-var-1": "supported"}),
    ({"learnable_affine": 0.0}, {"ln-has-learnable-affine": "refuted"}),
    ({"ln_mean_absmax": 1e-3}, {"batch-sample-mean-0": "refuted"}),
    ({"ln_var": 0.9}, {"batch-sample-var-1": "refuted"}),
    ({"bn_mean_absmax": 1e-2}, {"bn-feature-mean-0": "refuted"}),
    ({"bn_var": 0.5}, {"bn-feature-var-1": "refuted"}),
    # LN equalizes like BN would: refuted (and the BN control still sees BN equalize)
    ({"ln_keep": 0.02}, {"ln-keeps-feature-spread": "refuted", "bn-equalizes-features": "supported"}),
    ({"ln_keep": 0.5}, {"ln-keeps-feature-spread": "inconclusive"}),  # right at the midpoint: cannot tell
    # the control fails to see BN equalize: the LN claim is not trusted either way
    ({"bn_keep": 0.9}, {"bn-equalizes-features": "refuted", "ln-keeps-feature-spread": "inconclusive"}),
    ({"ln_flip": 0.02}, {"ln-keeps-sample-relations": "refuted"}),
    ({"ln_corr_min": 0.99}, {"ln-keeps-sample-relations": "refuted"}),
    ({"bn_flip_seed": 0.035}, {"bn-distorts-sample-relations": "inconclusive"}),  # no more than noise
    ({"bn_flip_seed": 0.02}, {"bn-distorts-sample-relations": "refuted"}),  # less than noise
    ({"ln_dep": 0.1}, {"ln-independent-of-batch": "refuted"}),
    ({"bn_dep": 0.0}, {"bn-depends-on-batch": "refuted", "ln-independent-of-batch": "inconclusive"}),
    ({"ln_skew": 0.0}, {"ln-makes-rows-normal": "supported"}),
    ({"bn_skew": 0.0}, {"bn-makes-features-normal": "supported"}),
])
def test_each_verdict_flips_with_the_data(over, expected):
    verdicts = _verdicts(**over)
    assert verdicts == TRUE_VERDICTS | expected


@settings(max_examples=25, deadline=None)
@given(keep=st.floats(0.0, 1.2))
def test_spread_verdict_follows_the_retained_share(keep):
    """Whatever share of the spread LN keeps, the verdict is on the side of the threshold the data are."""
    verdict = _verdicts(ln_keep=keep)["ln-keeps-feature-spread"]
    if keep > 0.6:
        assert verdict == "supported"
    elif keep < 0.4:
        assert verdict == "refuted"
    else:
        assert verdict in ("supported", "refuted", "inconclusive")


def test_retention_subtracts_the_null():
    """A norm that leaves the unequal features exactly as noisy as equal ones kept nothing beyond noise."""
    run = _synthetic(ln_keep=0.0)
    kept = retention(MetricView(run.metrics), "layernorm")
    assert abs(kept.mean()) < 0.03


def test_flip_fraction_and_correlation_against_numpy():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(7, 6, generator=g, dtype=torch.float64)
    y = h * torch.tensor([1.0, -1.0, 2.0, 0.5, 1.0, 3.0], dtype=torch.float64)  # feature 1 negated
    a, b = h.numpy(), y.numpy()
    flips = [np.sign(a[i, j] - a[i, k]) * np.sign(b[i, j] - b[i, k]) < 0
             for i in range(7) for j in range(6) for k in range(j + 1, 6)]
    assert order_flip_frac(h, y) == pytest.approx(np.mean(flips))
    assert order_flip_frac(h, 3 * h - 1) == 0.0  # an increasing affine map keeps every order
    corr = [np.corrcoef(a[i], b[i])[0, 1] for i in range(7)]
    np.testing.assert_allclose(row_corr(h, y).numpy(), corr, atol=1e-12)


def test_batch_dependence_is_measured_on_the_norms(run):
    assert _metric(run, "layernorm", "batch_dependence_maxdiff").max() <= 1e-6
    assert _metric(run, "batchnorm", "batch_dependence_maxdiff").min() > 1e-3


def test_unequal_arm_shares_z_with_the_null():
    config = Config(seeds=2)
    h_eq, _, _ = pre_and_post(config, "layernorm/equal", 1)
    h_uneq, _, _ = pre_and_post(config, "batchnorm/unequal", 1)
    scales = torch.logspace(np.log10(0.25), np.log10(4.0), 50)
    torch.testing.assert_close(h_uneq, h_eq * scales)
    assert float(scales.max() / scales.min()) == pytest.approx(16.0)


def test_seed_sentences_quote_the_post_and_name_real_claims(run):
    ids = {c.id for c in STUDY.claims(run)}
    for s in STUDY.seed_sentences:
        assert set(s.tested_by) <= ids, s.tested_by
    assert STUDY.post_titles == {"001": "什么是Layer Normalization?"}
    posts = list(Path("/work/shared/seeds").glob("001_*.txt")) if Path("/work/shared/seeds").is_dir() else []
    if not posts:
        pytest.skip("the seed posts are not on this machine")
    text = posts[0].read_text()
    for s in STUDY.seed_sentences:
        assert s.quote in text, s.quote


def test_figures_have_reading_text(run):
    figs = STUDY.figures(run)
    assert [f.name for f in figs] == ["seed_figure", "rows_vs_features", "unequal_scales", "sample_relations",
                                      "single_sample", "shape_control"]
    assert all(len(f.how_to_read) > 80 for f in figs)
    assert len(figs[0].figure.axes) == 6  # the seed's 2x3 layout


@pytest.mark.parametrize(("override", "name"), [({"seeds": 1}, "seeds"), ({"sample": (3.0,)}, "sample"),
                                                ({"batch": 3}, "batch"),
                                                ({"scale_range": (2.0, 2.0)}, "scale_range")])
def test_bad_config_is_named(override, name):
    with pytest.raises(ValueError, match=name):
        STUDY.check_config(dataclasses.replace(Config(), **override))
