"""Statistics over seeds: intervals, tests, effect sizes, and claims with computed verdicts.

Every number a report shows is a summary over seeds with its 95% interval on the quantity's scale
(:mod:`normlab.kit.intervals`, re-exported here: the Student-t interval of a mean, the geometric mean of a
positive quantity, Wilson intervals for proportions). Claims compare two groups of per-seed values (one value per
seed and arm, e.g. the final loss) and turn the comparison into a :class:`~normlab.engine.spec.Claim`.

Verdict rule (``compare_claim``), for a claim "``a`` is ``direction`` than ``b``" (``"less"`` / ``"greater"``):

* ``supported``    the one-sided test in the claimed direction has ``p < alpha`` **and** the observed
  effect is at least ``min_effect`` in the claimed direction;
* ``refuted``      the one-sided test in the *opposite* direction has ``p < alpha``, **or** the 95%
  interval of the effect lies entirely short of ``min_effect`` (the data rule out an effect as large as
  the claim needs);
* ``inconclusive`` otherwise (too few seeds, too much noise).

One significance rule for the whole lab (:data:`ALPHA`): a one-sided test at 0.025 in the claimed
direction, the same evidence as the two-sided 95% interval the report prints beside each verdict, so a
claim is never ``supported`` while its shown interval still admits no effect. Equivalence (TOST) uses the
same level on each side, i.e. the 95% interval inside the margin. The report then adjusts the p-values of a
study's claims for their number (Holm, :func:`correct_for_multiplicity`) and says which ``supported``
verdicts survive.

Every claim says its unit of replication (``unit``) and how many independent units the statistic used
(``n``): pass ``unit=`` to the claim helpers; only what was randomised independently counts as a unit
(two arms run from the same seed and data order are one unit: compare them ``paired``).

Tests: Welch's t-test for independent groups, the paired t-test when the two arms share seeds *and* the
seed fixes something common to both (the same initial weights, the same data). Set ``transform="log"``
for positive quantities that vary over orders of magnitude (losses): the test then runs on ``log10``
values and the relative effect is a ratio of geometric means minus one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps

from normlab.engine.spec import Claim
from normlab.kit.intervals import SCALES as SCALES
from normlab.kit.intervals import Interval as Interval
from normlab.kit.intervals import Scale as Scale
from normlab.kit.intervals import Summary as Summary
from normlab.kit.intervals import _as_array, _finite, mean_ci, summarise
from normlab.kit.intervals import bounded as bounded
from normlab.kit.intervals import positive_ci as positive_ci
from normlab.kit.intervals import proportion_ci as proportion_ci
from normlab.kit.intervals import wilson_interval as wilson_interval

ALPHA = 0.025  # one-sided, beside two-sided 95% intervals: the lab's one significance rule
CONFIDENCE = 0.95

Direction = Literal["less", "greater"]
Effect = Literal["relative", "cohen_d"]
Transform = Literal["none", "log"]


@dataclass(frozen=True)
class TestResult:
    """A test's statistic, two-sided p-value, one-sided p-values, and degrees of freedom."""

    name: str
    statistic: float
    p_two_sided: float
    p_less: float  # H1: mean(a) < mean(b)
    p_greater: float  # H1: mean(a) > mean(b)
    df: float


