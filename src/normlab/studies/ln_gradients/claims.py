"""ln-gradients: per-seed measures, the claims, and the report notes (computed from the stored metrics).

Measures, one number per (arm, seed):

``final_loss``      mean training loss over the last 5% of steps (the seed's logged loss, dropout active)
``fluctuation``     std of the step-to-step change of ``log10(train_loss)`` over the second half
``settle_step``     first step after which the gradient norm stays within 2x of its final level
                    (median over the last 10% of steps): "the gradients settle early"
``spread_end``      std of all gradient entries of the network, averaged over the last 10% of steps:
                    small = a narrow (concentrated) gradient histogram
``roughness``       std of the step-to-step change of ``log10(grad_norm)`` over the second half:
                    large = a "messy" gradient distribution that jumps from step to step
``gap_ratio``       held-out (interpolation) MSE / train MSE at the last step, both in eval mode:
                    > 1 means the fit is worse between the training points than on them (overfitting)
``heldout_interp``  held-out interpolation MSE at the last step
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from normlab.engine.spec import Claim, StoredRun
from normlab.kit.stats import combine_verdicts, compare_claim, mean_ci, not_judged, threshold_claim
from normlab.studies.ln_gradients.config import CTRL, SRC, linear_floor


def _fluct(v: np.ndarray) -> float:
    v = v[v > 0]
    if v.size < 3:
        return np.nan
    return float(np.std(np.diff(np.log10(v)), ddof=1))


def _settle(steps: np.ndarray, g: np.ndarray) -> float:
    k = max(1, int(0.1 * g.size))
    final = np.median(g[-k:])
    if not np.isfinite(final) or final <= 0:
        return np.nan
    outside = np.abs(np.log10(np.maximum(g, 1e-30) / final)) > np.log10(2.0)
    idx = np.nonzero(outside)[0]
    return float(steps[0] if idx.size == 0 else steps[min(idx[-1] + 1, steps.size - 1)])


def per_seed_measures(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per (arm, seed) with the measures of the module docstring."""
    rows = []
    piv = {m: g.pivot_table(index=["arm", "seed"], columns="step", values="value")
           for m, g in metrics.groupby("metric")}
    if "train_loss" not in piv:
        return pd.DataFrame(columns=["arm", "seed"])
    for (arm, seed), loss in piv["train_loss"].iterrows():
        loss = loss.dropna()
        steps, lv = loss.index.to_numpy(), loss.to_numpy()
        n = lv.size
        gn = piv["grad_norm"].loc[(arm, seed)].dropna().to_numpy()
        sp = piv["grad_spread"].loc[(arm, seed)].dropna().to_numpy()
        ku = piv["grad_kurtosis"].loc[(arm, seed)].dropna().to_numpy()
        half = n // 2
        te = piv["train_loss_eval"].loc[(arm, seed)].dropna()
        hi = piv["heldout_interp"].loc[(arm, seed)].dropna()
        he = piv["heldout_extrap"].loc[(arm, seed)].dropna()
        rows.append({
            "arm": arm, "seed": seed,
            "final_loss": float(lv[-max(1, int(0.05 * n)):].mean()),
            "fluctuation": _fluct(lv[half:]),
            "settle_step": _settle(steps, gn),
            "spread_end": float(sp[-max(1, int(0.1 * sp.size)):].mean()),  # recorded every eval_every steps
            "kurtosis_end": float(ku[-max(1, int(0.1 * ku.size)):].mean()),
            "roughness": _fluct(gn[half:]),
            "train_eval": float(te.iloc[-1]),
            "heldout_interp": float(hi.iloc[-1]),
            "heldout_extrap": float(he.iloc[-1]),
            "gap_ratio": float(hi.iloc[-1] / te.iloc[-1]) if te.iloc[-1] > 0 else np.nan,
        })
    return pd.DataFrame(rows)


