"""ln-distribution's figures: the post's 2x3 figure, per-sample vs per-feature spread, the single sample, the
shape control."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from normlab.engine.spec import Figure, StoredRun
from normlab.kit import stats
from normlab.studies.ln_distribution.claims import MetricView, retention


def figures(run: StoredRun) -> list[Figure]:
    return [seed_figure(run), rows_vs_features(run), unequal_scales_figure(run), relations_figure(run),
            single_sample_figure(run), shape_figure(run)]


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
        var = data.var(axis=0, ddof=1)  # the post's Tensor.var(dim=0): unbiased, over the batch
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
        "seed_figure", "The post's 2×3 figure, drawn from seed 0",
        "Top: histograms of every value of the batch before/after LN, and of one sample's 50 values (red: "
        "before, black outline: after; same shape, rescaled). Bottom left/middle: each feature's variance over "
        "the 100 samples, with their mean and coefficient of variation (cv) in the legend. The post's features "
        "have nearly equal variances to begin with (cv close to the ~0.14 that sampling noise alone gives for "
        "100 samples), so these two panels cannot show whether LN equalizes them: the unequal_scales figure can. "
        "Bottom right: one sample's variance after LN, biased (1 up to ε) and "
        "unbiased (F/(F-1) = 50/49, what `Tensor.var()` prints). The post's own bottom-right panel shows only "
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
        "single_sample", "The post's single sample through LayerNorm(5)",
        "Grey: the post's sample; green: after LayerNorm(5). The title prints the output's mean, its biased "
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


def unequal_scales_figure(run: StoredRun) -> Figure:
    seed, before, after_ln = first_seed_batch(run, "layernorm/unequal")
    _, _, after_bn = first_seed_batch(run, "batchnorm/unequal")
    _, _, null_ln = first_seed_batch(run, "layernorm/equal")
    m = MetricView(run.metrics)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    feats = np.arange(before.shape[1])
    for data, label, style in ((before, "before (z · scale)", "o"), (after_ln, "after LN", "s"),
                               (after_bn, "after BN", "^"), (null_ln, "null: LN of z (equal scale)", "x")):
        axes[0].plot(feats, data.var(axis=0), style, ms=4, label=label)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("feature (scale grows left to right)")
    axes[0].set_ylabel("variance over the batch")
    axes[0].set_title(f"per-feature variance, seed {seed}")
    axes[0].legend(fontsize=8)
    kept = [retention(m, "layernorm"), retention(m, "batchnorm")]
    ivs = [stats.mean_ci(k) for k in kept]
    for i, (k, iv) in enumerate(zip(kept, ivs, strict=True)):
        axes[1].scatter(np.full(k.size, i) + np.linspace(-0.15, 0.15, k.size), k, s=8, alpha=0.5)
        axes[1].errorbar(i + 0.3, iv.mean, yerr=[[iv.mean - iv.lo], [iv.hi - iv.mean]], fmt="k_", capsize=5)
    axes[1].axhline(run.config.keep_threshold, color="grey", ls="--", lw=1, label="keep threshold")
    axes[1].axhline(0, color="black", lw=0.6)
    axes[1].set_xticks([0, 1], ["LN", "BN"])
    axes[1].set_ylabel("share of the spread beyond noise that is kept")
    axes[1].set_title("per seed (dots) and mean with 95% CI")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return Figure(
        "unequal_scales", "Features of unequal scale: BN equalizes their variances, LN does not",
        "Left: for one seed, each feature's variance over the batch (log scale) before the norm (features z·s with "
        "scales log-spaced), after LN, after BN, and the null (LN of the same z at equal scale: what sampling noise "
        "alone leaves). Right: per seed, the share of the per-feature variance spread beyond the null that survives "
        "the norm (1: kept as it was, 0: equalized). The claims judge LN and BN against the dashed threshold.", fig)


def relations_figure(run: StoredRun) -> Figure:
    seed, before, after_ln = first_seed_batch(run, "layernorm")
    _, _, after_bn = first_seed_batch(run, "batchnorm")
    m = MetricView(run.metrics)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for a, after, name in ((axes[0], after_ln, "LN"), (axes[1], after_bn, "BN")):
        a.scatter(before[0], after[0], s=14)
        a.set_xlabel("sample 0: feature value before")
        a.set_ylabel(f"after {name}")
        r = np.corrcoef(before[0], after[0])[0, 1]
        a.set_title(f"{name}: Pearson r = {r:.4f}")
    groups = [("LN, seed's data", "layernorm"), ("BN, seed's data", "batchnorm"),
              ("BN, equal-feature null", "batchnorm/equal"), ("BN, unequal scales", "batchnorm/unequal")]
    ivs = [stats.proportion_ci(m.values(arm, "order_flip_frac")) for _, arm in groups]  # shares: inside [0, 1]
    axes[2].bar(range(len(groups)), [iv.mean for iv in ivs],
                yerr=np.array([[iv.mean - iv.lo for iv in ivs], [iv.hi - iv.mean for iv in ivs]]), capsize=5,
                color=["tab:green", "tab:orange", "grey", "tab:red"])
    axes[2].set_xticks(range(len(groups)), [g[0] for g in groups], rotation=15, fontsize=8)
    axes[2].set_ylabel("share of a sample's feature pairs reordered")
    axes[2].set_title("mean over seeds, 95% interval inside [0, 1]")
    fig.suptitle(f"Within-sample feature relations, Linear(100,50) outputs, seed {seed}")
    fig.tight_layout()
    return Figure(
        "sample_relations", "BN reorders a sample's features, LN does not",
        "Left and middle: one sample's 50 features before vs after the norm. LN maps each sample by one increasing "
        "straight line, so the points lie on a line; BN shifts and scales each feature by its own batch statistics, "
        "so they scatter. Right: the share of a sample's feature pairs whose order the norm reverses, for LN and BN "
        "on the post's data, BN on features of truly equal distribution (the null: sampling noise alone) and BN on "
        "unequal-scale features.", fig)
