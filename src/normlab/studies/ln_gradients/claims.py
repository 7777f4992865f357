"""ln-gradients: per-seed measures, the claims, and the report notes (computed from the stored metrics).

Measures, one number per (arm, seed):

``final_loss``      mean training loss over the last 5% of steps (the post's logged loss, dropout active)
``fluctuation``     std of the step-to-step change of ``log10(train_loss)`` over the second half
``settle_step``     first step after which the *smoothed* gradient norm (centered rolling median over 5% of
                    the steps) stays within 2x of its final level (median over the last 10% of steps):
                    "the gradients settle early". Smoothed, because a dropout arm's raw gradient norm jumps
                    by ~2.7x from one step to the next: against a 2x band the raw series never settles,
                    whatever the network does, so the measure could only come out one way for those arms.
``concentration``   kurtosis (m4 / m2², 3 for a Gaussian) of all gradient entries of the network, mean over
                    the last 10% of recorded steps: large = most entries piled near the centre with a few
                    far out, a peaked ("concentrated") histogram. Scale-free: multiplying every gradient by a
                    constant (a larger loss, a smaller learning signal) leaves it unchanged. The std of the
                    entries (``spread_end``, kept as a descriptive number) is not: it tracks the loss scale,
                    so "concentrated" read as "narrow" mostly says "small loss".
``roughness``       std of the step-to-step change of ``log10(grad_norm)`` over the second half:
                    large = a "messy" gradient distribution that jumps from step to step
``gap_ratio``       held-out (interpolation) MSE / train MSE at the last step, both in eval mode:
                    > 1 means the fit is worse between the training points than on them (overfitting)
``heldout_interp``  held-out interpolation MSE at the last step

Convergence speed is a pairwise measure (:func:`reach_steps`): for one seed and two arms, the first step at
which each arm's smoothed training loss falls to a level both reach (2x the higher of their final levels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from normlab.engine.spec import Claim, KeyNumber, StoredRun
from normlab.kit.stats import all_of_claim, compare_claim, mean_ci, not_judged, summarise, threshold_claim
from normlab.studies.ln_gradients.config import CTRL, SRC, linear_floor

UNIT = "seed"  # one seed = one unit: every arm of a seed starts from the same Linear weights on the same data
SMOOTH_FRACTION = 0.05  # rolling-median window, as a fraction of the series length
SETTLE_BAND = 2.0  # "settled" = within this factor of the final level
REACH_BAND = 2.0  # convergence speed: steps to reach this factor times the higher final level of two arms


def _fluct(v: np.ndarray) -> float:
    v = v[v > 0]
    if v.size < 3:
        return np.nan
    return float(np.std(np.diff(np.log10(v)), ddof=1))


def smooth(v: np.ndarray, fraction: float = SMOOTH_FRACTION) -> np.ndarray:
    """Centered rolling median over ``2h+1`` points, ``h = round(fraction * len(v) / 2)`` (``fraction=0``:
    the series itself).

    At the start the window shrinks symmetrically (step ``i < h`` takes the median of steps ``0..2i``), so a
    fast monotone descent is not shifted earlier; at the end it keeps its full width (the last ``2h+1``
    points), so the final steps of a noisy series are as smooth as the rest.
    """
    v = np.asarray(v, dtype=np.float64)
    n = v.size
    h = min(round(fraction * n / 2), (n - 1) // 2)
    if h <= 0:
        return v.copy()
    out = np.empty(n)
    out[h:n - h] = np.median(sliding_window_view(v, 2 * h + 1), axis=1)
    for i in range(h):
        out[i] = np.median(v[:2 * i + 1])
    out[n - h:] = np.median(v[n - 2 * h - 1:])
    return out


def _final_level(v: np.ndarray) -> float:
    return float(np.median(v[-max(1, int(0.1 * v.size)):]))


def _settle(steps: np.ndarray, g: np.ndarray, fraction: float = SMOOTH_FRACTION) -> float:
    """First step after which the smoothed ``g`` stays within ``SETTLE_BAND`` of its final level."""
    final = _final_level(g)
    if not np.isfinite(final) or final <= 0:
        return np.nan
    s = smooth(g, fraction)
    outside = np.abs(np.log10(np.maximum(s, 1e-30) / final)) > np.log10(SETTLE_BAND)
    idx = np.nonzero(outside)[0]
    return float(steps[0] if idx.size == 0 else steps[min(idx[-1] + 1, steps.size - 1)])


def _reach(steps: np.ndarray, smoothed: np.ndarray, level: float) -> float:
    """Steps taken until ``smoothed <= level`` (the first such step index + 1, so at least 1);
    ``steps[-1] + 2`` (censored: more than the run) if never."""
    idx = np.nonzero(smoothed <= level)[0]
    return float(steps[idx[0]] + 1 if idx.size else steps[-1] + 2)


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
        ku = piv["grad_kurtosis"].loc[(arm, seed)].dropna().to_numpy() + 3.0  # stored: excess kurtosis
        half = n // 2
        te = piv["train_loss_eval"].loc[(arm, seed)].dropna()
        hi = piv["heldout_interp"].loc[(arm, seed)].dropna()
        he = piv["heldout_extrap"].loc[(arm, seed)].dropna()
        rows.append({
            "arm": arm, "seed": seed,
            "final_loss": float(lv[-max(1, int(0.05 * n)):].mean()),
            "fluctuation": _fluct(lv[half:]),
            "settle_step": _settle(steps, gn),
            "settle_step_raw": _settle(steps, gn, fraction=0.0),  # the unsmoothed measure, for the notes
            "spread_end": float(sp[-max(1, int(0.1 * sp.size)):].mean()),  # recorded every eval_every steps
            "concentration": float(ku[-max(1, int(0.1 * ku.size)):].mean()),
            "roughness": _fluct(gn[half:]),
            "train_eval": float(te.iloc[-1]),
            "heldout_interp": float(hi.iloc[-1]),
            "heldout_extrap": float(he.iloc[-1]),
            "gap_ratio": float(hi.iloc[-1] / te.iloc[-1]) if te.iloc[-1] > 0 else np.nan,
        })
    return pd.DataFrame(rows)


def smoothed_losses(metrics: pd.DataFrame) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray, float]]:
    """``(arm, seed) -> (steps, smoothed train loss, final level)``: what :func:`reach_steps` compares."""
    out = {}
    loss = metrics[metrics["metric"] == "train_loss"]
    if loss.empty:
        return out
    for (arm, seed), row in loss.pivot_table(index=["arm", "seed"], columns="step", values="value").iterrows():
        row = row.dropna()
        v = row.to_numpy(float)
        out[(arm, int(seed))] = (row.index.to_numpy(), smooth(v), _final_level(v))
    return out


def reach_steps(series: dict, a: str, b: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Per seed (present in both arms): the steps arm ``a`` and arm ``b`` take to bring their smoothed
    training loss down to ``REACH_BAND`` x the higher of the two final levels (a level both reach), and how
    many of those times are censored (the level never reached: only possible through smoothing)."""
    seeds = sorted({s for (arm, s) in series if arm == a} & {s for (arm, s) in series if arm == b})
    ra, rb, censored = [], [], 0
    for s in seeds:
        (sa, va, fa), (sb, vb, fb) = series[(a, s)], series[(b, s)]
        level = REACH_BAND * max(fa, fb)
        xa, xb = _reach(sa, va, level), _reach(sb, vb, level)
        censored += int(xa > sa[-1] + 1) + int(xb > sb[-1] + 1)
        ra.append(xa)
        rb.append(xb)
    return np.asarray(ra, float), np.asarray(rb, float), censored


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
    return not_judged(id_, claim, source, measurement, f"arms {list(arms)} were not all run", unit=UNIT)