def welch_t(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> TestResult:
    """Welch's unequal-variance t-test of ``mean(a) - mean(b)``.

    Degenerate case (both groups constant): the difference is exact, so the p-value is 0 when the
    means differ and 1 when they are equal (scipy would return NaN).
    """
    a, b = _finite(_as_array(a, "a")), _finite(_as_array(b, "b"))
    if a.size < 2 or b.size < 2:
        raise ValueError(f"welch_t: each group needs >= 2 finite values, got {a.size} and {b.size}")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    diff = float(a.mean() - b.mean())
    se = math.sqrt(va + vb)
    if se == 0.0:
        return _exact_result("welch_t", diff)
    t = diff / se
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    return _t_result("welch_t", t, df)


def paired_t(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> TestResult:
    """Paired t-test of ``mean(a - b)``: ``a[i]`` and ``b[i]`` come from the same seed."""
    a, b = _as_array(a, "a"), _as_array(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired_t: a and b must have the same length, got {a.size} and {b.size}")
    d = _finite(a - b)
    if d.size < 2:
        raise ValueError(f"paired_t: needs >= 2 finite pairs, got {d.size}")
    sd = d.std(ddof=1)
    if sd == 0.0:
        return _exact_result("paired_t", float(d.mean()))
    t = float(d.mean()) / (sd / math.sqrt(d.size))
    return _t_result("paired_t", t, d.size - 1)


def one_sample_t(values: Sequence[float] | np.ndarray, reference: float) -> TestResult:
    """One-sample t-test of ``mean(values) - reference``."""
    arr = _finite(_as_array(values, "values"))
    if arr.size < 2:
        raise ValueError(f"one_sample_t: needs >= 2 finite values, got {arr.size}")
    sd = arr.std(ddof=1)
    if sd == 0.0:
        return _exact_result("one_sample_t", float(arr.mean() - reference))
    t = float(arr.mean() - reference) / (sd / math.sqrt(arr.size))
    return _t_result("one_sample_t", t, arr.size - 1)


def _t_result(name: str, t: float, df: float) -> TestResult:
    return TestResult(
        name=name,
        statistic=float(t),
        p_two_sided=float(2 * sps.t.sf(abs(t), df)),
        p_less=float(sps.t.cdf(t, df)),
        p_greater=float(sps.t.sf(t, df)),
        df=float(df),
    )


def _exact_result(name: str, diff: float) -> TestResult:
    if diff == 0.0:
        return TestResult(name, 0.0, 1.0, 1.0, 1.0, math.inf)
    t = math.copysign(math.inf, diff)
    return TestResult(name, t, 0.0, 0.0 if diff < 0 else 1.0, 0.0 if diff > 0 else 1.0, math.inf)


def cohens_d(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Standardized mean difference ``(mean(a) - mean(b)) / s_pooled`` (pooled sd with ddof=1)."""
    a, b = _finite(_as_array(a, "a")), _finite(_as_array(b, "b"))
    if a.size < 2 or b.size < 2:
        raise ValueError(f"cohens_d: each group needs >= 2 finite values, got {a.size} and {b.size}")
    pooled = math.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2))
    diff = float(a.mean() - b.mean())
    if pooled == 0.0:
        return 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
    return diff / pooled


def relative_effect(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """``(mean(a) - mean(b)) / |mean(b)|``: e.g. ``-0.4`` means ``a`` is 40% lower than ``b``."""
    a, b = _finite(_as_array(a, "a")), _finite(_as_array(b, "b"))
    mb = float(b.mean())
    if mb == 0.0:
        return math.nan
    return float(a.mean() - mb) / abs(mb)


def _diff_ci(a: np.ndarray, b: np.ndarray, paired: bool, alpha: float = ALPHA) -> tuple[float, float, float]:
    """Mean difference ``a - b`` and its two-sided ``1 - 2 alpha`` interval (95% at the lab's rule; Welch or
    paired), so a verdict and the interval shown beside it use the same level."""
    if paired:
        iv = mean_ci(a - b, 1.0 - 2.0 * alpha)
        return iv.mean, iv.lo, iv.hi
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    diff = float(a.mean() - b.mean())
    se = math.sqrt(va + vb)
    if se == 0.0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = float(sps.t.ppf(1.0 - alpha, df)) * se
    return diff, diff - half, diff + half


def compare_claim(
    id: str,
    claim: str,
    source: str,
    measurement: str,
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    direction: Direction,
    *,
    alpha: float = ALPHA,
    min_effect: float = 0.0,
    effect: Effect = "relative",
    transform: Transform = "none",
    paired: bool = False,
    labels: tuple[str, str] = ("a", "b"),
    unit: str | None = None,
    scale: Scale | None = None,
) -> Claim:
    """Judge "``a`` is ``direction`` than ``b``" from per-seed values and return a :class:`Claim`.

    Args:
        a, b: one value per seed for each group (``paired=True``: same seeds, same order).
        direction: ``"less"`` or ``"greater"``: the direction the claim asserts for ``a`` vs ``b``.
        alpha: one-sided significance level of the test in each direction.
        min_effect: the smallest effect (a positive magnitude, in units of ``effect``) that counts as the
            claimed effect, e.g. ``0.1`` with ``effect="relative"`` for "clearly lower" = at least 10%.
        effect: ``"relative"`` (difference over ``|mean(b)|``; with ``transform="log"`` the ratio of
            geometric means minus one) or ``"cohen_d"`` (standardized difference).
        transform: ``"log"`` runs the test on ``log10`` of positive values.
        paired: use the paired t-test (seed ``i`` of ``a`` and of ``b`` share initial weights/data).
        labels: names for ``a`` and ``b`` in ``detail``.
        unit: the unit of replication one value of ``a`` (and of ``b``) stands for.
        scale: how ``detail`` summarises each group (:func:`~normlab.kit.intervals.summarise`): ``"proportion"``
            for per-seed accuracies (an interval inside [0, 1]); default ``"positive"`` (geometric mean, the
            mean the log test compares) with ``transform="log"``, else ``"signed"`` (arithmetic mean).

    The stored ``ci`` is the 95% interval of the effect (same units as ``effect_size``).
    """
    if direction not in ("less", "greater"):
        raise ValueError(f"direction: expected 'less' or 'greater', got {direction!r}")
    if effect not in ("relative", "cohen_d"):
        raise ValueError(f"effect: expected 'relative' or 'cohen_d', got {effect!r}")
    if transform not in ("none", "log"):
        raise ValueError(f"transform: expected 'none' or 'log', got {transform!r}")
    if min_effect < 0:
        raise ValueError(f"min_effect: expected a magnitude >= 0, got {min_effect!r}")
    a_raw, b_raw = _as_array(a, "a"), _as_array(b, "b")
    if paired and a_raw.shape != b_raw.shape:
        raise ValueError(f"paired: a and b need equal lengths, got {a_raw.size} and {b_raw.size}")
    if transform == "log":
        if (a_raw[np.isfinite(a_raw)] <= 0).any() or (b_raw[np.isfinite(b_raw)] <= 0).any():
            raise ValueError("transform='log' needs positive values in a and b")
        a_t, b_t = np.log10(a_raw), np.log10(b_raw)
    else:
        a_t, b_t = a_raw, b_raw
    if paired:
        keep = np.isfinite(a_t) & np.isfinite(b_t)
        a_t, b_t = a_t[keep], b_t[keep]
    else:
        a_t, b_t = _finite(a_t), _finite(b_t)
    n = int(min(a_t.size, b_t.size))
    if n < 2:
        return Claim(
            id=id, claim=claim, source=source, measurement=measurement, verdict="inconclusive",
            statistic="none", value=math.nan, n=n, unit=unit,
            detail=f"fewer than 2 finite values per group ({a_t.size} {labels[0]}, {b_t.size} {labels[1]})",
        )
    test = paired_t(a_t, b_t) if paired else welch_t(a_t, b_t)
    diff, lo, hi = _diff_ci(a_t, b_t, paired, alpha)

    # Effect size and its interval, in the same units.
    if effect == "cohen_d":
        sd = math.sqrt((a_t.var(ddof=1) + b_t.var(ddof=1)) / 2) if not paired else float((a_t - b_t).std(ddof=1))
        to_effect = (lambda d: d / sd) if sd > 0 else (lambda d: 0.0 if d == 0 else math.copysign(math.inf, d))
    elif transform == "log":
        to_effect = lambda d: 10.0**d - 1.0  # noqa: E731  ratio of geometric means, minus one
    else:
        mb = abs(float(b_t.mean()))
        to_effect = (lambda d: d / mb) if mb > 0 else (lambda d: math.nan)
    eff, eff_lo, eff_hi = to_effect(diff), to_effect(lo), to_effect(hi)

    sign = -1.0 if direction == "less" else 1.0
    p_claim = test.p_less if direction == "less" else test.p_greater
    p_opposite = test.p_greater if direction == "less" else test.p_less
    # The far end of the effect interval in the claimed direction: if even that falls short of
    # min_effect, the data rule out an effect as large as the claim needs.
    best_case = max(sign * eff_lo, sign * eff_hi)
    if p_claim < alpha and sign * eff >= min_effect:
        verdict = "supported"
    elif p_opposite < alpha or (min_effect > 0 and best_case < min_effect):
        verdict = "refuted"
    else:
        verdict = "inconclusive"
    effect_unit = "d" if effect == "cohen_d" else "rel"
    shown = scale or ("positive" if transform == "log" else "signed")
    sa, sb = summarise(a_raw, shown), summarise(b_raw, shown)
    detail = (
        f"{labels[0]} {sa.fmt()} vs {labels[1]} {sb.fmt()} ({_names(sa, sb)} [95% CI], n={a_t.size}/{b_t.size}); "
        f"{test.name}{' on log10' if transform == 'log' else ''}: t={test.statistic:.3g}, "
        f"one-sided p={p_claim:.3g}; effect {effect_unit}={eff:.3g} [{eff_lo:.3g}, {eff_hi:.3g}]"
        + (f"; needs |effect| >= {min_effect:g} {direction}" if min_effect > 0 else "")
    )
    return Claim(
        id=id, claim=claim, source=source, measurement=measurement, verdict=verdict,
        statistic=test.name, value=test.statistic, p_value=p_claim, effect_size=eff,
        ci=(float(min(eff_lo, eff_hi)), float(max(eff_lo, eff_hi))), n=n, detail=detail, unit=unit,
    )


def _names(*summaries: Summary) -> str:
    """The summaries' name, once if they share it: "geometric mean", "mean / mean (not all > 0: no log scale)"."""
    names = list(dict.fromkeys(s.name for s in summaries))
    return " / ".join(names)


def threshold_claim(
    id: str,
    claim: str,
    source: str,
    measurement: str,
    values: Sequence[float] | np.ndarray,
    direction: Direction,
    threshold: float,
    *,
    alpha: float = ALPHA,
    unit: str | None = None,
) -> Claim:
    """Judge "the mean of ``values`` is ``direction`` than ``threshold``" (one-sample t-test).

    ``supported`` if the one-sided test in the claimed direction has ``p < alpha``; ``refuted`` if the
    opposite one does; else ``inconclusive``. ``effect_size`` is ``mean - threshold`` and ``ci`` its 95%
    interval.
    """
    if direction not in ("less", "greater"):
        raise ValueError(f"direction: expected 'less' or 'greater', got {direction!r}")
    arr = _finite(_as_array(values, "values"))
    if arr.size < 2:  # all non-finite (a dead network) is a claim the run cannot judge, not an error
        return Claim(id, claim, source, measurement, "inconclusive", "none", math.nan, n=int(arr.size),
                     detail="fewer than 2 finite values", unit=unit)
    iv = mean_ci(arr)
    test = one_sample_t(arr, threshold)
    p_claim = test.p_less if direction == "less" else test.p_greater
    p_opp = test.p_greater if direction == "less" else test.p_less
    verdict = "supported" if p_claim < alpha else "refuted" if p_opp < alpha else "inconclusive"
    return Claim(
        id=id, claim=claim, source=source, measurement=measurement, verdict=verdict,
        statistic=test.name, value=test.statistic, p_value=p_claim,
        effect_size=iv.mean - threshold, ci=(iv.lo - threshold, iv.hi - threshold), n=iv.n, unit=unit,
        detail=f"mean {iv.fmt()} vs threshold {threshold:g}; t={test.statistic:.3g}, one-sided p={p_claim:.3g}",
    )


def equivalence_claim(
    id: str,
    claim: str,
    source: str,
    measurement: str,
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray | float,
    margin: float,
    *,
    paired: bool = False,
    alpha: float = ALPHA,
    unit: str | None = None,
) -> Claim:
    """Judge "``a`` and ``b`` are the same within ``±margin``" (two one-sided tests, TOST).

    ``b`` may be a number (compare the mean of ``a`` with it). ``supported`` if both one-sided tests reject
    at ``alpha`` (the difference is above ``-margin`` and below ``+margin``), i.e. the ``1 - 2 alpha``
    interval (95% at the lab's rule) lies inside ``[-margin, margin]``; ``refuted`` if that interval lies
    entirely outside it; else ``inconclusive``. ``p_value`` is the TOST p: the larger of the two one-sided
    p-values.
    """
    if not margin > 0:
        raise ValueError(f"margin: expected a positive number, got {margin!r}")
    confidence = 1.0 - 2.0 * alpha
    a_arr = _finite(_as_array(a, "a"))
    if np.isscalar(b):
        d = a_arr - float(b)  # type: ignore[arg-type]
        label = f"vs {float(b):g}"  # type: ignore[arg-type]
        paired = True
    else:
        b_arr = _as_array(b, "b")  # type: ignore[arg-type]
        if paired:
            a_all = _as_array(a, "a")
            if a_all.shape != b_arr.shape:
                raise ValueError(f"paired: a and b need equal lengths, got {a_all.size} and {b_arr.size}")
            d = _finite(a_all - b_arr)
        label = "vs b"
    if paired:
        if d.size < 2:
            return Claim(id, claim, source, measurement, "inconclusive", "none", math.nan, n=int(d.size), unit=unit)
        diff, n = float(d.mean()), int(d.size)
        se = float(d.std(ddof=1)) / math.sqrt(d.size)
        df = float(d.size - 1)
    else:
        b_arr = _finite(b_arr)
        if a_arr.size < 2 or b_arr.size < 2:
            return Claim(id, claim, source, measurement, "inconclusive", "none", math.nan,
                         n=int(min(a_arr.size, b_arr.size)), unit=unit)
        diff = float(a_arr.mean() - b_arr.mean())
        va, vb = a_arr.var(ddof=1) / a_arr.size, b_arr.var(ddof=1) / b_arr.size
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va**2 / (a_arr.size - 1) + vb**2 / (b_arr.size - 1)) if se > 0 else math.inf
        n = int(min(a_arr.size, b_arr.size))
    half = float(sps.t.ppf(1.0 - alpha, df)) * se if se > 0 else 0.0
    lo, hi = diff - half, diff + half
    if se > 0:
        p_tost = float(max(sps.t.sf((diff + margin) / se, df), sps.t.cdf((diff - margin) / se, df)))
    else:
        p_tost = 0.0 if abs(diff) < margin else 1.0
    if -margin < lo and hi < margin:
        verdict = "supported"
    elif lo > margin or hi < -margin:
        verdict = "refuted"
    else:
        verdict = "inconclusive"
    return Claim(
        id=id, claim=claim, source=source, measurement=measurement, verdict=verdict,
        statistic="tost", value=diff, p_value=p_tost, effect_size=diff, ci=(lo, hi), n=n, unit=unit,
        detail=f"difference {label} {diff:.3g}, {confidence:.0%} CI [{lo:.3g}, {hi:.3g}], margin ±{margin:g}; "
               f"TOST p={p_tost:.3g}",
    )


def exact_claim(
    id: str,
    claim: str,
    source: str,
    measurement: str,
    observed: float,
    expected: float,
    *,
    rtol: float = 1e-6,
    atol: float = 1e-6,
) -> Claim:
    """Judge a deterministic number (no seeds involved): ``supported`` iff ``observed ≈ expected``.

    For numbers a seed states exactly (a BatchNorm running mean after one step, an inverted-dropout sum).
    """
    ok = math.isclose(observed, expected, rel_tol=rtol, abs_tol=atol)
    return Claim(
        id=id, claim=claim, source=source, measurement=measurement,
        verdict="supported" if ok else "refuted", statistic="abs_diff", value=abs(observed - expected),
        effect_size=observed - expected, n=None, unit="exact",
        detail=f"observed {observed:.6g}, expected {expected:.6g} (rtol={rtol:g}, atol={atol:g})",
    )


def bound_claim(id: str, claim: str, source: str, measurement: str, values: Sequence[float] | np.ndarray,
                bound: float, side: Literal["below", "above"], *, unit: str, what: str = "seeds",
                extra: str = "") -> Claim:
    """A property that must hold for *every* unit (a worst case, not a mean): ``side="below"`` is supported
    iff the largest value is <= ``bound``, ``"above"`` iff the smallest is > ``bound``; refuted otherwise (one
    counterexample suffices); a non-finite value refutes. No values: inconclusive. ``n`` counts the units
    checked, named ``what`` in the detail (``extra`` is appended to it)."""
    if side not in ("below", "above"):
        raise ValueError(f"side: expected 'below' or 'above', got {side!r}")
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        return not_judged(id, claim, source, measurement, f"no {what} in the run", unit=unit)
    worst = float(arr.max() if side == "below" else arr.min())
    ok = bool(np.isfinite(arr).all()) and (worst <= bound if side == "below" else worst > bound)
    word = "max" if side == "below" else "min"
    return Claim(id=id, claim=claim, source=source, measurement=measurement,
                 verdict="supported" if ok else "refuted", statistic=f"{word}_over_{unit.replace(' ', '_')}s",
                 value=worst, n=int(arr.size), unit=unit,
                 detail=f"{word} over {arr.size} {what} {worst:.3g} (needs {'<=' if side == 'below' else '>'} "
                        f"{bound:g})" + (f"; {extra}" if extra else ""))


def combine_verdicts(verdicts: Sequence[str]) -> str:
    """A claim that needs several comparisons: supported if all are, refuted if any is, else inconclusive."""
    if not verdicts:
        raise ValueError("verdicts: expected at least one verdict, got none")
    if all(v == "supported" for v in verdicts):
        return "supported"
    if any(v == "refuted" for v in verdicts):
        return "refuted"
    return "inconclusive"


def all_of_claim(id: str, claim: str, source: str, measurement: str, parts: Sequence[tuple[str, Claim]], *,
                 unit: str, note: str = "") -> Claim:
    """A claim that holds only if every part does (``parts``: ``(label, claim)``), reported with the numbers
    of the part that decided it.

    Verdict: :func:`combine_verdicts` (supported if all parts are, refuted if any is, else inconclusive).
    The deciding parts are all of them for ``supported`` -- the intersection-union test, whose p is the
    largest of the parts' one-sided p and needs no correction -- the refuted parts for ``refuted``, the
    parts not supported for ``inconclusive``. Among the deciding parts the one with the largest p gives the
    statistic, value, effect, interval, p and n: a claim on every part is as strong as its weakest part,
    which is also what Holm's correction then sees. The detail names the deciding parts (unless all
    decide), then ``note``, then every part with its own verdict and detail.
    """
    if not parts:
        raise ValueError(f"{id}: all_of_claim needs at least one part")
    verdict = combine_verdicts([c.verdict for _, c in parts])
    if verdict == "supported":
        deciding = list(parts)
    elif verdict == "refuted":
        deciding = [(label, c) for label, c in parts if c.verdict == "refuted"]
    else:
        deciding = [(label, c) for label, c in parts if c.verdict != "supported"]
    top = max(deciding, key=lambda part: part[1].p_value if part[1].p_value is not None else 1.0)[1]
    decided = "" if verdict == "supported" else (
        f"{'refuted' if verdict == 'refuted' else 'not shown'} by {', '.join(label for label, _ in deciding)}; ")
    detail = decided + (note + "; " if note else "") + " | ".join(
        f"{label}: {c.verdict} ({c.detail})" for label, c in parts)
    return Claim(id=id, claim=claim, source=source, measurement=measurement, verdict=verdict,  # type: ignore[arg-type]
                 statistic=top.statistic, value=top.value, p_value=top.p_value, effect_size=top.effect_size,
                 ci=top.ci, n=top.n, detail=detail, unit=unit)


def not_judged(id: str, claim: str, source: str, measurement: str, why: str, *, unit: str | None = None) -> Claim:
    """A claim this run cannot judge (its arms were not run, too few finite values): ``inconclusive``,
    with ``why`` as the detail the report shows."""
    return Claim(id=id, claim=claim, source=source, measurement=measurement, verdict="inconclusive",
                 statistic="none", value=math.nan, n=0, detail=why, unit=unit)


def holm_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment: ``p_(i) * (m - i + 1)``, made monotone and capped at 1 (``m`` p-values,
    sorted ascending, ``i`` from 1). Rejecting where the adjusted p is below ``alpha`` keeps the chance of
    any false rejection among the ``m`` at most ``alpha``, whatever their dependence."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values: expected a 1-d sequence, got shape {p.shape}")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"p_values: expected values in [0, 1], got {p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return out


def correct_for_multiplicity(claims: Sequence[Claim], alpha: float = ALPHA) -> list[Claim]:
    """Holm-adjust the p-values of a study's claims (those with a finite ``p_value``) as one family.

    Sets each such claim's ``p_adjusted``, and ``survives`` on its ``supported`` verdicts: whether the
    adjusted p is still below ``alpha``. The verdicts themselves are left as the study computed them; the
    report shows both. Returns the claims (the same objects).
    """
    judged = [c for c in claims if c.p_value is not None and math.isfinite(c.p_value)]
    adjusted = holm_adjust([c.p_value for c in judged]) if judged else []
    for c, p_adj in zip(judged, adjusted, strict=True):
        c.p_adjusted = float(p_adj)
        c.survives = bool(p_adj < alpha) if c.verdict == "supported" else None
    return list(claims)
