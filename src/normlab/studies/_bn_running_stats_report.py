"""bn-running-stats: claims and figures, computed from the stored tables only (see bn_running_stats.py)."""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from normlab.engine.spec import Claim, Figure, StoredRun
from normlab.kit import stats

SEED_002, SEED_004 = "seed 002", "seed 004"


def momentum_label(m: float | None) -> str:
    return "cumulative" if m is None else f"{m:g}"


# ------------------------------------------------------------------------------------------ judgement


def _values(run: StoredRun, arm: str, metric: str, step: int | None = None, **params) -> np.ndarray:
    m = run.metrics
    sel = (m["arm"] == arm) & (m["metric"] == metric)
    if step is not None:
        sel &= m["step"] == step
    for key, val in params.items():
        sel &= m[key] == val
    return m[sel].sort_values("seed")["value"].to_numpy(dtype=float)


def _hand_walkthrough(momentum: float, value: float, iterations: int) -> list[tuple[float, float]]:
    """Seed 004's hand computation: constant feature ``value`` -> batch mean ``value``, batch var 0."""
    mean, var, out = 0.0, 1.0, []
    for _ in range(iterations):
        mean = (1 - momentum) * mean + momentum * value
        var = (1 - momentum) * var + momentum * 0.0
        out.append((mean, var))
    return out


def judge(run: StoredRun) -> list[Claim]:
    c: Any = run.config  # bn_running_stats.Config
    out: list[Claim] = []
    # Seed 004's printed numbers after iteration 0, then its rule for every later iteration.
    for j, value in ((0, 1.0), (1, 2.0)):
        hand = _hand_walkthrough(c.walk_momentum, value, c.walk_iterations)
        observed = [(_values(run, "walkthrough", f"running_mean/f{j}", step=k)[0],
                     _values(run, "walkthrough", f"running_var/f{j}", step=k)[0]) for k in range(len(hand))]
        worst = max(max(abs(o[0] - h[0]), abs(o[1] - h[1])) for o, h in zip(observed, hand, strict=True))
        claim = stats.exact_claim(
            f"walkthrough-feature-{int(value)}s",
            f"BatchNorm1d(momentum={c.walk_momentum:g}): a feature of constant {value:g}s has running mean "
            f"{hand[0][0]:.1f}, var {hand[0][1]:.1f} after iteration 0, and follows (1-m)*old + m*batch",
            SEED_004, f"max |layer - hand computation| over {len(hand)} iterations (mean and var)",
            worst, 0.0, atol=1e-6)
        claim.detail += "; layer: " + ", ".join(f"({a:.4f}, {b:.4f})" for a, b in observed)
        out.append(claim)

    facts = {k: _values(run, "layer-facts", k)[0] for k in (
        "default_momentum", "seed002_formula_momentum", "momentum0.9_mean_ratio", "running_var_over_unbiased",
        "output_vs_biased_maxdiff", "output_vs_unbiased_maxdiff")}
    formula = stats.exact_claim(
        "seed002-momentum-in-its-formula",
        "In seed 002's formula (moving = moving*momentum + batch*(1-momentum)) PyTorch's value is 0.9",
        SEED_002, "decay of the old value in one step of a default torch.nn.BatchNorm1d, solved from "
        "running_mean = (1 - decay) * batch_mean", facts["seed002_formula_momentum"], 0.9, atol=1e-9)
    arg = stats.exact_claim(
        "seed002-momentum-argument", "PyTorch's BatchNorm momentum is 0.9", SEED_002,
        "torch.nn.BatchNorm1d(...).momentum (the argument's default)", facts["default_momentum"], 0.9, atol=1e-9)
    arg.detail += (f"; torch's momentum weights the *new* batch: BatchNorm1d(momentum=0.9) sets running_mean "
                   f"to {facts['momentum0.9_mean_ratio']:.3g} x the batch mean after one step, the opposite of "
                   "seed 002's formula; the statement holds only in Keras's convention (0.9 = 1 - 0.1)")
    out += [formula, arg]
    out.append(stats.exact_claim(
        "running-var-unbiased", "The running variance is updated with the unbiased batch variance (B/(B-1))",
        "STUDIES.md", "running_var / unbiased batch var with momentum=1 (float64)",
        facts["running_var_over_unbiased"], 1.0, rtol=1e-9))
    out.append(stats.exact_claim(
        "normalize-biased", "The training forward normalizes with the biased batch variance",
        "STUDIES.md", "max |output - (x - mean)/sqrt(biased var + eps)| (float64)",
        facts["output_vs_biased_maxdiff"], 0.0, atol=1e-9))
    out[-1].detail += f"; with the unbiased variance the max difference would be {facts['output_vs_unbiased_maxdiff']:.3g}"

    worst = {kind: max(float(np.max(_values(run, "conventions", f"maxdiff/{kind}/m={m:g}", step=c.convention_steps)))
                       for m in c.convention_momenta) for kind in ("torch", "keras")}
    conv = stats.exact_claim(
        "keras-equals-torch", "Keras momentum 0.99 is torch momentum 0.01 (keras m = 1 - torch m)", "STUDIES.md",
        f"max |running stats| difference, normlab keras 1-m vs torch.nn m, m in {list(c.convention_momenta)}, "
        f"{c.convention_steps} steps, {c.seeds} seeds", worst["keras"], 0.0, atol=0.0)
    conv.detail += f"; normlab torch convention vs torch.nn: {worst['torch']:.3g}"
    out.append(conv)

    out += _convergence_claims(run, c)
    out += _gap_claims(run, c)
    return out