def _cmp(A: _Arms, id_: str, claim: str, source: str, measurement: str, measure: str, a: str, b: str,
         direction: str, **kw) -> Claim:
    if not A.has(a, b):
        return _missing(id_, claim, source, measurement, (a, b))
    va, vb = A.pair(measure, a, b)
    return compare_claim(id_, claim, source, measurement, va, vb, direction, paired=True, labels=(a, b),
                         unit=UNIT, **kw)


@dataclass(frozen=True)
class _Part:
    """One comparison inside a claim that needs several: its label and result."""

    label: str
    claim: Claim


def _all_of(id_: str, claim: str, source: str, measurement: str, parts: list[_Part], note: str = "") -> Claim:
    """``kit.stats.all_of_claim`` over labelled parts (the numbers are the deciding part's)."""
    return all_of_claim(id_, claim, source, measurement, [(p.label, p.claim) for p in parts], unit=UNIT, note=note)


def _reach_cmp(series: dict, A: _Arms, id_: str, claim: str, source: str, measurement: str,
               a: str, b: str) -> Claim:
    if not A.has(a, b):
        return _missing(id_, claim, source, measurement, (a, b))
    ra, rb, censored = reach_steps(series, a, b)
    c = compare_claim(id_, claim, source, measurement, ra, rb, "less", paired=True, labels=(a, b), unit=UNIT,
                      transform="log")
    if censored:
        c.detail += f"; {censored} times censored at the run's length (level not reached)"
    return c


