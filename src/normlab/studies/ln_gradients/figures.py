"""ln-gradients figures, drawn from the stored tables only."""

from __future__ import annotations

import numpy as np
import pandas as pd

from normlab.engine.spec import Figure, StoredRun
from normlab.kit.plots import (
    arm_colors,
    heatmap_over_time,
    mean_band,
    new_figure,
    plot_band,
    series_styles,
    shared_legend,
)
from normlab.probe.histograms import DEFAULT_MIN_EXP
from normlab.studies.ln_gradients.claims import measures_of
from normlab.studies.ln_gradients.config import ARMS, SEED_ARMS, datasets, layer_labels, linear_floor, target


def _arms(run: StoredRun) -> list[str]:
    present = set(run.metrics["arm"].unique())
    return [a for a in run.config.arms if a in present]


def _seed_arms(arms: list[str]) -> list[str]:
    return [a for a in arms if a in SEED_ARMS]


def loss_curves(run: StoredRun) -> Figure:
    arms = _arms(run)
    colors = arm_colors(arms)
    fig, axes = new_figure(1, 2, width=6.5, height=4.2, sharey=True)
    m = run.metrics[run.metrics["metric"] == "train_loss"]
    for ax, group, title in ((axes[0, 0], [a for a in arms if a in SEED_ARMS], "the post's four arms"),
                             (axes[0, 1], [a for a in arms if a not in SEED_ARMS], "control arms")):
        for arm in group:
            plot_band(ax, m[m["arm"] == arm], label=arm, color=colors[arm], log=True)
        ax.axhline(linear_floor(), color="k", ls="--", lw=1, label="best linear fit (floor)")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    axes[0, 0].set_ylabel("train MSE (log scale)")
    return Figure(
        "loss_curves", "Training loss per arm (geometric mean over seeds, 95% band)",
        "Each line is the geometric mean over seeds of the training loss the seed logged (dropout active "
        "where present); the shaded band is the 95% interval. The dashed line is the lowest loss any linear "
        "model can reach on this data: arms without a nonlinearity cannot go below it. Lower is better; "
        "compare `ln` with `none` and `dropout+ln` with `dropout` (claim C1), then the controls: if `relu` "
        "also goes far below the floor, C1 is about nonlinearity, not normalization.",
        fig)


