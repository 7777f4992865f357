"""deep-bn's figures: forward std and weight-gradient norm per layer, and the fitted growth factors; a line
with nothing to draw says why in the legend."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from normlab.engine.spec import Figure, StoredRun
from normlab.kit import stats
from normlab.kit.plots import plot_band
from normlab.studies.deep_bn.claims import factors, series
from normlab.studies.deep_bn.config import YANG_RELU_RATE, Config, arms
from normlab.studies.deep_bn.lr_claims import chance_loss, sweep, trains


def figures(run: StoredRun) -> list[Figure]:
    out = [_per_layer_figure(run, "act_std"), _per_layer_figure(run, "grad_w"), _factor_figure(run)]
    if run.config.train_inits:
        out.append(_sweep_figure(run))
    return out


def _sweep_figure(run: StoredRun) -> Figure:
    c: Config = run.config
    limit = c.trains_below * chance_loss()
    inits = list(c.train_inits)
    fig, axes = plt.subplots(2, len(inits), figsize=(max(8, 6 * len(inits)), 8), squeeze=False, sharex=True)
    for j, init in enumerate(inits):
        top, bottom = axes[0, j], axes[1, j]
        for bn, color in ((False, "tab:blue"), (True, "tab:red")):
            name = "BN" if bn else "no BN"
            final, diverged = sweep(run.metrics, f"train/{'bn' if bn else 'plain'}/{init}", c)
            lrs = np.asarray(c.lrs, dtype=float)
            for i, (_, row) in enumerate(final.iterrows()):  # one thin line per seed; a diverged run has no point
                top.plot(lrs, row.to_numpy(dtype=float), color=color, alpha=0.25, lw=0.8,
                         label=f"{name}: each seed" if i == 0 else None)
            filled = final.where(diverged == 0, np.nan)
            top.plot(lrs, filled.median(axis=0).to_numpy(dtype=float), color=color, lw=2, marker="o",
                     label=f"{name}: median over the seeds that did not diverge")
            frac_div = diverged.mean(axis=0).to_numpy(dtype=float)
            ok = trains(final, diverged, c)
            bottom.plot(lrs, ok.mean(axis=0).to_numpy(dtype=float), color=color, marker="o", lw=2,
                        label=f"{name}: trains (n={int(ok.notna().all(axis=1).sum())} seeds)")
            bottom.plot(lrs, frac_div, color=color, marker="x", ls=":", lw=1, label=f"{name}: diverged (inf/NaN)")
        top.axhline(limit, color="black", ls="--", lw=1, label=f"trains below {limit:.3g} ({c.trains_below:g} x ln 10)")
        top.axhline(chance_loss(), color="grey", ls=":", lw=1, label="chance (ln 10)")
        top.set_xscale("log")
        top.set_yscale("log")
        top.set_title(f"{init} init")
        top.set_ylabel(f"final training loss (mean of last {c.tail} steps)")
        top.legend(fontsize=7)
        bottom.set_ylim(-0.05, 1.05)
        bottom.set_xlabel(f"learning rate (SGD, momentum {c.momentum:g})")
        bottom.set_ylabel("fraction of seeds")
        bottom.legend(fontsize=7)
    fig.suptitle(f"learning-rate sweep: {c.train_depth}-hidden-layer width-{c.train_width} MLP, digits, "
                 f"{c.train_steps} steps, {c.train_seeds} seeds")
    fig.tight_layout()
    return Figure(
        "lr_sweep", "Learning-rate sweep, with and without BN",
        "Top: each thin line is one seed's final training loss at every learning rate of the grid (a diverged "
        "run has no point), the thick line the median over the seeds that did not diverge; dashed, the level "
        "below which a run counts as training; dotted, the chance loss. Bottom: the fraction of seeds that "
        "train (solid) and that diverge to inf/NaN (dotted) at each rate. BN allows larger learning rates if "
        "its solid line stays at 1 to the right of where the no-BN line drops. Columns: the hidden layers' "
        "init; the Kaiming column is the fair comparison (a well-initialised net without BN).", fig)


def no_data_reason(metrics: pd.DataFrame, arm: str, metric: str, table: pd.DataFrame) -> str:
    """Why a per-layer series has nothing to plot ('' when it has)."""
    if table.empty:
        overflowed = ((metrics["arm"] == arm) & (metrics["metric"] == "overflow_layer")).any()
        return "no data: forward overflowed to inf" if overflowed else "no data"
    if not (table > 0).to_numpy().any():
        return f"all {metric} values are exactly 0 (float32 underflow)"
    return ""


_LABELS = {"act_std": ("std of layer output (post-ReLU)", "forward: activation std per layer"),
           "grad_w": ("||dL/dW_l|| / ||dL/dW_last||", "backward: weight-gradient norm per layer")}


def _per_layer_figure(run: StoredRun, metric: str) -> Figure:
    c: Config = run.config
    ylabel, title = _LABELS[metric]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True)
    for ax, family in zip(axes, ("plain", "bn"), strict=True):
        for init, color in zip(c.inits, ("tab:blue", "tab:red", "tab:green"), strict=False):
            arm = f"{family}/{init}"
            table = series(run.metrics, arm, metric)
            if metric == "grad_w" and not table.empty:
                table = table.div(table[table.columns.max()], axis=0)  # relative to the last layer
            reason = no_data_reason(run.metrics, arm, metric, table)
            if reason:  # say why a line is missing; never drop it silently
                ax.plot([], [], color=color, label=f"{init}: {reason}")
                continue
            long = table.stack().rename("value").reset_index()  # seed, step, value
            plot_band(ax, long, label=f"{init} (n={len(table)})", color=color, log=True)
            mean = 10 ** np.log10(table.where(table > 0)).mean()
            stop = run.metrics[(run.metrics["arm"] == arm) & (run.metrics["metric"] == "overflow_layer")]["value"]
            if len(stop):
                k = int(stop.median())
                ax.axvline(k, color=color, ls=":", lw=1)
                ax.annotate(f"inf at layer {k}\n({len(stop)}/{len(table)} seeds)", (k, mean.dropna().iloc[-1]),
                            color=color, fontsize=8, xytext=(5, -10), textcoords="offset points")
        if metric == "grad_w" and family == "bn":
            ref = YANG_RELU_RATE ** (c.depth - np.arange(1, c.depth + 1))
            ax.plot(np.arange(1, c.depth + 1), ref, color="black", ls="--", lw=1, label=f"{YANG_RELU_RATE:.3f}^(L-l) (Yang)")
        ax.set_yscale("log")
        ax.set_xlabel("layer l (1 = input side)")
        ax.set_title(f"{'with BN' if family == 'bn' else 'without BN'}")
        ax.legend(fontsize=8)
    axes[0].set_ylabel(ylabel)
    fig.suptitle(f"{title}; geometric mean over seeds, band = 95% CI, batch {c.batch}")
    fig.tight_layout()
    how = {
        "act_std": "Each line is the std of a layer's output (what the seed prints), geometric mean over seeds "
                   "with a 95% band; log scale. Left, without BN; right, with BN. A line that falls (rises) "
                   "steadily means the std vanishes (explodes) with depth; a dotted vertical line marks the layer "
                   "where an arm overflowed to inf, with how many seeds did. The post's claim holds if the three "
                   "right-hand lines are flat and lie on top of each other.",
        "grad_w": "Each line is a layer's weight-gradient norm divided by the last layer's, geometric mean over "
                  "seeds with a 95% band; log scale; the backward pass runs from the right (output) to the left. "
                  "A line rising to the left means gradients grow with depth; parallel to the dashed line means "
                  "Yang et al.'s large-batch rate. Arms without a usable gradient (forward overflow, or every "
                  "value underflowed to 0) say so in the legend.",
    }[metric]
    return Figure(f"per_layer_{metric}", title, how, fig)


def _factor_figure(run: StoredRun) -> Figure:
    c: Config = run.config
    names = [a for a, *_ in arms(c)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, metric, backward, ref in ((axes[0], "act_std", False, None), (axes[1], "grad_w", True, YANG_RELU_RATE)):
        for i, arm in enumerate(names):
            vals = factors(run.metrics, arm, metric, c, backward)
            iv = stats.mean_ci(vals) if np.isfinite(vals).any() else None
            if iv is None:
                reason = no_data_reason(run.metrics, arm, metric, series(run.metrics, arm, metric))
                ax.text(1.0, i, f"  {reason or 'too few finite layers to fit'}", va="center", fontsize=8)
                continue
            ax.errorbar(iv.mean, i, xerr=[[iv.mean - iv.lo], [iv.hi - iv.mean]] if iv.n > 1 else None, fmt="o", capsize=4)
        ax.axvline(1.0, color="grey", lw=1)
        ax.set_ylim(-0.6, len(names) - 0.4)
        if ref:
            ax.axvline(ref, color="black", ls="--", lw=1, label=f"Yang: {ref:.3f}")
            ax.legend(fontsize=8)
        if not backward:
            ax.set_xscale("log")
        ax.set_yticks(range(len(names)), names)
    axes[0].set_xlabel("per-layer factor of the activation std (forward)")
    axes[1].set_xlabel("per-layer factor of ||dL/dW|| toward the input (backward)")
    fig.suptitle("growth factor per layer, mean and 95% CI over seeds (1 = flat)")
    fig.tight_layout()
    return Figure(
        "growth_factors", "Growth per layer, forward and backward",
        "Each dot is the per-layer growth factor (exp of the slope of log value vs layer, fitted per seed) with "
        "its 95% CI over seeds; 1 means flat. Left (log scale): forward std; a stable arm sits on the line at 1. "
        "Right: weight-gradient norm going toward the input; above 1 means gradients grow with depth; dashed: "
        "Yang et al.'s large-batch rate sqrt(π/(π-1)).", fig)