def _regularises(A: _Arms, id_: str, claim: str, a: str, b: str) -> Claim:
    """``a`` regularises better than ``b``: a smaller held-out/train gap *and* a lower held-out loss. The gap
    alone can shrink because the fit gets worse on the training points too (underfitting: a linear network's
    gap is small for that reason), so a smaller gap counts only if the held-out loss does not pay for it."""
    return _all_of(id_, claim, CTRL, GAP_M + "; and " + HELD_M + "; both must hold", [
        _Part(f"gap {a} vs {b}", _cmp(A, id_, "", CTRL, GAP_M, "gap_ratio", a, b, "less", transform="log")),
        _Part(f"held-out {a} vs {b} (underfitting control)",
              _cmp(A, id_, "", CTRL, HELD_M, "heldout_interp", a, b, "less", transform="log"))])


def measures_of(run: StoredRun) -> pd.DataFrame:
    """``per_seed_measures`` of a stored run, computed once per run object (claims, notes, figures)."""
    cached = getattr(run, "_ln_gradients_measures", None)
    if cached is None:
        cached = per_seed_measures(run.metrics)
        run._ln_gradients_measures = cached  # type: ignore[attr-defined]
    return cached


def _smoothed_of(run: StoredRun) -> dict:
    cached = getattr(run, "_ln_gradients_smoothed", None)
    if cached is None:
        cached = smoothed_losses(run.metrics)
        run._ln_gradients_smoothed = cached  # type: ignore[attr-defined]
    return cached


LOSS_M = "mean train MSE over the last 5% of steps; paired t on log10 over seeds; 'clearly' = >= 10% lower"
FL_M = "std of Δlog10(train loss) per step over the second half; paired t on log10"
SETTLE_M = ("first step after which the gradient norm, smoothed by a centered rolling median over 5% of the "
            "steps, stays within 2x of its final level; paired t")
CONC_M = ("kurtosis of all gradient entries (scale-free peakedness: 3 for a Gaussian, larger = more "
          "concentrated), mean over the last 10% of recorded steps; paired t on log10")
ROUGH_M = "std of Δlog10(gradient norm) per step over the second half; paired t on log10"
GAP_M = "held-out (midpoints t+0.5) MSE / train MSE at the last step, eval mode; paired t on log10"
HELD_M = "held-out (midpoints) MSE at the last step, eval mode; paired t on log10"
REACH_M = ("steps taken until the train loss (centered rolling median over 5% of the steps) first falls to 2x "
           "the higher final level of the two arms, a level both reach; paired t on log10 over seeds")


