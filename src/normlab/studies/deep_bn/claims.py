"""deep-bn's verdicts: per-layer growth factors (forward std, backward gradient norm) fitted per seed and
judged against "stable" (1), "vanishes"/"explodes" and Yang et al.'s large-batch rate."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from normlab.engine.spec import Claim, StoredRun
from normlab.kit import stats
from normlab.studies.deep_bn.config import SOURCE, YANG, YANG_RELU_RATE, Config, arms


def series(metrics: pd.DataFrame, arm: str, metric: str) -> pd.DataFrame:
    """A (seed x layer) table of one per-layer metric; missing layers (after an overflow) are NaN."""
    sel = metrics[(metrics["arm"] == arm) & (metrics["metric"] == metric) & (metrics["step"] > 0)]
    return sel.pivot_table(index="seed", columns="step", values="value", aggfunc="first")


def factors(metrics: pd.DataFrame, arm: str, metric: str, c: Config, backward: bool) -> np.ndarray:
    """Per seed: exp(slope) of log(value) vs layer over the fit window (growth toward the input if backward)."""
    table = series(metrics, arm, metric)
    out = []
    for _, row in table.iterrows():
        layers, vals = row.index.to_numpy(dtype=float), row.to_numpy(dtype=float)
        keep = np.isfinite(vals) & (vals > 0) & (layers > c.fit_skip)
        if (layers[keep] <= c.depth - c.fit_skip).sum() >= 3:  # inside the window when the run reached it
            keep &= layers <= c.depth - c.fit_skip
        if keep.sum() < 3:
            out.append(np.nan)
            continue
        slope = np.polyfit(layers[keep], np.log(vals[keep]), 1)[0]
        out.append(math.exp(-slope if backward else slope))
    return np.asarray(out)


def _all_of(id: str, claim: str, source: str, measurement: str, parts: list[Claim], names: list[str]) -> Claim:
    """One claim that must hold for every arm: combined verdict, the weakest arm's numbers."""
    verdict = stats.combine_verdicts([p.verdict for p in parts])
    rank = {"refuted": 0, "inconclusive": 1, "supported": 2}
    worst = min(parts, key=lambda p: rank[p.verdict])
    detail = "; ".join(f"{n}: {p.verdict} ({p.detail})" for n, p in zip(names, parts, strict=True))
    return Claim(id=id, claim=claim, source=source, measurement=measurement, verdict=verdict,
                 statistic=worst.statistic, value=worst.value, p_value=worst.p_value,
                 effect_size=worst.effect_size, ci=worst.ci, n=worst.n, detail=detail)


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


def claims(run: StoredRun) -> list[Claim]:
    c: Config = run.config
    fwd = {arm: factors(run.metrics, arm, "act_std", c, backward=False) for arm, *_ in arms(c)}
    bwd = {arm: factors(run.metrics, arm, "grad_w", c, backward=True) for arm, *_ in arms(c)}
    bn_arms = [f"bn/{i}" for i in c.inits]
    out = [
        _all_of("bn-std-stable", "With BN the output std stays stable whatever the init", SOURCE,
                f"per seed: per-layer growth factor of the activation std (fit over layers {c.fit_skip + 1}.."
                f"{c.depth - c.fit_skip}); stable = within 1 ± {c.stable_tol:g}, for every init",
                [stats.equivalence_claim(a, "", "", "", fwd[a], 1.0, c.stable_tol) for a in bn_arms], bn_arms),
    ]
    plain = {
        "default": ("vanishes", "less", "Without BN, torch's default init makes the output std vanish"),
        "normal": ("explodes", "greater", "Without BN, normal(0,1) init makes the output std explode"),
    }
    for init in c.inits:
        arm = f"plain/{init}"
        if init in plain:
            tag, direction, text = plain[init]
            bound = 1 - c.stable_tol if direction == "less" else 1 + c.stable_tol
            cl = stats.threshold_claim(f"plain-{init}-{tag}", text, SOURCE,
                                       f"per seed: per-layer std growth factor, vs {bound:g}", fwd[arm],
                                       direction, bound)
        else:
            cl = stats.equivalence_claim("plain-kaiming-stable", "Without BN, Kaiming init keeps the std stable",
                                         SOURCE, f"per seed: per-layer std growth factor, within 1 ± {c.stable_tol:g}",
                                         fwd[arm], 1.0, c.stable_tol)
        cl.detail += _overflow_note(run.metrics, arm)
        out.append(cl)
    out.append(_all_of(
        "bn-grad-grows", "BN makes gradients grow with depth at init (toward the input)", YANG,
        "per seed: per-layer growth factor of ||dL/dW_l|| going from the output toward the input, > 1, every init",
        [stats.threshold_claim(a, "", "", "", bwd[a], "greater", 1.0) for a in bn_arms], bn_arms))
    margin = c.yang_margin * YANG_RELU_RATE
    for arm in [*bn_arms, *(a for a, *_ in arms(c) if "batch=" in a)]:
        cl = stats.equivalence_claim(
            f"bn-grad-rate/{arm}", f"Gradient norm grows ≈ sqrt(π/(π-1)) = {YANG_RELU_RATE:.3f}x per layer "
            f"({arm})", YANG, f"per-layer gradient growth factor within ±{c.yang_margin:.0%} of {YANG_RELU_RATE:.3f}",
            bwd[arm], YANG_RELU_RATE, margin)
        cl.detail = f"factor {stats.mean_ci(bwd[arm]).fmt(4)}; " + cl.detail
        out.append(cl)
    if "kaiming" in c.inits:
        out.append(stats.equivalence_claim(
            "plain-kaiming-grad-flat", "Control: without BN (Kaiming) gradients do not grow with depth",
            "control arm", f"per-layer gradient growth factor within 1 ± {c.stable_tol:g}",
            bwd["plain/kaiming"], 1.0, c.stable_tol))
    return out


def notes(run: StoredRun) -> str:
    c: Config = run.config
    return (
        f"The seed omits its code; normlab uses the course's usual setup: {c.depth} x [Linear({c.width},"
        f"{c.width}, bias=False) → BN → ReLU], batch {c.batch} of randn inputs, BN in training mode, "
        f"{c.seeds} seeds per arm. Growth factors are exp(slope) of a least-squares line through log(value) "
        f"vs layer over layers {c.fit_skip + 1}..{c.depth - c.fit_skip} (or the finite ones). Controls: "
        "`plain/kaiming` shows that depth alone does not make gradients grow; `bn/kaiming/batch=B` checks "
        f"whether the rate approaches Yang et al.'s large-batch value {YANG_RELU_RATE:.3f} as the batch grows. "
        "Arms whose activations overflow record the layer (`overflow_layer`) and have no backward pass."
    )
