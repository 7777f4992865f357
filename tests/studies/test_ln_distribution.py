"""ln-distribution: the seed's exact numbers and model, and verdicts that follow the data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from normlab.engine.spec import Cell, CellContext, StoredRun
from normlab.studies.ln_distribution import Config, LnDistribution

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
    assert verdicts["single-sample-var-1"] == "supported"
    assert verdicts["seed-check-var-1"] == "refuted"  # 1.25, not 1
    assert verdicts["batch-sample-var-1"] == "supported"
    assert verdicts["bn-equalizes-features"] == "supported"
    assert verdicts["ln-keeps-feature-spread"] == "supported"
    assert verdicts["ln-makes-rows-normal"] == "refuted"  # LN is affine per row: skewness survives
    assert _metric(run, "layernorm/lognormal", "sample_skew_absdiff_max").max() < 1e-4


def test_verdict_flips_when_ln_did_equalize(run):
    """Synthetic tables where LN's per-feature variances come out equal: the claim must be refuted."""
    m = run.metrics.copy()
    sel = (m["arm"] == "layernorm") & (m["metric"] == "feature_var_cv_after")
    m.loc[sel, "value"] = 1e-5 * (1 + np.arange(sel.sum()) * 0.1)
    fake = dataclasses.replace(run, metrics=m)
    assert {c.id: c.verdict for c in STUDY.claims(fake)}["ln-keeps-feature-spread"] == "refuted"


def test_blind_control_makes_the_claim_inconclusive(run):
    m = run.metrics.copy()
    sel = (m["arm"] == "batchnorm") & (m["metric"] == "feature_var_cv_after")
    m.loc[sel, "value"] = 0.2 + 0.01 * np.arange(sel.sum())  # BN "fails" to equalize: instrument suspect
    verdicts = {c.id: c.verdict for c in STUDY.claims(dataclasses.replace(run, metrics=m))}
    assert verdicts["bn-equalizes-features"] == "refuted"
    assert verdicts["ln-keeps-feature-spread"] == "inconclusive"


def test_figures_have_reading_text(run):
    figs = STUDY.figures(run)
    assert [f.name for f in figs] == ["seed_figure", "rows_vs_features", "single_sample", "shape_control"]
    assert all(len(f.how_to_read) > 80 for f in figs)
    assert len(figs[0].figure.axes) == 6  # the seed's 2x3 layout


@pytest.mark.parametrize(("override", "name"), [({"seeds": 1}, "seeds"), ({"sample": (3.0,)}, "sample"),
                                                ({"batch": 1}, "batch")])
def test_bad_config_is_named(override, name):
    with pytest.raises(ValueError, match=name):
        STUDY.check_config(dataclasses.replace(Config(), **override))
