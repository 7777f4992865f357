"""Figures of the ``bn-running-stats`` study, drawn from the stored tables only."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from normlab.engine.spec import Figure, StoredRun
from normlab.kit import stats
from normlab.studies.bn_running_stats.claims import dataset_used, hand_walkthrough, values
from normlab.studies.bn_running_stats.config import Config, middle, momentum_label


def _ci_band(ax, steps, table: pd.DataFrame, label: str, **kw) -> None:
    """Errors are positive and drawn on log axes: geometric mean over seeds, 95% interval on the log scale."""
    ivs = [stats.summarise(table.loc[table["step"] == s, "value"].to_numpy(), "positive") for s in steps]
    line = ax.plot(steps, [iv.estimate for iv in ivs], label=label, **kw)[0]
    ax.fill_between(steps, [iv.lo for iv in ivs], [iv.hi for iv in ivs], color=line.get_color(), alpha=0.2)


def _walkthrough_figure(run: StoredRun) -> Figure:
    c: Config = run.config
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for j, ax in enumerate(axes):
        value = float(j + 1)
        hand = hand_walkthrough(c.walk_momentum, value, c.walk_iterations)
        its = np.arange(len(hand))
        for k, (name, marker) in enumerate((("running_mean", "o"), ("running_var", "s"))):
            layer = [values(run, "walkthrough", f"{name}/f{j}", step=i)[0] for i in its]
            ax.plot(its, layer, marker, ms=8, mfc="none", label=f"{name} (layer)")
            ax.plot(its, [h[k] for h in hand], "k:", lw=1, label="hand computation" if k == 0 else None)
        ax.axhline(value, color="grey", lw=0.5)
        ax.set(title=f"feature of constant {value:g}s", xlabel="iteration", ylabel="value")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return Figure(
        "walkthrough", f"Post 004's BatchNorm1d(momentum={c.walk_momentum:g}) walk-through",
        "Markers: the running mean and running variance a BatchNorm1d layer stores after each iteration on "
        "post 004's constant batch; dotted lines: the post's hand computation (1-m)*old + m*batch from "
        "(0, 1). The mean climbs toward the feature's value, the variance decays toward the batch's 0.", fig)


def _convergence_figure(run: StoredRun) -> Figure:
    c: Config = run.config
    m = run.metrics
    fig, axes = plt.subplots(2, len(c.batch_sizes), figsize=(4 * len(c.batch_sizes), 6.5), squeeze=False,
                             sharey="row")
    for col, b in enumerate(c.batch_sizes):
        for mom in c.momenta:
            arm = f"converge/m={momentum_label(mom)}"
            for row, metric in enumerate(("mean_err", "var_err")):
                t = m[(m["arm"] == arm) & (m["metric"] == metric) & (m["batch_size"] == b)]
                steps = sorted(t["step"].unique())
                _ci_band(axes[row, col], steps, t, f"m={momentum_label(mom)}")
            # The stationary spread an exponential average of B-sample means keeps: sqrt(m/(2-m)/B) σ.
            if mom is not None:
                axes[0, col].axhline(math.sqrt(mom / (2 - mom) / b), ls=":", lw=0.8,
                                     color=axes[0, col].lines[-1].get_color())
        axes[0, col].set(title=f"batch size {b}", xscale="log", yscale="log")
        axes[1, col].set(xlabel="training step", xscale="log", yscale="log")
    axes[0, 0].set_ylabel("running mean: RMS error / σ")
    axes[1, 0].set_ylabel("running var: RMS |log ratio|")
    axes[0, -1].legend(fontsize=8)
    fig.tight_layout()
    return Figure(
        "convergence", "Running statistics vs the true population statistics",
        f"Each panel: the error of the running estimates against the exact mean and variance of a fixed "
        f"skewed population, vs training step (log-log), geometric mean over {c.seeds} seeds with its 95% interval (on the log scale). Columns: batch "
        "size. A larger torch momentum (smaller Keras momentum) falls faster but levels off higher; dotted "
        "lines mark the theoretical floor sqrt(m/(2-m)/B) of an exponential average of batch means. "
        "m=cumulative (momentum=None) keeps falling like 1/sqrt(B·t).", fig)


def _gap_figure(run: StoredRun) -> Figure:
    c: Config = run.config
    bm = middle(c.gap_batch_sizes)
    fig, axes = plt.subplots(1, len(c.gap_steps) + 1, figsize=(4.6 * (len(c.gap_steps) + 1), 3.8), squeeze=False)
    names = [momentum_label(m) for m in c.gap_momenta]
    for ax, steps in zip(axes[0], c.gap_steps, strict=False):
        # Accuracies are proportions: intervals that stay inside [0, 1] (a t-interval of 3 seeds can pass 1.0).
        ivs = [stats.proportion_ci(values(run, "gap", f"acc_running/m={n}", steps, batch_size=bm)) for n in names]
        x = np.arange(len(names))
        ax.bar(x, [iv.mean for iv in ivs], 0.6, color="tab:orange", label="eval (running stats)",
               yerr=[[iv.mean - iv.lo for iv in ivs], [iv.hi - iv.mean for iv in ivs]], capsize=3)
        for metric, label, color in (("acc_batch_stats", "train mode (batch stats)", "tab:blue"),
                                     ("acc_recalibrated", "eval (recalibrated)", "tab:green")):
            iv = stats.proportion_ci(values(run, "gap", metric, steps, batch_size=bm))
            ax.axhline(iv.mean, color=color, label=label)
            ax.axhspan(iv.lo, iv.hi, color=color, alpha=0.15)
        ax.set_xticks(x, [("None\n(cumulative)" if m is None else f"torch {m:g}\n(keras {1 - m:g})")
                          for m in c.gap_momenta], fontsize=8)
        ax.set(title=f"after {steps} steps (batch {bm})", ylabel="test accuracy", ylim=(0, 1.02))
    axes[0, 0].legend(fontsize=7)
    ax = axes[0, -1]
    sizes = sorted(c.gap_batch_sizes)
    for n in names:
        ivs = [stats.summarise(values(run, "gap", f"stat_err/m={n}", c.gap_steps[1], batch_size=b), "positive")
               for b in sizes]
        line = ax.plot(sizes, [iv.estimate for iv in ivs], "o-", label=f"m={n}")[0]
        ax.fill_between(sizes, [iv.lo for iv in ivs], [iv.hi for iv in ivs], color=line.get_color(), alpha=0.2)
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="running-stat error vs recalibrated",
           title=f"after {c.gap_steps[1]} steps, by batch size")
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.minorticks_off()  # the log axis's minor labels (2x10^1 ...) would overprint the sizes
    ax.legend(fontsize=7)
    fig.tight_layout()
    return Figure(
        "train_eval_gap", "Train/eval gap, and running-statistics error by momentum and batch size",
        f"Left panels: test accuracy of the same trained BatchNorm CNN ({dataset_used(run)}, batch {bm}), mean over "
        f"{c.gap_seeds} seeds with a 95% interval that stays inside [0, 1] (Wilson, effective n): bars evaluate with each momentum's running statistics (all tracked in the same "
        "training run), the blue line normalizes each test batch by itself (train mode), the green line uses "
        "the training set's exact statistics (recalibrated). A bar below the green line is the cost of a stale "
        "running estimate. Right: the running statistics' RMS error against the recalibrated ones (mean in σ "
        "and log variance over all BatchNorm channels) at the end of training, per momentum, against the batch "
        "size (geometric mean over seeds, 95% interval on the log scale): post 002's advice says a large Keras momentum (small torch m) should win at small batches, and "
        "the reverse at large ones.", fig)


def figures(run: StoredRun) -> list[Figure]:
    return [_walkthrough_figure(run), _convergence_figure(run), _gap_figure(run)]
