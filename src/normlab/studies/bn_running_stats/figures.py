"""Figures of the ``bn-running-stats`` study, drawn from the stored tables only."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from normlab.engine.spec import Figure, StoredRun
from normlab.kit import stats
from normlab.studies.bn_running_stats.claims import hand_walkthrough, values
from normlab.studies.bn_running_stats.config import Config, momentum_label


def _ci_band(ax, steps, table: pd.DataFrame, label: str, **kw) -> None:
    ivs = [stats.mean_ci(table.loc[table["step"] == s, "value"].to_numpy()) for s in steps]
    line = ax.plot(steps, [iv.mean for iv in ivs], label=label, **kw)[0]
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
        "walkthrough", f"Seed 004's BatchNorm1d(momentum={c.walk_momentum:g}) walk-through",
        "Markers: the running mean and running variance a BatchNorm1d layer stores after each iteration on "
        "seed 004's constant batch; dotted lines: the seed's hand computation (1-m)*old + m*batch from "
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
        f"skewed population, vs training step (log-log), mean and 95% CI over {c.seeds} seeds. Columns: batch "
        "size. A larger torch momentum (smaller Keras momentum) falls faster but levels off higher; dotted "
        "lines mark the theoretical floor sqrt(m/(2-m)/B) of an exponential average of batch means. "
        "m=cumulative (momentum=None) keeps falling like 1/sqrt(B·t).", fig)


def _gap_figure(run: StoredRun) -> Figure:
    c: Config = run.config
    kinds = (("acc_batch_stats", "train mode (batch stats)"), ("acc_running", "eval (running stats)"),
             ("acc_recalibrated", "eval (recalibrated)"))
    fig, axes = plt.subplots(1, len(c.gap_steps), figsize=(5 * len(c.gap_steps), 3.6), squeeze=False, sharey=True)
    width = 0.8 / len(kinds)
    for ax, steps in zip(axes[0], c.gap_steps, strict=True):
        for k, (metric, label) in enumerate(kinds):
            ivs = [stats.mean_ci(values(run, f"gap/m={momentum_label(mom)}", metric, steps=steps)) for mom in c.gap_momenta]
            x = np.arange(len(c.gap_momenta)) + (k - 1) * width
            ax.bar(x, [iv.mean for iv in ivs], width, label=label,
                   yerr=[[iv.mean - iv.lo for iv in ivs], [iv.hi - iv.mean for iv in ivs]], capsize=3)
        ax.set_xticks(np.arange(len(c.gap_momenta)),
                      [("momentum=None\n(cumulative)" if m is None else f"torch {m:g}\n(keras {1 - m:g})")
                       for m in c.gap_momenta])
        ax.set(title=f"after {steps} steps (batch {c.gap_batch_size})", ylabel="test accuracy")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return Figure(
        "train_eval_gap", "Test accuracy: batch statistics vs running statistics vs recalibrated",
        f"Bars: test accuracy of the same trained BatchNorm CNN ({c.dataset}) evaluated three ways, mean and "
        f"95% CI over {c.gap_seeds} seeds, per momentum. A bar for running stats below the other two means the "
        "running estimates had not reached the network's current statistics (the seed's short-training "
        "case); recalibration replaces them with the training set's exact statistics.", fig)


def figures(run: StoredRun) -> list[Figure]:
    return [_walkthrough_figure(run), _convergence_figure(run), _gap_figure(run)]
