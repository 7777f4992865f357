"""ln-distribution (seed 001): what LayerNorm does to a sample, and what it does not do to a batch.

The seed pushes one sample ``[2, 3, 5, 1, 4]`` through ``LayerNorm(5)`` and ``randn(100, 100)`` through
``Linear(100, 50) -> LayerNorm(50)`` (``torch.manual_seed(0)``), then draws a 2x3 figure. LayerNorm
standardizes each *row* (sample) over its features:

.. math::  y_{ij} = \\frac{h_{ij} - \\mu_i}{\\sqrt{\\sigma_i^2 + \\epsilon}}, \\quad
           \\mu_i = \\tfrac1F \\sum_j h_{ij}, \\quad \\sigma_i^2 = \\tfrac1F \\sum_j (h_{ij} - \\mu_i)^2

so each row gets mean 0 and *biased* variance ``σ²/(σ²+ε) ≈ 1``. The seed checks with ``Tensor.var()``,
which is unbiased (divides by ``F - 1``) and reads ``F/(F-1)`` (1.25 for ``F = 5``), not 1.

Arms (every seed ``s`` runs ``torch.manual_seed(s)`` then builds the model and data in the seed's order,
so seed 0 is the seed's own run and all arms of a seed see the same pre-norm activations):

* ``single-sample``: the seed's 5-value sample (deterministic).
* ``layernorm``: ``Linear(100, 50) -> LayerNorm(50)``, the seed's model.
* ``batchnorm`` (control): the same Linear and data, ``BatchNorm1d(50)`` instead: it standardizes each
  *column* (feature) over the batch, so it shows what "equalizing per-feature variance" looks like.
* ``layernorm/lognormal`` (control): ``LayerNorm(50)`` on strongly skewed rows (``exp(randn)``): LN is an
  affine map of each row, so it cannot change a row's shape; this tests the seed's remark that after LN
  "a single sample is pulled into a normal distribution".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from normlab.engine.config import (
    Check,
    integer,
    items,
    number,
    seeds_check,
)
from normlab.engine.spec import Cell, CellContext, CellResult, Claim, Figure, StoredRun, Study
from normlab.kit import stats
from normlab.nn.registry import create_norm

SOURCE = "seed 001"


@dataclass
class Config:
    sample: tuple[float, ...] = (2.0, 3.0, 5.0, 1.0, 4.0)  # the seed's single sample
    in_features: int = 100  # Linear(100, 50) on randn(100, 100), as in the seed
    out_features: int = 50
    batch: int = 100
    eps: float = 1e-5  # torch's LayerNorm/BatchNorm default
    seeds: int = 100  # seeds 0..seeds-1; seed 0 is the seed's torch.manual_seed(0)
    equal_cv_tol: float = 0.01  # "equalized": per-feature variances within 1% of each other (cv < tol)
    var_margin: float = 1e-3  # |biased variance - 1| counted as "variance 1"
    mean_tol: float = 1e-5  # |mean| counted as "mean 0"
    normal_skew_margin: float = 0.5  # |skewness| a "normal" row may show

    checks: ClassVar[dict[str, Check]] = {
        "sample": items(number(), min_len=2),  # a variance needs two values
        "in_features": integer(2),
        "out_features": integer(2),
        "batch": integer(2),
        "eps": number(0, lo_open=True),
        "seeds": seeds_check(),
        "equal_cv_tol": number(0, lo_open=True),
        "var_margin": number(0, lo_open=True),
        "mean_tol": number(0, lo_open=True),
        "normal_skew_margin": number(0, lo_open=True),
    }


def _row_stats(t: torch.Tensor, dim: int) -> dict[str, torch.Tensor]:
    """Mean, biased/unbiased variance and skewness along ``dim`` (float64)."""
    t = t.double()
    mean = t.mean(dim)
    var_b = t.var(dim, correction=0)
    centered = t - t.mean(dim, keepdim=True)
    skew = (centered**3).mean(dim) / var_b.clamp_min(1e-300) ** 1.5
    return {"mean": mean, "var_b": var_b, "var_u": t.var(dim, correction=1), "skew": skew}


def _cv(v: torch.Tensor) -> float:
    """Coefficient of variation: how unequal a set of variances is (0 = all equal)."""
    return float(v.std(correction=1) / v.mean())


def _pre_and_post(config: Config, arm: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The pre-norm activations ``h`` and the normalized ``y`` for one seed, built in the seed's order."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if arm == "layernorm/lognormal":
            norm = create_norm("layernorm", config.out_features, eps=config.eps)
            h = torch.randn(config.batch, config.out_features).exp()
        else:
            linear = torch.nn.Linear(config.in_features, config.out_features)
            kind = "batchnorm" if arm == "batchnorm" else "layernorm"
            norm = create_norm(kind, config.out_features, eps=config.eps)
            x = torch.randn(config.batch, config.in_features)
            h = linear(x)
    with torch.no_grad():
        return h.detach(), norm(h).detach()  # BN in train mode: batch statistics, as a fresh model uses


def _batch_metrics(h: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    rows_h, rows_y = _row_stats(h, 1), _row_stats(y, 1)  # per sample, over features
    cols_h, cols_y = _row_stats(h, 0), _row_stats(y, 0)  # per feature, over the batch
    return {
        "sample_mean_absmax_after": float(rows_y["mean"].abs().max()),
        "sample_var_mean_after": float(rows_y["var_b"].mean()),
        "sample_var_maxdev_after": float((rows_y["var_b"] - 1).abs().max()),
        "sample_var_unbiased_mean_after": float(rows_y["var_u"].mean()),
        "sample_var_cv_before": _cv(rows_h["var_b"]),
        "sample_var_cv_after": _cv(rows_y["var_b"]),
        "feature_var_cv_before": _cv(cols_h["var_b"]),
        "feature_var_cv_after": _cv(cols_y["var_b"]),
        "feature_mean_absmax_after": float(cols_y["mean"].abs().max()),
        "sample_skew_before": float(rows_h["skew"].mean()),
        "sample_skew_after": float(rows_y["skew"].mean()),
        "sample_skew_absdiff_max": float((rows_y["skew"] - rows_h["skew"]).abs().max()),
    }


def _long(rows: list[tuple[int, str, float]]) -> pd.DataFrame:
    return pd.DataFrame([(s, 0, m, v) for s, m, v in rows], columns=["seed", "step", "metric", "value"])


class LnDistribution(Study):
    name = "ln-distribution"
    description = "LayerNorm on one sample and on Linear(100,50) outputs: per-sample vs per-feature statistics, BN control"
    seeds_from = ("001",)
    Config = Config
    quick_overrides: ClassVar[dict] = {"seeds": 8}
    threads = 1  # tiny kernels: more threads only spin-wait on a busy machine

    def cells(self, config: Config) -> list[Cell]:
        seeds = tuple(range(config.seeds))
        return [Cell("single-sample", (0,))] + [
            Cell(arm, seeds) for arm in ("layernorm", "batchnorm", "layernorm/lognormal")
        ]

    def run_cell(self, config: Config, ctx: CellContext) -> CellResult:
        arm, seeds = ctx.cell.arm, ctx.cell.seeds
        if arm == "single-sample":
            return self._single_sample(config)
        rows, extra = [], {}
        for i, seed in enumerate(seeds):
            h, y = _pre_and_post(config, arm, seed)
            rows += [(seed, m, v) for m, v in _batch_metrics(h, y).items()]
            if i == 0:  # the first seed (seed 0: the seed's own run) keeps its tensors for the 2x3 figure
                extra["first_seed_batch"] = pd.concat(
                    [_tensor_table(seed, "before", h), _tensor_table(seed, "after", y)], ignore_index=True
                )
            ctx.progress(i + 1, len(seeds))
        return CellResult(metrics=_long(rows), extra=extra)

    def _single_sample(self, config: Config) -> CellResult:
        sample = torch.tensor(config.sample, dtype=torch.float32)
        norm = create_norm("layernorm", sample.numel(), eps=config.eps)
        with torch.no_grad():
            out = norm(sample)
        rows = [
            (0, "mean", float(out.mean())),
            (0, "var_biased", float(out.var(correction=0))),
            (0, "var_unbiased", float(out.var())),  # what the seed printed: Tensor.var() is unbiased
        ]
        table = pd.DataFrame({"seed": 0, "index": range(sample.numel()), "before": sample.numpy(),
                              "after": out.numpy()})
        return CellResult(metrics=_long(rows), extra={"single_sample": table})

    def claims(self, run: StoredRun) -> list[Claim]:
        c: Config = run.config
        m = _MetricView(run.metrics)
        single = {k: m.values("single-sample", k)[0] for k in ("mean", "var_biased", "var_unbiased")}
        n = len(c.sample)
        ln_cv, bn_cv = m.values("layernorm", "feature_var_cv_after"), m.values("batchnorm", "feature_var_cv_after")
        keep = m.values("layernorm", "feature_var_cv_after") / m.values("layernorm", "feature_var_cv_before")
        skew_after = m.values("layernorm/lognormal", "sample_skew_after")
        skew_diff = m.values("layernorm/lognormal", "sample_skew_absdiff_max")
        claims = [
            stats.exact_claim(
                "single-sample-mean-0", "LayerNorm gives the single sample mean 0", SOURCE,
                f"mean of LayerNorm({n})({list(c.sample)})", single["mean"], 0.0, atol=c.mean_tol),
            stats.exact_claim(
                "single-sample-var-1", "LayerNorm gives the single sample variance 1 (biased: divide by F)",
                SOURCE, f"biased variance of the normalized sample (F={n})", single["var_biased"], 1.0,
                rtol=c.var_margin, atol=0.0),
            stats.exact_claim(
                "seed-check-var-1", "The seed's check `sample_norm.var()` reads 1", SOURCE,
                "Tensor.var() (unbiased, divides by F-1) of the normalized sample", single["var_unbiased"], 1.0,
                rtol=c.var_margin, atol=0.0),
            stats.threshold_claim(
                "batch-sample-mean-0", "After LN every sample has mean 0", SOURCE,
                "per seed: max over the 100 samples of |mean over features| after LayerNorm(50)",
                m.values("layernorm", "sample_mean_absmax_after"), "less", c.mean_tol),
            stats.equivalence_claim(
                "batch-sample-var-1", "After LN every sample has variance 1 (biased)", SOURCE,
                "per seed: mean over samples of the biased per-sample variance after LayerNorm(50)",
                m.values("layernorm", "sample_var_mean_after"), 1.0, c.var_margin),
            stats.threshold_claim(
                "bn-equalizes-features", "Control: BN equalizes per-feature variance over the batch",
                "control arm", "per seed: coefficient of variation of the 50 per-feature variances after BN",
                bn_cv, "less", c.equal_cv_tol),
        ]
        ln = stats.threshold_claim(
            "ln-keeps-feature-spread", "LN does not equalize per-feature variance across the batch", SOURCE,
            "per seed: coefficient of variation of the 50 per-feature variances after LN "
            f"(equalized means cv < {c.equal_cv_tol:g}, as BN achieves)", ln_cv, "greater", c.equal_cv_tol)
        if claims[-1].verdict != "supported":  # the instrument failed to see equalization where it exists
            ln.verdict = "inconclusive"
        ln.detail += f"; LN keeps {stats.mean_ci(keep).fmt()} of the pre-norm spread (cv after/before)"
        shape = stats.equivalence_claim(
            "ln-makes-rows-normal", "After LN a single sample is pulled into a normal distribution", SOURCE,
            "control: mean per-sample skewness after LayerNorm(50) of log-normal rows (normal: 0)",
            skew_after, 0.0, c.normal_skew_margin)
        worst = float(np.max(skew_diff))
        shape.detail += f"; max |skew after - skew before| over all rows and seeds {worst:.2g}" + (
            " (rounding: the row's shape is unchanged, as for any affine map)" if worst < 1e-3 else "")
        return [*claims, ln, shape]

    def figures(self, run: StoredRun) -> list[Figure]:
        return [_seed_figure(run), _rows_vs_features(run), _single_sample_figure(run), _shape_figure(run)]

    def notes(self, run: StoredRun) -> str:
        c: Config = run.config
        n = len(c.sample)
        skew_before = stats.mean_ci(_MetricView(run.metrics).values("layernorm", "sample_skew_before"))
        return (
            f"Seed 001 reproduced at its settings: seed 0 of the `layernorm` arm is the seed's "
            f"`torch.manual_seed(0)` run; {c.seeds} seeds in all. The seed checks the variance with "
            f"`Tensor.var()`, which divides by F-1: for F={n} it reads F/(F-1)·σ²/(σ²+ε), not 1. "
            "Controls: `batchnorm` (same Linear and data) shows what equalizing per-feature variance looks like, "
            "so a failure to see it in LN is not a blind instrument; `layernorm/lognormal` feeds skewed rows to "
            "LN to test whether LN changes a row's shape (it cannot: it is an affine map per row). Whether the "
            "seed's rows look normal after LN says little: before LN their mean skewness is already "
            f"{skew_before.fmt()} (a Gaussian row: 0), as a Linear map of Gaussian input gives."
        )


class _MetricView:
    """Per-seed values of one metric in one arm, in seed order."""

    def __init__(self, metrics: pd.DataFrame):
        self._m = metrics

    def values(self, arm: str, metric: str) -> np.ndarray:
        sel = self._m[(self._m["arm"] == arm) & (self._m["metric"] == metric)].sort_values("seed")
        if sel.empty:
            raise KeyError(f"no metric {metric!r} for arm {arm!r} in the stored run")
        return sel["value"].to_numpy(dtype=np.float64)


def _tensor_table(seed: int, stage: str, t: torch.Tensor) -> pd.DataFrame:
    rows, cols = np.indices(t.shape)
    return pd.DataFrame({"seed": seed, "stage": stage, "row": rows.ravel(), "col": cols.ravel(),
                         "value": t.numpy().ravel()})


def _first_seed_batch(run: StoredRun, arm: str) -> tuple[int, np.ndarray, np.ndarray]:
    t = run.extra["first_seed_batch"]
    t = t[t["arm"] == arm]
    seed = int(t["seed"].min())
    t = t[t["seed"] == seed]

    def grid(stage: str) -> np.ndarray:
        g = t[t["stage"] == stage]
        out = np.empty((int(g["row"].max()) + 1, int(g["col"].max()) + 1))
        out[g["row"].to_numpy(), g["col"].to_numpy()] = g["value"].to_numpy()
        return out

    return seed, grid("before"), grid("after")


def _seed_figure(run: StoredRun) -> Figure:
    seed, before, after = _first_seed_batch(run, "layernorm")
    fig, ax = plt.subplots(2, 3, figsize=(15, 8.5))
    ax[0, 0].hist(before.ravel(), bins=30, color="tab:blue", alpha=0.75)
    ax[0, 0].set_title("Before LN: all values of the batch")
    ax[0, 1].hist(after.ravel(), bins=30, color="tab:green", alpha=0.75)
    ax[0, 1].set_title("After LN: all values of the batch")
    ax[0, 2].hist(before[0], bins=15, color="tab:red", alpha=0.6, label="before LN")
    ax[0, 2].hist(after[0], bins=15, histtype="step", color="black", lw=1.5, label="after LN")
    ax[0, 2].set_title("Sample 0: its 50 feature values")
    ax[0, 2].legend()
    feats = np.arange(before.shape[1])
    for a, data, color, stage in ((ax[1, 0], before, "tab:blue", "Before"), (ax[1, 1], after, "tab:green", "After")):
        var = data.var(axis=0, ddof=1)  # the seed's Tensor.var(dim=0): unbiased, over the batch
        a.bar(feats, var, color=color, alpha=0.75)
        a.axhline(var.mean(), color="black", ls="--", lw=1, label=f"mean {var.mean():.3g}, cv {var.std(ddof=1) / var.mean():.2f}")
        a.set_title(f"{stage} LN: variance of each feature over the batch")
        a.set_xlabel("feature")
        a.legend(loc="lower right")
    var_b, var_u = after[0].var(), after[0].var(ddof=1)
    ax[1, 2].bar(["biased (÷F)", "unbiased (÷F-1)\n= seed's var()"], [var_b, var_u], color=["tab:red", "salmon"])
    ax[1, 2].axhline(1.0, color="black", ls="--", lw=1)
    for i, v in enumerate((var_b, var_u)):
        ax[1, 2].text(i, v, f"{v:.4f}", ha="center", va="bottom")
    ax[1, 2].set_title("Sample 0 after LN: its variance over features")
    fig.suptitle(f"Linear(100,50) → LayerNorm(50) on randn(100,100), torch.manual_seed({seed})")
    fig.tight_layout()
    return Figure(
        "seed_figure", "The seed's 2×3 figure, drawn from seed 0",
        "Top: histograms of every value of the batch before/after LN, and of one sample's 50 values (red: "
        "before, black outline: after; same shape, rescaled). Bottom left/middle: each feature's variance over "
        "the 100 samples, with their mean and coefficient of variation (cv) in the legend: if LN equalized "
        "per-feature variance, the after-LN bars would all have the same height (cv near 0). Bottom right: one sample's variance after LN, biased (1 up to ε) and "
        "unbiased (F/(F-1) = 50/49, what `Tensor.var()` prints). The seed's own bottom-right panel shows only "
        "the unbiased bar.", fig)


def _rows_vs_features(run: StoredRun) -> Figure:
    m = _MetricView(run.metrics)
    groups = [("before", "layernorm", "before"), ("after LN", "layernorm", "after"), ("after BN", "batchnorm", "after")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for a, what in zip(axes, ("sample", "feature"), strict=True):
        ivs = [stats.mean_ci(m.values(arm, f"{what}_var_cv_{stage}")) for _, arm, stage in groups]
        means = [iv.mean for iv in ivs]
        err = np.array([[iv.mean - iv.lo for iv in ivs], [iv.hi - iv.mean for iv in ivs]])
        a.bar([g[0] for g in groups], means, yerr=err, capsize=6, color=["grey", "tab:green", "tab:orange"])
        a.set_ylabel("coefficient of variation (0 = all equal)")
        a.set_title(f"spread of per-{what} variances")
    fig.suptitle(f"mean and 95% CI over {len(m.values('layernorm', 'sample_var_cv_after'))} seeds")
    fig.tight_layout()
    return Figure(
        "rows_vs_features", "LN equalizes samples, BN equalizes features",
        "Each bar is how unequal the variances are (coefficient of variation, mean over seeds with 95% CI). "
        "Left: the 100 per-sample variances (over features); right: the 50 per-feature variances (over the "
        "batch). A norm equalizes an axis when its bar drops to ~0. LN is expected to zero the left panel and "
        "BN the right one; the claims table says whether they did. Same Linear weights and data for all three "
        "bars of a seed.", fig)


def _single_sample_figure(run: StoredRun) -> Figure:
    t = run.extra["single_sample"].sort_values("index")
    m = _MetricView(run.metrics)
    fig, ax = plt.subplots(figsize=(7, 4))
    idx = t["index"].to_numpy()
    ax.bar(idx - 0.2, t["before"], width=0.4, label="input", color="grey")
    ax.bar(idx + 0.2, t["after"], width=0.4, label="LayerNorm(5) output", color="tab:green")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("feature")
    ax.legend()
    ax.set_title(f"mean {m.values('single-sample', 'mean')[0]:.2g}, biased var "
                 f"{m.values('single-sample', 'var_biased')[0]:.6f}, var() {m.values('single-sample', 'var_unbiased')[0]:.6f}")
    fig.tight_layout()
    return Figure(
        "single_sample", "The seed's single sample through LayerNorm(5)",
        "Grey: the seed's sample; green: after LayerNorm(5). The title prints the output's mean, its biased "
        "variance (what LN sets to 1, up to ε) and `var()` (unbiased, what the seed printed: 5/4 of it).", fig)


def _shape_figure(run: StoredRun) -> Figure:
    seed, before, after = _first_seed_batch(run, "layernorm/lognormal")

    def skew(a: np.ndarray) -> np.ndarray:
        c = a - a.mean(axis=1, keepdims=True)
        return (c**3).mean(axis=1) / (c**2).mean(axis=1) ** 1.5

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].hist(before[0], bins=20, color="grey", alpha=0.7, label="before LN")
    axes[0].hist(after[0], bins=20, histtype="step", color="tab:green", lw=2, label="after LN")
    axes[0].set_title("one log-normal row: same shape after LN")
    axes[0].legend()
    sb, sa = skew(before), skew(after)
    axes[1].scatter(sb, sa, s=12)
    lim = [min(sb.min(), sa.min()), max(sb.max(), sa.max())]
    axes[1].plot(lim, lim, color="black", lw=0.8, ls="--", label="y = x")
    axes[1].axhline(0, color="tab:red", lw=0.8, label="normal (skew 0)")
    axes[1].set_xlabel("row skewness before LN")
    axes[1].set_ylabel("row skewness after LN")
    axes[1].legend()
    fig.suptitle(f"control: LayerNorm(50) on exp(randn) rows, seed {seed}")
    fig.tight_layout()
    return Figure(
        "shape_control", "LN does not make a row normal",
        "Left: one skewed row before and after LN (the histogram is shifted and rescaled, not reshaped). "
        "Right: each row's skewness before vs after LN. Points on y = x mean LN kept each row's shape; points "
        "near the red line at 0 would mean LN made rows symmetric like a normal distribution.", fig)