def fluctuation(run: StoredRun, meas: pd.DataFrame) -> Figure:
    arms = _arms(run)
    colors = arm_colors(arms)
    fig, axes = new_figure(1, 2, width=6.5, height=4.0)
    for ax, col, label in ((axes[0, 0], "fluctuation", "loss fluctuation: std Δlog10(loss)"),
                           (axes[0, 1], "roughness", "gradient roughness: std Δlog10(|g|)")):
        for i, arm in enumerate(arms):
            v = meas.loc[meas["arm"] == arm, col].to_numpy(float)
            jitter = (np.random.default_rng(i).random(v.size) - 0.5) * 0.3
            ax.scatter(np.full(v.size, i) + jitter, v, s=9, color=colors[arm], alpha=0.6)
            b = mean_band(pd.DataFrame({"step": 0, "value": np.log10(v[v > 0])}))
            if len(b):
                ax.errorbar(i, 10 ** b["mean"].iloc[0], yerr=[[10 ** b["mean"].iloc[0] - 10 ** b["lo"].iloc[0]],
                            [10 ** b["hi"].iloc[0] - 10 ** b["mean"].iloc[0]]], color="k", capsize=4, fmt="o")
        ax.set_xticks(range(len(arms)), arms, rotation=45, ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel(label)
    return Figure(
        "fluctuation", "Loss fluctuation and gradient roughness per seed (second half of training)",
        "Each dot is one seed: the standard deviation of the step-to-step change of log10(loss) (left) or of "
        "log10(gradient norm) (right) over the second half of training. Black: geometric mean with 95% "
        "interval. Dropout arms above their no-dropout twins support C2 (loss) and C5 (gradients).",
        fig)


_HEATMAP_TEXT = {
    "grad": ("gradient_heatmaps", "Distribution of all gradient entries over training (all parameters, all seeds)",
             "gradient value (symlog)",
             "x: training step; y: gradient value on a symmetric log scale (bins of `normlab.probe`: each decade "
             "split in 3, the middle band holds |g| < 1e-7); color: fraction of all gradient entries (every "
             "parameter of every seed) in that bin at that step. This is the post's TensorBoard histogram view, "
             "pooled over seeds. A band that narrows and stops moving early means 'settled and concentrated' "
             "(C3); a band that stays wide and shifting means 'messy' (C5). The band's height is mostly the "
             "gradient *scale*, which follows the loss."),
    "weight": ("weight_heatmaps", "Distribution of all parameter values over training (all parameters, all seeds)",
               "parameter value (symlog)",
               "Same axes as the gradient heatmaps, for the parameter values themselves (weights, biases, LN "
               "gains). Weight decay pulls the values toward 0; a distribution that keeps spreading means some "
               "parameters keep growing. Compare the arms: LN makes the output invariant to the scale of the "
               "weights feeding it, so their values are free to drift."),
}


def distribution_heatmaps(run: StoredRun, kind: str) -> Figure | None:
    h = run.probe_histograms
    if h is None or h.empty:
        return None
    h = h[h["kind"] == kind]
    arms = _seed_arms(_arms(run))
    if h.empty or not arms:
        return None
    name, title, ylabel, how = _HEATMAP_TEXT[kind]
    rows = (len(arms) + 1) // 2
    fig, axes = new_figure(rows, 2, width=5.5, height=3.6)
    mesh = None
    for ax, arm in zip(axes.ravel(), arms, strict=False):
        mesh = heatmap_over_time(ax, h[h["arm"] == arm], ylabel=ylabel, linthresh=10.0**DEFAULT_MIN_EXP)
        ax.set_title(arm)
    for ax in axes.ravel()[len(arms):]:
        ax.axis("off")
    if mesh is not None:
        fig.colorbar(mesh, ax=axes.ravel().tolist(), label="fraction of entries", shrink=0.8)
    return Figure(name, title, how, fig)


def gradient_over_time(run: StoredRun) -> Figure:
    arms = _arms(run)
    colors = arm_colors(arms)
    seed_arms = _seed_arms(arms)
    fig, axes = new_figure(1, 3, width=4.8, height=3.8)
    for ax, metric, label, log in ((axes[0, 0], "grad_norm", "gradient norm", True),
                                   (axes[0, 1], "grad_spread", "std of gradient entries", True),
                                   (axes[0, 2], "grad_kurtosis", "excess kurtosis of entries", False)):
        m = run.metrics[run.metrics["metric"] == metric]
        for arm in seed_arms:
            plot_band(ax, m[m["arm"] == arm], label=arm, color=colors[arm], log=log)
        ax.set_title(label)
        ax.set_xlabel("step")
    axes[0, 0].legend(fontsize=8)
    return Figure(
        "gradient_concentration", "Gradient concentration over time (seed arms; mean over seeds, 95% band)",
        "Left: the norm of the whole gradient; middle: the spread (std) of all gradient entries (a narrow "
        "histogram = small, which mostly follows the loss); right: excess kurtosis (scale-free peakedness: "
        "large = most entries near zero with a few large ones; the concentration claims C3c, C3d, C6 judge "
        "this panel, not the middle one). Lines are means over seeds (geometric for the log panels) with 95% "
        "bands. 'Settles early' (C3a, C3b) = the left curve, smoothed, flattens early; 'messy' (C5) = it stays "
        "jagged.",
        fig)


def per_layer(run: StoredRun) -> Figure | None:
    s = run.probe_scalars
    if s is None or s.empty:
        return None
    s = s[(s["kind"] == "grad") & (s["stat"] == "norm") & s["name"].astype(str).str.endswith("weight")]
    arms = _seed_arms(_arms(run))
    if s.empty or not arms:
        return None
    fig, axes = new_figure(1, len(arms), width=4.0, height=3.5, sharey=True)
    # A parameter name is a position in the Sequential, which Dropout and LN shift: label and colour each line by
    # the layer it is ("Linear 3", "LN gain 1"), so a layer keeps its colour in every panel.
    labels = {arm: layer_labels(ARMS[arm]) for arm in arms}
    styles = series_styles(v for arm in arms for v in labels[arm].values())
    for ax, arm in zip(axes.ravel(), arms, strict=True):
        sa = s[s["arm"] == arm]
        drawn = {labels[arm][n]: n for n in set(sa["name"].astype(str)) & set(labels[arm])}
        for label in sorted(drawn, key=list(styles).index):
            g = sa[sa["name"].astype(str) == drawn[label]][["step", "seed", "value"]]
            plot_band(ax, g, label=label, log=True, **styles[label])
        ax.set_title(arm)
        ax.set_xlabel("step")
    axes[0, 0].set_ylabel("gradient norm per weight matrix")
    shared_legend(fig, axes.ravel())
    return Figure(
        "per_layer_gradients", "Gradient norm of each weight matrix over training (from normlab.probe)",
        "One line per weight matrix (Linear 1 = the input layer; LN gain k = the k-th LayerNorm's gain in the "
        "LN arms), one colour per layer in every panel (legend on the right), geometric mean over "
        "seeds with 95% band, recorded by `normlab.probe.Probe` on its schedule. Shows where in the network LayerNorm "
        "changes the gradient scale.",
        fig)


def fits(run: StoredRun, meas: pd.DataFrame) -> Figure | None:
    p = run.extra.get("predictions")
    if p is None or p.empty:
        return None
    arms = _arms(run)
    colors = arm_colors(arms)
    fig, axes = new_figure(1, 2, width=6.5, height=4.2)
    d = datasets()
    ax = axes[0, 0]
    grid = np.linspace(-3, 22, 200)
    ax.plot(grid, target(grid), color="k", lw=1, label="true function")
    ax.scatter(d["train"].numpy(), target(d["train"].numpy()), s=14, color="k", zorder=3, label="train")
    ax.scatter(d["interp"].numpy(), target(d["interp"].numpy()), s=14, facecolors="none", edgecolors="k",
               zorder=3, label="held-out (midpoints)")
    for arm in _seed_arms(arms) + [a for a in ("relu", "relu+ln") if a in arms]:
        pa = p[p["arm"] == arm].rename(columns={"t": "step", "pred": "value"})
        plot_band(ax, pa, label=arm, color=colors[arm])
    ax.set_xlabel("t  (x1 = t - 10, x2 = t)")
    ax.set_ylabel("prediction (eval mode)")
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    for i, arm in enumerate(arms):
        g = meas[meas["arm"] == arm]
        for j, (col, mk) in enumerate((("train_eval", "o"), ("heldout_interp", "s"))):
            v = np.log10(g[col].to_numpy(float))
            b = mean_band(pd.DataFrame({"step": 0, "value": v}))
            ax.errorbar(i + (j - 0.5) * 0.3, 10 ** b["mean"].iloc[0],
                        yerr=[[10 ** b["mean"].iloc[0] - 10 ** b["lo"].iloc[0]],
                              [10 ** b["hi"].iloc[0] - 10 ** b["mean"].iloc[0]]],
                        fmt=mk, color=colors[arm], capsize=3, label=("train" if j == 0 else "held-out") if i == 0 else None)
    ax.set_xticks(range(len(arms)), arms, rotation=45, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("MSE at the last step (eval mode)")
    ax.legend(fontsize=8)
    return Figure(
        "fits_and_heldout", "What the networks learned, and train vs held-out loss",
        "Left: the true parabola (black), the 20 training points (filled) and the held-out midpoints "
        "(open); colored lines are each arm's prediction, mean over seeds with 95% band. Linear arms draw a "
        "straight line. Right: train (circles) and held-out (squares) MSE at the end, geometric mean with 95% "
        "interval. Overfitting would show as held-out far above train; the gap, not the gradient "
        "histogram, is the test of C4 and C8.",
        fig)


def figures(run: StoredRun) -> list[Figure]:
    meas = measures_of(run)
    figs = [loss_curves(run), fluctuation(run, meas), distribution_heatmaps(run, "grad"),
            distribution_heatmaps(run, "weight"), gradient_over_time(run),
            per_layer(run), fits(run, meas)]
    return [f for f in figs if f is not None]
