"""95% intervals over independent units, on the scale a quantity lives on.

A report states a number with the interval its scale allows (``Scale``):

``signed``      any real (a difference, a log ratio): the arithmetic mean and its Student-t interval
                ``mean ± t_{0.975, n-1} · s / sqrt(n)`` (:func:`mean_ci`).
``positive``    a quantity that is > 0 and spans orders of magnitude (a loss, a norm, a ratio): the geometric
                mean ``10^mean(log10 v)`` and the t-interval of ``log10 v`` mapped back (:func:`positive_ci`). It
                never reaches 0 or below, and a factor of 2 up weighs as much as a factor of 2 down.
``proportion``  a per-unit value in [0, 1] (a per-seed accuracy): the mean with :func:`proportion_ci`.
``nonnegative`` a quantity that is >= 0 and may be exactly 0 (a max |change| that is 0 where nothing
                depends on it): the arithmetic mean and its t-interval cut at 0 (:func:`bounded`).
``binary``      a per-unit outcome that is 0 or 1 (a run diverged or not): the count, ``k`` of ``n`` units, with
                the Wilson score interval (:func:`wilson_interval`). Both stay inside [0, 1], where a t-interval
                of a mean near 0 or 1 runs past the bound (an accuracy bar above 1.0).

:func:`summarise` picks the interval by scale and names it, so every number a reader sees says which summary
it is ("geometric mean over 8 seeds").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from normlab.engine.spec import SCALES  # the one list of scales, beside KeyNumber
from normlab.engine.spec import Scale as Scale  # re-exported: kit.stats and studies name it from here


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values with its two-sided ``confidence`` Student-t interval ``[lo, hi]``."""

    mean: float
    lo: float
    hi: float
    n: int
    sd: float

    def fmt(self, digits: int = 3) -> str:
        """``"1.23 [1.01, 1.45]"`` with ``digits`` significant digits."""
        return f"{_g(self.mean, digits)} [{_g(self.lo, digits)}, {_g(self.hi, digits)}]"


@dataclass(frozen=True)
class Summary:
    """A number summarising ``n`` units, its 95% interval, and the name of the summary (``"mean"``,
    ``"geometric mean"``, ``"3 of 8"``...) and of the interval, so a report can say which one it shows."""

    estimate: float
    lo: float
    hi: float
    n: int
    name: str  # "mean", "geometric mean", "fraction", "mean (bounded)"
    interval: str  # "t-interval", "t-interval on the log scale", "Wilson interval", ...
    scale: str
    count: int | None = None  # k, for a "k of n" count

    def fmt(self, digits: int = 3) -> str:
        """``"1.23 [1.01, 1.45]"``; one unit has no interval: ``"1.23 (n=1: no interval)"`` -- except a count, whose
        Wilson interval exists for one unit (1 of 1: [0.21, 1])."""
        if (self.n == 1 and self.count is None) or not (math.isfinite(self.lo) and math.isfinite(self.hi)):
            return f"{_g(self.estimate, digits)} (n={self.n}: no interval)"
        return f"{_g(self.estimate, digits)} [{_g(self.lo, digits)}, {_g(self.hi, digits)}]"

    def described(self, units: str = "seeds") -> str:
        """``"geometric mean over 8 seeds, 95% t-interval on the log scale"``, ``"3 of 8 seeds, 95% Wilson
        interval"``."""
        what = f"{self.count} of {self.n} {units}" if self.count is not None else f"{self.name} over {self.n} {units}"
        return f"{what}, 95% {self.interval}"


def _g(x: float, digits: int) -> str:
    return f"{x:.{digits}g}" if math.isfinite(x) else str(x)


def _as_array(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"{name}: expected at least one value, got an empty sequence")
    return arr


def _finite(arr: np.ndarray) -> np.ndarray:
    return arr[np.isfinite(arr)]


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a number in (0, 1), got {confidence!r}")


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval:
    """Mean and two-sided Student-t interval over seeds. Non-finite values are dropped.

    With a single value the interval is ``[mean, mean]`` is not claimed: it is ``[-inf, inf]`` (no spread
    can be estimated from one seed), so a one-seed run can never look certain.
    """
    _check_confidence(confidence)
    arr = _finite(_as_array(values, "values"))
    n = int(arr.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, math.nan)
    mean = float(arr.mean())
    if n == 1:
        return Interval(mean, -math.inf, math.inf, 1, math.nan)
    sd = float(arr.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd)