def _convergence_claims(run: StoredRun, c: Any) -> list[Claim]:
    emas = [m for m in c.momenta if m is not None]
    if len(emas) < 2:
        return []
    fast, slow = max(emas), min(emas)
    mid_b = sorted(c.batch_sizes)[len(c.batch_sizes) // 2]
    fa, sl = f"converge/m={momentum_label(fast)}", f"converge/m={momentum_label(slow)}"
    out = [
        stats.compare_claim(
            "larger-step-converges-faster",
            f"A smaller Keras momentum ({1 - fast:g}, torch {fast:g}) approaches the true statistics faster than "
            f"a larger one ({1 - slow:g}, torch {slow:g})", SEED_002,
            f"RMS error of the running mean (units of σ) after {c.early_step} steps, batch {mid_b}",
            _values(run, fa, "mean_err", c.early_step, batch_size=mid_b),
            _values(run, sl, "mean_err", c.early_step, batch_size=mid_b), "less", paired=True, min_effect=0.2,
            labels=(f"m={fast:g}", f"m={slow:g}")),
        stats.compare_claim(
            "larger-step-fluctuates-more",
            f"...but fluctuates more: after enough steps the smaller Keras momentum ({1 - fast:g}) ends farther "
            "from the true statistics", SEED_002,
            f"RMS error of the running mean after {c.steps} steps, batch {mid_b}",
            _values(run, fa, "mean_err", c.steps, batch_size=mid_b),
            _values(run, sl, "mean_err", c.steps, batch_size=mid_b), "greater", paired=True, min_effect=0.2,
            labels=(f"m={fast:g}", f"m={slow:g}")),
    ]
    # The seed's "fluctuates more" is about the end of *enough* training: the slow average must have
    # forgotten its (0, 1) start, whose weight after T steps is (1 - m)^T.
    leftover = (1 - slow) ** c.steps
    if leftover > 0.01:
        out[1].verdict = "inconclusive"
        out[1].detail += (f"; not judged: after {c.steps} steps m={slow:g} still carries (1-m)^T = {leftover:.2g} "
                          "of its initial value (needs <= 0.01)")
    small_b, big_b = min(c.batch_sizes), max(c.batch_sizes)
    ref = 0.1 if 0.1 in emas else emas[0]
    out.append(stats.compare_claim(
        "small-batch-noisier", "With a small batch, running estimates sit farther from the true distribution",
        SEED_002, f"RMS error of the running mean after {c.steps} steps, m={ref:g}: batch {small_b} vs {big_b}",
        _values(run, f"converge/m={momentum_label(ref)}", "mean_err", c.steps, batch_size=small_b),
        _values(run, f"converge/m={momentum_label(ref)}", "mean_err", c.steps, batch_size=big_b), "greater",
        paired=True, min_effect=0.2, labels=(f"B={small_b}", f"B={big_b}")))
    if None in c.momenta:
        out.append(stats.compare_claim(
            "cumulative-closest", "momentum=None (cumulative average) ends closest to a fixed population's "
            "statistics", "STUDIES.md",
            f"RMS error of the running mean after {c.steps} steps, batch {mid_b}: None vs m={slow:g}",
            _values(run, "converge/m=cumulative", "mean_err", c.steps, batch_size=mid_b),
            _values(run, sl, "mean_err", c.steps, batch_size=mid_b), "less", paired=True,
            labels=("None", f"m={slow:g}")))
        bias = _values(run, "converge/m=cumulative", "var_bias", c.steps, batch_size=small_b)
        shortfall = abs(math.log((small_b - 1) / small_b))
        claim = stats.equivalence_claim(
            "running-var-unbiased-estimate", f"The running variance estimates the population variance without "
            f"the biased estimator's (B-1)/B shortfall at batch {small_b}", "STUDIES.md",
            f"mean log(running_var / population var) after {c.steps} steps, momentum None, batch {small_b}",
            bias, 0.0, margin=shortfall / 2)
        claim.detail += f"; a biased estimator would sit at log((B-1)/B) = {-shortfall:.3g}"
        out.append(claim)
    return out


def _gap_claims(run: StoredRun, c: Any) -> list[Claim]:
    short, long = c.gap_steps
    keras_default = 0.01 if 0.01 in c.gap_momenta else min(m for m in c.gap_momenta if m is not None)
    arm = f"gap/m={momentum_label(keras_default)}"
    run_s = _values(run, arm, "acc_running", steps=short)
    recal_s = _values(run, arm, "acc_recalibrated", steps=short)
    batch_s = _values(run, arm, "acc_batch_stats", steps=short)
    out = [
        stats.compare_claim(
            "short-training-eval-gap",
            f"After short training a large Keras momentum ({1 - keras_default:g}) leaves the running statistics "
            "short of the true ones, hurting prediction", SEED_002,
            f"test accuracy after {short} steps: running stats vs recalibrated stats (torch m={keras_default:g})",
            run_s, recal_s, "less", paired=True, min_effect=0.05, labels=("running", "recalibrated")),
        stats.compare_claim(
            "recalibration-closes-gap", "Recalibrating the statistics on training data closes the train/eval gap",
            "STUDIES.md", f"|batch-stat accuracy - eval accuracy| after {short} steps, m={keras_default:g}: "
            "recalibrated vs running stats",
            np.abs(batch_s - recal_s), np.abs(batch_s - run_s), "less", paired=True, min_effect=0.5,
            labels=("recalibrated", "running")),
        stats.compare_claim(
            "long-training-shrinks-gap",
            "With enough steps the large Keras momentum's running statistics get close to the true ones",
            SEED_002, f"recalibrated - running test accuracy, m={keras_default:g}: {long} vs {short} steps",
            _values(run, arm, "acc_recalibrated", steps=long) - _values(run, arm, "acc_running", steps=long),
            recal_s - run_s, "less", labels=(f"{long} steps", f"{short} steps")),
    ]
    return out


# ------------------------------------------------------------------------------------------- figures


def _ci_band(ax, steps, table: pd.DataFrame, label: str, **kw) -> None:
    ivs = [stats.mean_ci(table.loc[table["step"] == s, "value"].to_numpy()) for s in steps]
    line = ax.plot(steps, [iv.mean for iv in ivs], label=label, **kw)[0]
    ax.fill_between(steps, [iv.lo for iv in ivs], [iv.hi for iv in ivs], color=line.get_color(), alpha=0.2)


def _walkthrough_figure(run: StoredRun) -> Figure:
    c: Any = run.config  # bn_running_stats.Config
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for j, ax in enumerate(axes):
        value = float(j + 1)
        hand = _hand_walkthrough(c.walk_momentum, value, c.walk_iterations)
        its = np.arange(len(hand))
        for k, (name, marker) in enumerate((("running_mean", "o"), ("running_var", "s"))):
            layer = [_values(run, "walkthrough", f"{name}/f{j}", step=i)[0] for i in its]
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
    c: Any = run.config  # bn_running_stats.Config
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
    c: Any = run.config  # bn_running_stats.Config
    kinds = (("acc_batch_stats", "train mode (batch stats)"), ("acc_running", "eval (running stats)"),
             ("acc_recalibrated", "eval (recalibrated)"))
    fig, axes = plt.subplots(1, len(c.gap_steps), figsize=(5 * len(c.gap_steps), 3.6), squeeze=False, sharey=True)
    width = 0.8 / len(kinds)
    for ax, steps in zip(axes[0], c.gap_steps, strict=True):
        for k, (metric, label) in enumerate(kinds):
            ivs = [stats.mean_ci(_values(run, f"gap/m={momentum_label(mom)}", metric, steps=steps)) for mom in c.gap_momenta]
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


def draw(run: StoredRun) -> list[Figure]:
    return [_walkthrough_figure(run), _convergence_figure(run), _gap_figure(run)]