def claims(run: StoredRun) -> list[Claim]:
    A = _Arms(measures_of(run))
    series = _smoothed_of(run)

    def cmp(*args, **kw) -> Claim:
        return _cmp(A, *args, **kw)

    # --- C1: lower loss, as the seed attributes it (to normalization) -------------------------------------
    c1a = cmp("C1a", "raw comparison: `ln` reaches clearly lower loss than `none` (no control)", SRC, LOSS_M,
              "final_loss", "ln", "none", "less", transform="log", min_effect=0.1)
    c1b = cmp("C1b", "raw comparison: `dropout+ln` reaches clearly lower loss than `dropout` (no control)", SRC,
              LOSS_M, "final_loss", "dropout+ln", "dropout", "less", transform="log", min_effect=0.1)
    k3 = cmp("K3", "LN still lowers the loss when the network has ReLUs (relu+ln vs relu)", CTRL, LOSS_M,
             "final_loss", "relu+ln", "relu", "less", transform="log", min_effect=0.1)
    c1 = _all_of("C1", "LayerNorm (as a normalization) gives clearly lower loss", SRC,
                 "C1a and C1b (the post's arms) and K3 (the same comparison in a ReLU network: in the post's "
                 "arms LN is the network's only nonlinearity); all must hold",
                 [_Part("C1a", c1a), _Part("C1b", c1b), _Part("K3 (nonlinearity control)", k3)])

    # --- C8: LN prevents overfitting --------------------------------------------------------------------
    c8a = cmp("C8a", "raw comparison: held-out loss of `ln` < `none` (no control; `none` is linear and "
              "cannot overfit, see C4/K1)", SRC, HELD_M, "heldout_interp", "ln", "none", "less", transform="log")
    c8b = _regularises(A, "C8b", "LN regularises a network that can overfit: smaller held-out/train gap and lower "
                       "held-out loss (relu+ln vs relu)", "relu+ln", "relu")
    c8 = _all_of("C8", "LN alone prevents overfitting", SRC,
                 "C8a (held-out loss in the post's arms) and C8b (gap and held-out loss where overfitting is "
                 "possible: ReLU arms); both must hold",
                 [_Part("C8a", c8a), _Part("C8b (overfitting control, ReLU arms)", c8b)])

    # --- C9: LN accelerates convergence --------------------------------------------------------------------
    c9 = _all_of(
        "C9", "LN accelerates convergence: the network reaches a low loss in fewer steps", SRC, REACH_M,
        [_Part("ln vs none", _reach_cmp(series, A, "C9", "", SRC, REACH_M, "ln", "none")),
         _Part("dropout+ln vs dropout", _reach_cmp(series, A, "C9", "", SRC, REACH_M, "dropout+ln", "dropout")),
         _Part("relu+ln vs relu (nonlinearity control)", _reach_cmp(series, A, "C9", "", CTRL, REACH_M,
                                                                    "relu+ln", "relu"))])

    # --- C10: normalization makes training smoother ---------------------------------------------------
    c10 = _all_of(
        "C10", "LN makes the training process smoother (steadier loss)", SRC, FL_M,
        [_Part("ln vs none", cmp("C10", "", SRC, FL_M, "fluctuation", "ln", "none", "less", transform="log")),
         _Part("dropout+ln vs dropout", cmp("C10", "", SRC, FL_M, "fluctuation", "dropout+ln", "dropout", "less",
                                            transform="log")),
         _Part("relu+ln vs relu (nonlinearity control)",
               cmp("C10", "", CTRL, FL_M, "fluctuation", "relu+ln", "relu", "less", transform="log"))])

    # --- C11: dropout+LN regularises better than dropout; C12: dropout regularises --------------------------
    c11a = cmp("C11a", "raw comparison: held-out loss of `dropout+ln` < `dropout` (no control)", SRC, HELD_M,
               "heldout_interp", "dropout+ln", "dropout", "less", transform="log")
    c11b = _regularises(A, "C11b", "with dropout, LN regularises a network that can overfit: smaller gap and "
                        "lower held-out loss (relu+dropout+ln vs relu+dropout)", "relu+dropout+ln", "relu+dropout")
    c11 = _all_of("C11", "dropout + LN regularises better than dropout alone", SRC,
                  "C11a (held-out loss in the post's arms) and C11b (gap and held-out loss in the ReLU arms); both "
                  "must hold",
                  [_Part("C11a", c11a), _Part("C11b (overfitting control, ReLU arms)", c11b)])
    c12a = cmp("C12a", "raw comparison: held-out loss of `dropout` < `none` (no control)", SRC, HELD_M,
               "heldout_interp", "dropout", "none", "less", transform="log")
    c12b = _regularises(A, "C12b", "dropout regularises a network that can overfit: smaller gap and lower "
                        "held-out loss (relu+dropout vs relu)", "relu+dropout", "relu")
    c12 = _all_of("C12", "dropout is an effective regulariser", SRC,
                  "C12a (held-out loss in the post's arms) and C12b (gap and held-out loss in the ReLU arms); both "
                  "must hold",
                  [_Part("C12a", c12a), _Part("C12b (overfitting control, ReLU arms)", c12b)])

    out = [
        c1a, c1b, c1,
        cmp("C2a", "dropout makes the loss fluctuate more (dropout vs none)", SRC, FL_M,
            "fluctuation", "dropout", "none", "greater", transform="log"),
        cmp("C2b", "dropout makes the loss fluctuate more (dropout+ln vs ln)", SRC, FL_M,
            "fluctuation", "dropout+ln", "ln", "greater", transform="log"),
        cmp("C3a", "without regularization the gradients settle early (none vs dropout)", SRC, SETTLE_M,
            "settle_step", "none", "dropout", "less", scale="nonnegative"),  # a step count: may be 0, never < 0
        cmp("C3b", "without regularization the gradients settle early (none vs ln)", SRC, SETTLE_M,
            "settle_step", "none", "ln", "less", scale="nonnegative"),
        cmp("C3c", "without regularization the gradient distribution is very concentrated (none vs dropout)",
            SRC, CONC_M, "concentration", "none", "dropout", "greater", transform="log"),
        cmp("C3d", "without regularization the gradient distribution is very concentrated (none vs ln)",
            SRC, CONC_M, "concentration", "none", "ln", "greater", transform="log"),
    ]
    # C4: overfitting means the fit is worse off the training points than on them: ratio > 1.
    c4 = "the concentrated gradients of `none` are a sign of overfitting"
    if A.has("none"):
        out.append(threshold_claim("C4", c4, SRC, GAP_M.replace("paired t on log10", "one-sample t vs 1"),
                                   A.m.loc["none", "gap_ratio"].to_numpy(float), "greater", 1.0, unit=UNIT))
    else:
        out.append(_missing("C4", c4, SRC, GAP_M, ("none",)))
    out += [
        cmp("C5", "dropout makes the gradient distribution messier (dropout vs none)", SRC, ROUGH_M,
            "roughness", "dropout", "none", "greater", transform="log"),
        cmp("C6", "dropout+LN has a more concentrated gradient distribution than dropout alone", SRC,
            CONC_M, "concentration", "dropout+ln", "dropout", "greater", transform="log"),
        cmp("C6b", "dropout+LN has a more even (steadier) gradient distribution than dropout alone", SRC,
            ROUGH_M, "roughness", "dropout+ln", "dropout", "less", transform="log"),
    ]
    # C7: LN alone lies between none and dropout (messiness): two comparisons, one verdict.
    c7_claim = "LN alone lies between none and dropout (gradient messiness)"
    if A.has("ln", "none", "dropout"):
        out.append(_all_of("C7", c7_claim, SRC, ROUGH_M + "; none < ln < dropout, both must hold", [
            _Part("ln vs none", cmp("C7", "", SRC, ROUGH_M, "roughness", "ln", "none", "greater", transform="log")),
            _Part("ln vs dropout", cmp("C7", "", SRC, ROUGH_M, "roughness", "ln", "dropout", "less",
                                       transform="log"))]))
    else:
        out.append(_missing("C7", c7_claim, SRC, ROUGH_M, ("ln", "none", "dropout")))
    out += [c8a, c8b, c8, c9, c10, c11a, c11b, c11, c12a, c12b, c12]
    # Controls: what explains C1?
    floor = linear_floor()
    if A.has("none"):
        ratio = A.m.loc["none", "train_eval"].to_numpy(float) / floor
        out.append(threshold_claim(
            "K1", "`none` is a linear model: it sits at the least-squares floor of any linear fit", CTRL,
            f"train MSE (eval mode) / linear least-squares floor ({floor:.4g}); one-sample t vs 1.05",
            ratio, "less", 1.05, unit=UNIT))
    else:
        out.append(_missing("K1", "`none` sits at the linear floor", CTRL, "train MSE / floor", ("none",)))
    out += [
        cmp("K2", "a ReLU network without LN fits better than the linear `none` (nonlinearity alone helps)",
            CTRL, LOSS_M, "final_loss", "relu", "none", "less", transform="log", min_effect=0.1),
        k3,
        cmp("K4", "LN still lowers the loss with standardized inputs/targets (ln/std vs none/std)", CTRL,
            LOSS_M, "final_loss", "ln/std", "none/std", "less", transform="log", min_effect=0.1),
        cmp("K5", "LN still lowers the loss with decoupled weight decay (ln/adamw vs none/adamw)", CTRL,
            LOSS_M, "final_loss", "ln/adamw", "none/adamw", "less", transform="log", min_effect=0.1),
    ]
    return out