class _Arms:
    """Per-seed values of a measure for an arm, aligned by seed (pairing is legitimate: within a seed,
    every arm that builds the same Linear layers starts from the same weights; Dropout, LayerNorm and
    ReLU draw no random numbers at init)."""

    def __init__(self, measures: pd.DataFrame):
        self.m = measures.set_index(["arm", "seed"]).sort_index()

    def has(self, *arms: str) -> bool:
        present = set(self.m.index.get_level_values(0))
        return all(a in present for a in arms)

    def pair(self, measure: str, a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
        va, vb = self.m.loc[a, measure], self.m.loc[b, measure]
        common = va.index.intersection(vb.index)
        return va.loc[common].to_numpy(float), vb.loc[common].to_numpy(float)


def _missing(id_: str, claim: str, source: str, measurement: str, arms: tuple[str, ...]) -> Claim:
    return not_judged(id_, claim, source, measurement, f"arms {list(arms)} were not all run")


def _cmp(A: _Arms, id_: str, claim: str, source: str, measurement: str, measure: str, a: str, b: str,
         direction: str, **kw) -> Claim:
    if not A.has(a, b):
        return _missing(id_, claim, source, measurement, (a, b))
    va, vb = A.pair(measure, a, b)
    return compare_claim(id_, claim, source, measurement, va, vb, direction, paired=True, labels=(a, b), **kw)


def measures_of(run: StoredRun) -> pd.DataFrame:
    """``per_seed_measures`` of a stored run, computed once per run object (claims, notes, figures)."""
    cached = getattr(run, "_ln_gradients_measures", None)
    if cached is None:
        cached = per_seed_measures(run.metrics)
        run._ln_gradients_measures = cached  # type: ignore[attr-defined]
    return cached


def claims(run: StoredRun) -> list[Claim]:
    A = _Arms(measures_of(run))
    loss_m = "mean train MSE over the last 5% of steps; paired t on log10 over seeds; 'clearly' = >= 10% lower"
    fl_m = "std of Δlog10(train loss) per step over the second half; paired t on log10"
    settle_m = "first step after which the gradient norm stays within 2x of its final level; paired t"
    spread_m = "std of all gradient entries, mean over the last 10% of steps (narrow histogram = small); paired t on log10"
    rough_m = "std of Δlog10(gradient norm) per step over the second half; paired t on log10"
    gap_m = "held-out (midpoints t+0.5) MSE / train MSE at the last step, eval mode; paired t on log10"
    out = [
        _cmp(A, "C1a", "LN reaches clearly lower loss than no LN (ln vs none)", SRC, loss_m,
             "final_loss", "ln", "none", "less", transform="log", min_effect=0.1),
        _cmp(A, "C1b", "LN reaches clearly lower loss than no LN (dropout+ln vs dropout)", SRC, loss_m,
             "final_loss", "dropout+ln", "dropout", "less", transform="log", min_effect=0.1),
        _cmp(A, "C2a", "dropout makes the loss fluctuate more (dropout vs none)", SRC, fl_m,
             "fluctuation", "dropout", "none", "greater", transform="log"),
        _cmp(A, "C2b", "dropout makes the loss fluctuate more (dropout+ln vs ln)", SRC, fl_m,
             "fluctuation", "dropout+ln", "ln", "greater", transform="log"),
        _cmp(A, "C3a", "without regularization the gradients settle early (none vs dropout)", SRC, settle_m,
             "settle_step", "none", "dropout", "less"),
        _cmp(A, "C3b", "without regularization the gradients settle early (none vs ln)", SRC, settle_m,
             "settle_step", "none", "ln", "less"),
        _cmp(A, "C3c", "without regularization the gradient distribution is very concentrated (none vs dropout)",
             SRC, spread_m, "spread_end", "none", "dropout", "less", transform="log"),
        _cmp(A, "C3d", "without regularization the gradient distribution is very concentrated (none vs ln)",
             SRC, spread_m, "spread_end", "none", "ln", "less", transform="log"),
        _cmp(A, "C5", "dropout makes the gradient distribution messier (dropout vs none)", SRC, rough_m,
             "roughness", "dropout", "none", "greater", transform="log"),
        _cmp(A, "C6", "dropout+LN has a more concentrated gradient distribution than dropout alone", SRC,
             spread_m, "spread_end", "dropout+ln", "dropout", "less", transform="log"),
    ]
    # C4: overfitting means the fit is worse off the training points than on them: ratio > 1.
    c4 = "the concentrated gradients of `none` are a sign of overfitting"
    if A.has("none"):
        out.insert(8, threshold_claim("C4", c4, SRC, gap_m.replace("paired t on log10", "one-sample t vs 1"),
                                      A.m.loc["none", "gap_ratio"].to_numpy(float), "greater", 1.0))
    else:
        out.insert(8, _missing("C4", c4, SRC, gap_m, ("none",)))
    # C7: LN alone lies between none and dropout (messiness): two comparisons, one verdict.
    c7_claim = "LN alone lies between none and dropout (gradient messiness)"
    if A.has("ln", "none", "dropout"):
        lo = _cmp(A, "C7", c7_claim, SRC, rough_m, "roughness", "ln", "none", "greater", transform="log")
        hi = _cmp(A, "C7", c7_claim, SRC, rough_m, "roughness", "ln", "dropout", "less", transform="log")
        weaker = max((lo, hi), key=lambda c: c.p_value if c.p_value is not None else 1.0)
        weaker.verdict = combine_verdicts([lo.verdict, hi.verdict])  # type: ignore[assignment]
        weaker.detail = f"ln vs none: {lo.verdict} ({lo.detail}) | ln vs dropout: {hi.verdict} ({hi.detail})"
        out.append(weaker)
    else:
        out.append(_missing("C7", c7_claim, SRC, rough_m, ("ln", "none", "dropout")))
    out.append(_cmp(A, "C8", "LN alone prevents overfitting (tested as: held-out loss ln < none)", SRC,
                    "held-out (midpoints) MSE at the last step, eval mode; paired t on log10",
                    "heldout_interp", "ln", "none", "less", transform="log"))
    # Controls: what explains C1?
    floor = linear_floor()
    if A.has("none"):
        ratio = A.m.loc["none", "train_eval"].to_numpy(float) / floor
        out.append(threshold_claim(
            "K1", "`none` is a linear model: it sits at the least-squares floor of any linear fit", CTRL,
            f"train MSE (eval mode) / linear least-squares floor ({floor:.4g}); one-sample t vs 1.05",
            ratio, "less", 1.05))
    else:
        out.append(_missing("K1", "`none` sits at the linear floor", CTRL, "train MSE / floor", ("none",)))
    out += [
        _cmp(A, "K2", "a ReLU network without LN fits better than the linear `none` (nonlinearity alone helps)",
             CTRL, loss_m, "final_loss", "relu", "none", "less", transform="log", min_effect=0.1),
        _cmp(A, "K3", "LN still lowers the loss when the network has ReLUs (relu+ln vs relu)", CTRL, loss_m,
             "final_loss", "relu+ln", "relu", "less", transform="log", min_effect=0.1),
        _cmp(A, "K4", "LN still lowers the loss with standardized inputs/targets (ln/std vs none/std)", CTRL,
             loss_m, "final_loss", "ln/std", "none/std", "less", transform="log", min_effect=0.1),
        _cmp(A, "K5", "LN still lowers the loss with decoupled weight decay (ln/adamw vs none/adamw)", CTRL,
             loss_m, "final_loss", "ln/adamw", "none/adamw", "less", transform="log", min_effect=0.1),
    ]
    return out


def _geo(values: np.ndarray) -> tuple[float, float, float]:
    """Geometric mean and its 95% interval (a t-interval on log10): right for positive, skewed measures."""
    v = values[np.isfinite(values) & (values > 0)]
    if v.size == 0:
        return (np.nan, np.nan, np.nan)
    iv = mean_ci(np.log10(v))
    return 10**iv.mean, 10**iv.lo, 10**iv.hi


def _geo_fmt(values: np.ndarray) -> str:
    m, lo, hi = _geo(values)
    return f"{m:.3g} [{lo:.3g}, {hi:.3g}]"


def _verdicts(run: StoredRun) -> dict[str, str]:
    return {c.id: c.verdict for c in claims(run)}


def notes(run: StoredRun) -> str:
    meas = measures_of(run)
    v = _verdicts(run)
    n_seeds = int(meas.groupby("arm").size().min()) if len(meas) else 0
    lines: list[str] = [
        "### What the seed did",
        "Four arms (`dropout`, `dropout+ln`, `ln`, `none`) of a 5-Linear network **with no activation "
        "function**, one run each, Adam(lr=0.01, weight_decay=0.01), MSE, full batch of 20 points, 1000 "
        "steps; it judged loss curves and TensorBoard gradient histograms by eye. normlab reruns the same "
        f"arms exactly with {n_seeds} seeds each (seed i of every arm starts from the same Linear weights, so "
        "comparisons are paired), adds a held-out set, and the controls below.",
        "",
        "### The data has a structure the seed does not mention",
        f"`x1 = x2 - 10` on every row, so the target is a parabola in one variable. A network without "
        f"nonlinearity (`none`, `dropout` at eval) is an affine map: it cannot beat the least-squares line, "
        f"whose train MSE is {linear_floor():.4g}. LayerNorm divides by a data-dependent norm: it is the only "
        "nonlinearity of the `ln` arms.",
        "",
        "### Held-out data",
        "The seed has none, so its overfitting claims (C4, C8) cannot be tested as written. normlab holds out "
        "the 19 midpoints `t = 0.5 .. 18.5` of the same function on the same line (interpolation: does the fit "
        "hold between the training points?) and reports extrapolation (`t = -3..-1, 20..22`) separately: "
        "extrapolating a parabola is a different question from overfitting.",
    ]
    if len(meas) and "none" in set(meas["arm"]):
        r = mean_ci(meas.loc[meas["arm"] == "none", "gap_ratio"].to_numpy(float))
        lines.append(
            f"Measured: `none`'s held-out/train MSE ratio is {r.fmt()} (C4: **{v.get('C4')}**); a ratio above 1 "
            "would mean the fit is worse between the training points than on them. If `none` does not "
            "overfit, LN has no overfitting to prevent: a lower held-out loss for `ln` (C8) then reflects a "
            "better fit (LN's nonlinearity), not regularization.")
    lines += [
        "",
        "### What each control rules in or out",
    ]
    ctrl = {
        "K1": ("`none` vs the linear floor",
               "if supported, the non-LN arms' higher loss is the ceiling of a linear model, not a training "
               "failure that LN fixes"),
        "K2": ("`relu` vs `none`", "if supported, any nonlinearity lowers the loss: C1 alone does not show "
               "that *normalization* helps"),
        "K3": ("`relu+ln` vs `relu`", "if supported, LN helps beyond being a nonlinearity; if refuted or "
               "inconclusive, C1 is explained by nonlinearity"),
        "K4": ("`ln/std` vs `none/std`", "if supported, LN's gain is not only a fix for unscaled inputs/targets"),
        "K5": ("`ln/adamw` vs `none/adamw`", "if supported, LN's gain does not depend on Adam's L2-style "
               "weight decay (which Adam rescales per parameter) vs decoupled AdamW decay"),
    }
    for k, (what, meaning) in ctrl.items():
        lines.append(f"- **{k}** ({what}): verdict **{v.get(k, 'not run')}**; {meaning}.")
    lines += [
        "",
        "### Reading the gradient claims",
        "The seed reads 'concentrated' from TensorBoard histograms. normlab measures it as the spread (std) of "
        "all gradient entries; that spread shrinks as the loss shrinks, so a 'concentrated' histogram mostly "
        "says 'small gradients', which is what converging to a minimum looks like, with or without "
        "overfitting. The overfitting claims are therefore judged on held-out loss (C4, C8), not on histograms.",
    ]
    if len(meas):
        gaps = meas.groupby("arm")["gap_ratio"].apply(lambda v: _geo(v.to_numpy(float))[0])
        worst = gaps.idxmax()
        lines += ["", f"Across all arms the largest held-out/train ratio is `{worst}`'s "
                      f"({_geo_fmt(meas.loc[meas['arm'] == worst, 'gap_ratio'].to_numpy(float))}): "
                      + ("it fits the held-out midpoints worse than its training points (it overfits)."
                         if gaps.max() > 1 else "no arm fits the midpoints worse than the training points.")]
        lines += ["", "### Per-arm measures (geometric mean [95% CI] over seeds; settle_step: arithmetic)"]
        for arm, g in meas.groupby("arm", sort=False):
            parts = [f"{k} {_geo_fmt(g[k].to_numpy(float))}"
                     for k in ("final_loss", "heldout_interp", "gap_ratio", "fluctuation", "roughness")]
            parts.append(f"settle_step {mean_ci(g['settle_step'].to_numpy(float)).fmt()}")
            lines.append(f"- `{arm}`: " + "; ".join(parts))
    return "\n".join(lines)
