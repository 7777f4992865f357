"""ln-distribution's figures: the seed's 2x3 figure, per-sample vs per-feature spread, the single sample, the
shape control."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from normlab.engine.spec import Figure, StoredRun
from normlab.kit import stats
from normlab.studies.ln_distribution.claims import MetricView


def figures(run: StoredRun) -> list[Figure]:
    return [seed_figure(run), rows_vs_features(run), single_sample_figure(run), shape_figure(run)]


def first_seed_batch(run: StoredRun, arm: str) -> tuple[int, np.ndarray, np.ndarray]:
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


def seed_figure(run: StoredRun) -> Figure:
    seed, before, after = first_seed_batch(run, "layernorm")
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


def rows_vs_features(run: StoredRun) -> Figure:
    m = MetricView(run.metrics)
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


def single_sample_figure(run: StoredRun) -> Figure:
    t = run.extra["single_sample"].sort_values("index")
    m = MetricView(run.metrics)
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


def shape_figure(run: StoredRun) -> Figure:
    seed, before, after = first_seed_batch(run, "layernorm/lognormal")

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