# The numbers a reader uses, as the claims summarise them (positive measures: geometric means, as the paired
# t-tests on log10 compare them): (measure, what it is, arms).
KEY_MEASURES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("final_loss", "train MSE, mean over the last 5% of steps", ("none", "ln", "dropout", "dropout+ln", "relu",
                                                                 "relu+ln")),
    ("heldout_interp", "held-out (midpoints) MSE at the last step, eval mode", ("none", "ln", "relu", "relu+ln")),
    ("gap_ratio", "held-out / train MSE at the last step, eval mode", ("none", "relu", "relu+ln")),
    ("roughness", "std of Δlog10(gradient norm) per step, second half", ("none", "ln", "dropout")),
    ("concentration", "kurtosis of all gradient entries, mean over the last 10% of recorded steps",
     ("none", "ln", "dropout", "dropout+ln")),
)


def key_numbers(run: StoredRun) -> list[KeyNumber]:
    """The per-seed measures the claims compare, for the arms they compare (of those run)."""
    A = _Arms(measures_of(run))
    return [KeyNumber(what, arm, tuple(A.m.loc[arm, measure].to_numpy(float)), "positive", UNIT)
            for measure, what, arms in KEY_MEASURES for arm in arms if A.has(arm)]


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


def notes(run: StoredRun) -> str:
    meas = measures_of(run)
    cl = {c.id: c for c in claims(run)}
    v = {k: c.verdict for k, c in cl.items()}
    n_seeds = int(meas.groupby("arm").size().min()) if len(meas) else 0
    lines: list[str] = [
        "### What the seed did",
        "Four arms (`dropout`, `dropout+ln`, `ln`, `none`) of a 5-Linear network **with no activation "
        "function**, one run each, Adam(lr=0.01, weight_decay=0.01), MSE, full batch of 20 points, 1000 "
        "steps; it judged loss curves and TensorBoard gradient histograms by eye. normlab reruns the same "
        f"arms exactly with {n_seeds} seeds each (seed i of every arm starts from the same Linear weights, so "
        "comparisons are paired and the unit of replication is the seed), adds a held-out set, and the controls "
        "below.",
        "",
        "### The data has a structure the seed does not mention",
        f"`x1 = x2 - 10` on every row, so the target is a parabola in one variable. A network without "
        f"nonlinearity (`none`, `dropout` at eval) is an affine map: it cannot beat the least-squares line, "
        f"whose train MSE is {linear_floor():.4g}. LayerNorm divides by a data-dependent norm: it is the only "
        "nonlinearity of the `ln` arms.",
        "",
        "### Verdicts on the post's attributions",
        "A seed claim is judged as the seed attributes it: where a control explains the raw effect, the claim "
        "is not supported, and its detail names the control.",
        f"- **C1** (LN lowers the loss): raw comparisons C1a **{v.get('C1a')}**, C1b **{v.get('C1b')}**; the "
        f"nonlinearity control K3 (`relu+ln` vs `relu`) **{v.get('K3')}**, so C1 is **{v.get('C1')}**. In the "
        "seed's arms LN is the only nonlinearity; K2 (`relu` vs `none`) "
        f"**{v.get('K2')}** says whether any nonlinearity gives the same gain.",
        f"- **C8** (LN alone prevents overfitting): the raw held-out comparison C8a (`ln` vs `none`) is "
        f"**{v.get('C8a')}**, but `none` cannot overfit (C4 **{v.get('C4')}**, K1 **{v.get('K1')}**): a lower "
        "held-out loss there is a better fit, not regularization. Where overfitting is possible (ReLU arms), "
        f"C8b (LN shrinks the held-out/train gap without raising the held-out loss) is **{v.get('C8b')}**, so C8 "
        f"is **{v.get('C8')}**.",
        f"- **C11** (dropout+LN regularises better than dropout): C11a **{v.get('C11a')}**, C11b (ReLU arms) "
        f"**{v.get('C11b')}**: **{v.get('C11')}**. **C12** (dropout regularises): C12a **{v.get('C12a')}**, "
        f"C12b (ReLU arms) **{v.get('C12b')}**: **{v.get('C12')}**.",
        f"- **C9** (LN accelerates convergence) is **{v.get('C9')}** and **C10** (LN makes training smoother) "
        f"**{v.get('C10')}**: see their details for each pair of arms.",
        "",
        "### Held-out data",
        "The seed has none, so its overfitting claims cannot be tested as written. normlab holds out the 19 "
        "midpoints `t = 0.5 .. 18.5` of the same function on the same line (interpolation: does the fit hold "
        "between the training points?) and reports extrapolation (`t = -3..-1, 20..22`) separately: "
        "extrapolating a parabola is a different question from overfitting.",
    ]
    if len(meas) and "none" in set(meas["arm"]):
        r = mean_ci(meas.loc[meas["arm"] == "none", "gap_ratio"].to_numpy(float))
        lines.append(
            f"Measured: `none`'s held-out/train MSE ratio is {r.fmt()} (C4: **{v.get('C4')}**); a ratio above 1 "
            "would mean the fit is worse between the training points than on them.")
    lines += [
        "",
        "### What each control rules in or out",
    ]
    ctrl = {
        "K1": ("`none` vs the linear floor",
               "if supported, the non-LN arms' higher loss is the ceiling of a linear model, not a training "
               "failure that LN fixes"),
        "K2": ("`relu` vs `none`", "if supported, any nonlinearity lowers the loss: C1a/C1b alone do not show "
               "that *normalization* helps"),
        "K3": ("`relu+ln` vs `relu`", "if supported, LN helps beyond being a nonlinearity; if refuted or "
               "inconclusive, C1 is not supported"),
        "K4": ("`ln/std` vs `none/std`", "if supported, LN's gain is not only a fix for unscaled inputs/targets"),
        "K5": ("`ln/adamw` vs `none/adamw`", "if supported, LN's gain does not depend on Adam's L2-style "
               "weight decay (which Adam rescales per parameter) vs decoupled AdamW decay"),
        "C8b, C11b, C12b": ("ReLU arms with and without LN / dropout", "a linear network cannot overfit 20 points "
                            "of a parabola, so the post's regularization claims are tested where overfitting "
                            "is possible; a smaller held-out/train gap counts only with a lower held-out loss "
                            "(a gap can also shrink because the network underfits, as `none`'s does)"),
    }
    for k, (what, meaning) in ctrl.items():
        verdict = ", ".join(f"{i} **{v.get(i, 'not run')}**" for i in k.split(", "))
        lines.append(f"- {k} ({what}): {verdict}; {meaning}.")
    lines += [
        "",
        "### Reading the gradient claims",
        "The seed reads 'concentrated' from TensorBoard histograms. The width (std) of the gradient entries "
        "shrinks as the loss shrinks, so a narrow histogram mostly says 'small loss'. normlab judges "
        "concentration scale-free, as the kurtosis of all gradient entries (3 for a Gaussian; large = a "
        "peaked histogram with most entries near the centre): multiplying every gradient by a constant leaves "
        "it unchanged, so it compares the *shape* of the arms' histograms, not their loss. 'Settles early' "
        "is read on the gradient norm smoothed by a rolling median over 5% of the steps: the raw norm of a "
        "dropout arm jumps by ~2.7x per step, so against the 2x band it could never settle.",
    ]
    if len(meas):
        raw = meas.groupby("arm")["settle_step_raw"].mean()
        last = float(run.metrics.loc[run.metrics["metric"] == "grad_norm", "step"].max())
        stuck = [a for a in raw.index if raw[a] >= 0.95 * last]
        if stuck:
            lines.append(f"Without smoothing, the arms whose mean settle step is within 5% of the run's end: "
                         f"{', '.join(f'`{a}`' for a in stuck)}.")
        gaps = meas.groupby("arm")["gap_ratio"].apply(lambda x: _geo(x.to_numpy(float))[0])
        worst = gaps.idxmax()
        lines += ["", f"Across all arms the largest held-out/train ratio is `{worst}`'s "
                      f"({_geo_fmt(meas.loc[meas['arm'] == worst, 'gap_ratio'].to_numpy(float))}): "
                      + ("it fits the held-out midpoints worse than its training points."
                         if gaps.max() > 1 else "no arm fits the midpoints worse than the training points.")]
        lines += ["", "### Per-arm measures (geometric mean [95% CI] over seeds; settle steps: arithmetic, interval cut at 0)"]
        for arm, g in meas.groupby("arm", sort=False):
            parts = [f"{k} {_geo_fmt(g[k].to_numpy(float))}"
                     for k in ("final_loss", "train_eval", "heldout_interp", "gap_ratio", "fluctuation",
                               "roughness", "concentration", "spread_end")]
            parts.append(f"settle_step {summarise(g['settle_step'].to_numpy(float), 'nonnegative').fmt()}")
            parts.append(f"unsmoothed {summarise(g['settle_step_raw'].to_numpy(float), 'nonnegative').fmt()}")
            lines.append(f"- `{arm}`: " + "; ".join(parts))
    return "\n".join(lines)
