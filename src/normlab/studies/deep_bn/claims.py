"""deep-bn's verdicts at init: per-layer growth factors (forward std, backward gradient norm) fitted per seed
and judged against "stable" (1), "vanishes"/"explodes" and Yang et al.'s large-batch rate; the learning-rate
sweep's verdicts are in :mod:`normlab.studies.deep_bn.lr_claims`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from normlab.engine.spec import Claim, KeyNumber, StoredRun
from normlab.kit import stats
from normlab.studies.deep_bn.config import SOURCE, YANG, YANG_RELU_RATE, Config, arms
from normlab.studies.deep_bn.lr_claims import best_loss, lr_claims, sweep


def series(metrics: pd.DataFrame, arm: str, metric: str) -> pd.DataFrame:
    """A (seed x layer) table of one per-layer metric; missing layers (after an overflow) are NaN."""
    sel = metrics[(metrics["arm"] == arm) & (metrics["metric"] == metric) & (metrics["step"] > 0)]
    return sel.pivot_table(index="seed", columns="step", values="value", aggfunc="first")


def factors(metrics: pd.DataFrame, arm: str, metric: str, c: Config, backward: bool) -> np.ndarray:
    """Per seed: exp(slope) of log(value) vs layer over the fit window (growth toward the input if backward).

    NaN for a seed with fewer than 3 positive finite values in the window, or with any value in it exactly 0:
    a dead (all-zero) or underflowed layer has no log, and fitting the layers around it would invent a rate.
    """
    table = series(metrics, arm, metric)
    out = []
    for _, row in table.iterrows():
        layers, vals = row.index.to_numpy(dtype=float), row.to_numpy(dtype=float)
        keep = np.isfinite(vals) & (layers > c.fit_skip)
        if (layers[keep] <= c.depth - c.fit_skip).sum() >= 3:  # inside the window when the run reached it
            keep &= layers <= c.depth - c.fit_skip
        if keep.sum() < 3 or (vals[keep] <= 0).any():
            out.append(np.nan)
            continue
        slope = np.polyfit(layers[keep], np.log(vals[keep]), 1)[0]
        out.append(math.exp(-slope if backward else slope))
    return np.asarray(out)


SEED = "seed"  # the unit: a seed draws a run's weights and its batch (or batches), shared by all its arms


def _judged(values: np.ndarray, id: str, claim: str, source: str, measurement: str, judge) -> Claim:
    """``judge(values)`` when at least two seeds have a finite value, else an inconclusive claim that says why
    (a dead or overflowed network has no growth factor; the lab's helpers need two values for a spread)."""
    finite = int(np.isfinite(np.asarray(values, dtype=float)).sum()) if len(values) else 0
    if finite < 2:
        return stats.not_judged(id, claim, source, measurement,
                                f"{finite} of {len(values)} seeds have a finite growth factor (a network whose "
                                "activations are all exactly 0, or overflow, has none): too few to judge",
                                unit=SEED)
    cl = judge(np.asarray(values, dtype=float))
    cl.id, cl.claim, cl.source, cl.measurement, cl.unit = id, claim, source, measurement, SEED
    return cl


def _overflow_note(metrics: pd.DataFrame, arm: str) -> str:
    notes = []
    for metric, what in (("overflow_layer", "inf/NaN"), ("zero_layer", "exact zeros")):
        sel = metrics[(metrics["arm"] == arm) & (metrics["metric"] == metric)]["value"]
        if len(sel):
            notes.append(f"{what} at layer {int(sel.min())}-{int(sel.max())} in {len(sel)} seeds")
    zeros = metrics[(metrics["arm"] == arm) & (metrics["metric"] == "grad_w_zero_layers")]["value"]
    if len(zeros) and zeros.max() > 0:
        notes.append(f"weight gradients exactly 0 (underflow) in {zeros.mean():.0f} layers per seed on average")
    return ("; " + ", ".join(notes)) if notes else ""


def init_claims(run: StoredRun) -> list[Claim]:
    """The 100-layer net at init: one unit per seed (a seed draws the weights, the batch and the readout)."""
    c: Config = run.config
    fwd = {arm: factors(run.metrics, arm, "act_std", c, backward=False) for arm, *_ in arms(c)}
    bwd = {arm: factors(run.metrics, arm, "grad_w", c, backward=True) for arm, *_ in arms(c)}
    bn_arms = [f"bn/{i}" for i in c.inits]
    stable = lambda v: stats.equivalence_claim("", "", "", "", v, 1.0, c.stable_tol, unit=SEED)  # noqa: E731
    out = [
        stats.all_of_claim(
            "bn-std-stable", "With BN the output std stays stable whatever the init", SOURCE,
            f"per seed: per-layer growth factor of the activation std (fit over layers {c.fit_skip + 1}.."
            f"{c.depth - c.fit_skip}); stable = within 1 ± {c.stable_tol:g}, for every init",
            [(a, _judged(fwd[a], a, "", "", "", stable)) for a in bn_arms], unit=SEED),
    ]
    plain = {
        "default": ("vanishes", "less", "Without BN, torch's default init makes the output std vanish"),
        "normal": ("explodes", "greater", "Without BN, normal(0,1) init makes the output std explode"),
    }
    for init in ("default", "normal", "kaiming"):  # every id, always: the seed sentences name them
        arm = f"plain/{init}"
        if init not in c.inits:
            tag = plain[init][0] if init in plain else "stable"
            out.append(stats.not_judged(f"plain-{init}-{tag}", plain[init][2] if init in plain else
                                        "Without BN, Kaiming init keeps the std stable", SOURCE,
                                        "per seed: per-layer std growth factor",
                                        f"inits has no {init!r}: arm {arm} was not run", unit=SEED))
            continue
        if init in plain:
            tag, direction, text = plain[init]
            bound = 1 - c.stable_tol if direction == "less" else 1 + c.stable_tol
            cl = _judged(fwd[arm], f"plain-{init}-{tag}", text, SOURCE,
                         f"per seed: per-layer std growth factor, vs {bound:g}",
                         lambda v, d=direction, b=bound: stats.threshold_claim("", "", "", "", v, d, b))
        else:
            cl = _judged(fwd[arm], "plain-kaiming-stable", "Without BN, Kaiming init keeps the std stable", SOURCE,
                         f"per seed: per-layer std growth factor, within 1 ± {c.stable_tol:g}", stable)
        cl.detail += _overflow_note(run.metrics, arm)
        out.append(cl)
    grows = lambda v: stats.threshold_claim("", "", "", "", v, "greater", 1.0)  # noqa: E731
    parts = [_judged(bwd[a], a, "", "", "", grows) for a in bn_arms]
    for a, part in zip(bn_arms, parts, strict=True):
        part.detail += _overflow_note(run.metrics, a)
    out.append(stats.all_of_claim(
        "bn-grad-grows", "BN makes gradients grow with depth at init (toward the input)", YANG,
        "per seed: per-layer growth factor of ||dL/dW_l|| going from the output toward the input, > 1, every init",
        list(zip(bn_arms, parts, strict=True)), unit=SEED))
    margin = c.yang_margin * YANG_RELU_RATE
    for arm in [*bn_arms, *(a for a, *_ in arms(c) if "batch=" in a)]:
        cl = _judged(
            bwd[arm], f"bn-grad-rate/{arm}", f"Gradient norm grows ≈ sqrt(π/(π-1)) = {YANG_RELU_RATE:.3f}x per "
            f"layer ({arm})", YANG, f"per-layer gradient growth factor within ±{c.yang_margin:.0%} of "
            f"{YANG_RELU_RATE:.3f}", lambda v: stats.equivalence_claim("", "", "", "", v, YANG_RELU_RATE, margin))
        if cl.statistic != "none":
            cl.detail = f"factor {stats.mean_ci(bwd[arm]).fmt(4)}; " + cl.detail
        cl.detail += _overflow_note(run.metrics, arm)
        out.append(cl)
    if "kaiming" in c.inits:
        out.append(_judged(
            bwd["plain/kaiming"], "plain-kaiming-grad-flat",
            "Control: without BN (Kaiming) gradients do not grow with depth", "control arm",
            f"per-layer gradient growth factor within 1 ± {c.stable_tol:g}", stable))
    return out


def claims(run: StoredRun) -> list[Claim]:
    return [*init_claims(run), *lr_claims(run)]


def notes(run: StoredRun) -> str:
    c: Config = run.config
    return (
        f"The seed omits its code; normlab uses the course's usual setup: {c.depth} x [Linear({c.width},"
        f"{c.width}, bias=False) → BN → ReLU], batch {c.batch} of randn inputs, BN in training mode, "
        f"{c.seeds} seeds per arm. Growth factors are exp(slope) of a least-squares line through log(value) "
        f"vs layer over layers {c.fit_skip + 1}..{c.depth - c.fit_skip} (or the finite ones). Controls: "
        "`plain/kaiming` shows that depth alone does not make gradients grow; `bn/kaiming/batch=B` checks "
        f"whether the rate approaches Yang et al.'s large-batch value {YANG_RELU_RATE:.3f} as the batch grows. "
        "Arms whose activations overflow record the layer (`overflow_layer`) and have no backward pass; a seed "
        "with a layer of exact zeros inside the fit window (a dead or underflowed network) has no growth factor, "
        "and a claim with fewer than two seeds that have one is inconclusive. One unit per seed: a seed draws "
        "the weights, the batch and the readout.\n\n"
        f"The learning-rate sweep trains a {c.train_depth}-hidden-layer width-{c.train_width} ReLU MLP "
        f"(Linear → [BN] → ReLU, then a Linear readout) on scikit-learn's 8x8 digits (1,348 training images) with "
        f"SGD (momentum {c.momentum:g}, batch {c.train_batch}, {c.train_steps} steps, cross-entropy) at every "
        f"learning rate of {list(c.lrs)}, {c.train_seeds} seeds, with the hidden layers' init in "
        f"{list(c.train_inits)}. Seed s fixes the weights and the batches, shared by the BN and no-BN runs at "
        f"every rate: one unit per seed, BN vs no BN paired. A run trains when its final loss (mean over the "
        f"last {c.tail} steps) is finite and at most {c.trains_below:g} x ln 10. Control: the Kaiming-initialised "
        "net without BN, so that 'BN allows larger rates' is not 'a badly initialised net trains at no rate'."
    )


def key_numbers(run: StoredRun) -> list[KeyNumber]:
    """The per-layer growth factors at init (forward std, backward gradient norm: positive ratios, 1 = stable) of
    every arm, and each sweep arm's best final loss over the learning-rate grid (positive, as bn-faster compares
    it)."""
    c: Config = run.config
    out: list[KeyNumber] = []
    for metric, backward, what in (("act_std", False, "forward growth factor of the activation std per layer"),
                                   ("grad_w", True, "backward growth factor of the weight-gradient norm per layer")):
        for arm, *_ in arms(c):
            v = factors(run.metrics, arm, metric, c, backward=backward)
            if v.size:
                out.append(KeyNumber(f"{what}, at init", arm, tuple(v), "positive", SEED))
    for init in c.train_inits:
        for bn in (False, True):
            arm = f"train/{'bn' if bn else 'plain'}/{init}"
            if (run.metrics["arm"] == arm).any():
                out.append(KeyNumber(f"lowest final training loss over the learning-rate grid ({c.train_steps} steps)",
                                     arm, tuple(best_loss(*sweep(run.metrics, arm, c))), "positive", SEED))
    return out