def _wilson(p: float, n: float, z: float) -> tuple[float, float]:
    """The roots of ``(p - mu)^2 = z^2 mu (1 - mu) / n``: ``(p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``,
    clamped against rounding (the exact roots lie in [0, 1] and on either side of ``p``)."""
    a = z * z / n
    centre = (p + a / 2) / (1 + a)
    half = z * math.sqrt(p * (1 - p) / n + a / (4 * n)) / (1 + a)
    return min(max(0.0, centre - half), p), max(min(1.0, centre + half), p)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for ``k`` successes in ``n`` independent trials (Wilson 1927).

    The set of ``mu`` the two-sided score test does not reject, ``|k/n - mu| <= z sqrt(mu (1 - mu) / n)``
    with ``z`` the normal ``(1 + confidence) / 2`` quantile; squaring gives a quadratic in ``mu`` whose roots
    are::

        (k/n + z²/(2n) ± z sqrt(k/n (1 - k/n) / n + z²/(4n²))) / (1 + z²/n)

    The quadratic is >= 0 at ``mu = 0`` and ``mu = 1``, so both roots lie in [0, 1]; it is <= 0 at ``k/n``, so
    the interval contains ``k/n``. Unlike ``k/n ± z sqrt(p(1-p)/n)`` it is not ``[0, 0]`` at ``k = 0`` (8 runs
    without a failure do not prove a failure rate of 0). ``n = 0``: ``(nan, nan)``.
    """
    _check_confidence(confidence)
    if isinstance(k, bool) or isinstance(n, bool) or int(k) != k or int(n) != n or not 0 <= k <= n:
        raise ValueError(f"wilson_interval: expected integers 0 <= k <= n, got k={k!r}, n={n!r}")
    if n == 0:
        return math.nan, math.nan
    return _wilson(k / n, float(n), float(sps.norm.ppf(0.5 + confidence / 2)))


def proportion_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval:
    """Mean of per-unit proportions in [0, 1] (one test accuracy per seed) with an interval inside [0, 1].

    The unit stays the seed: a Wilson interval on the pooled count of test examples would treat every example
    as independent and ignore how much the seeds differ. Instead the per-seed values ``p_i`` get the
    quasi-binomial variance ``Var(p_i) = phi mu (1 - mu)``, with the dispersion ``phi`` estimated from the
    seeds, ``phi = s² / (p̄ (1 - p̄))`` (``s``: their standard deviation), and the interval is the set of ``mu``
    that the score test over seeds does not reject::

        (p̄ - mu)² <= t² phi mu (1 - mu) / n        t = t_{(1 + confidence)/2, n - 1}

    i.e. Wilson's interval (:func:`wilson_interval`) of ``p̄`` with ``t`` for ``z`` and the effective count
    ``n_eff = n / phi = n p̄ (1 - p̄) / s²`` (Kish's design effect, as for clustered survey proportions). Hence:
    inside [0, 1], contains ``p̄`` (the reported mean, as a t-interval would), narrower as seeds are added,
    and near ``p̄`` it is the t-interval: ``mu (1 - mu) ≈ p̄ (1 - p̄)`` gives ``p̄ ± t s / sqrt(n)``; near a
    bound it is asymmetric, shorter toward the bound, as Wilson's is. ``s = 0`` (all seeds equal) gives
    ``[p̄, p̄]``, as the t-interval does. One seed: ``[0, 1]`` (nothing is known about the spread); none:
    nan. Non-finite values are dropped; a value outside [0, 1] is a ``ValueError``.

    Coverage is that of an approximation: near a bound with few seeds it is below the nominal 95% (better
    than the t-interval's). Simulated with beta-distributed seeds: mean 0.995 at n = 8 covers about 93% (t:
    90%), 0.99 at n = 3 about 91% (t: 82%), 0.999 at n = 8 about 72%.
    """
    _check_confidence(confidence)
    arr = _finite(_as_array(values, "values"))
    if ((arr < 0) | (arr > 1)).any():
        raise ValueError(f"proportion_ci: expected values in [0, 1], got {arr[(arr < 0) | (arr > 1)][:3].tolist()}")
    n = int(arr.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, math.nan)
    mean = float(arr.mean())
    if n == 1:
        return Interval(mean, 0.0, 1.0, 1, math.nan)
    sd = float(arr.std(ddof=1))
    if sd == 0.0 or mean in (0.0, 1.0):
        return Interval(mean, mean, mean, n, sd)
    n_eff = n * mean * (1 - mean) / sd**2
    lo, hi = _wilson(mean, n_eff, float(sps.t.ppf(0.5 + confidence / 2, n - 1)))
    return Interval(mean, lo, hi, n, sd)


def positive_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval:
    """Geometric mean of positive values and the t-interval of ``log10`` of them, mapped back: ``(10^m,
    10^(m - h), 10^(m + h))`` with ``m``, ``h`` the mean and half-width over seeds of ``log10 v``. Always > 0.
    ``sd`` is the standard deviation of ``log10 v``. Non-finite values are dropped; a value <= 0 is a
    ``ValueError`` (it has no logarithm)."""
    arr = _finite(_as_array(values, "values"))
    if (arr <= 0).any():
        raise ValueError(f"positive_ci: expected values > 0, got {arr[arr <= 0][:3].tolist()}")
    if arr.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0, math.nan)
    iv = mean_ci(np.log10(arr), confidence)
    return Interval(10**iv.mean, 10**iv.lo, 10**iv.hi, iv.n, iv.sd)


def bounded(iv: Interval, lo: float, hi: float) -> Interval:
    """``iv`` cut to the range ``[lo, hi]`` the quantity cannot leave (a difference of two proportions lies in
    [-1, 1]). A confidence set intersected with the parameter space covers exactly as often as before: the
    true value is always inside the space, so it is in the cut interval whenever it was in the whole one."""
    return Interval(iv.mean, min(max(iv.lo, lo), iv.mean), max(min(iv.hi, hi), iv.mean), iv.n, iv.sd)


def summarise(values: Sequence[float] | np.ndarray, scale: str = "signed") -> Summary:
    """The summary of per-unit ``values`` that ``scale`` calls for, named (see the module docstring).

    ``"binary"``: a count (``k`` of ``n``, Wilson); ``"proportion"``: a mean of proportions
    (:func:`proportion_ci`), also when every value happens to be 0 or 1. A ``"positive"`` quantity with a value
    <= 0, a ``"proportion"`` with one outside [0, 1], or a ``"binary"`` one with a value other than 0 and 1, gets
    the arithmetic mean and t-interval, and its name says why.
    """
    if scale not in SCALES:
        raise ValueError(f"scale: expected one of {SCALES}, got {scale!r}")
    arr = _finite(_as_array(values, "values"))
    if arr.size == 0:  # every value non-finite (dead runs): nothing to summarise, as mean_ci says
        return Summary(math.nan, math.nan, math.nan, 0, "mean", "t-interval", scale)
    if scale == "positive":
        if (arr > 0).all():
            iv = positive_ci(arr)
            return Summary(iv.mean, iv.lo, iv.hi, iv.n, "geometric mean", "t-interval on the log scale", scale)
        return _signed(arr, "mean (not all > 0: no log scale)")
    if scale == "binary":
        if not np.isin(arr, (0.0, 1.0)).all():
            return _signed(arr, "mean (not all 0 or 1)")
        k, n = int(arr.sum()), int(arr.size)
        lo, hi = wilson_interval(k, n) if n else (math.nan, math.nan)
        return Summary(k / n if n else math.nan, lo, hi, n, "fraction", "Wilson interval", scale, count=k)
    if scale == "nonnegative":
        if (arr < 0).any():
            return _signed(arr, "mean (not all >= 0)")
        iv = bounded(mean_ci(arr), 0.0, math.inf)
        return Summary(iv.mean, iv.lo, iv.hi, iv.n, "mean", "t-interval cut at 0", scale)
    if scale == "proportion":
        if ((arr < 0) | (arr > 1)).any():
            return _signed(arr, "mean (not all in [0, 1])")
        iv = proportion_ci(arr)
        return Summary(iv.mean, iv.lo, iv.hi, iv.n, "mean", "Wilson interval (effective n)", scale)
    return _signed(arr, "mean")


def _signed(arr: np.ndarray, name: str) -> Summary:
    iv = mean_ci(arr) if arr.size else Interval(math.nan, math.nan, math.nan, 0, math.nan)
    return Summary(iv.mean, iv.lo, iv.hi, iv.n, name, "t-interval", "signed")
