"""Intervals on a quantity's own scale: Wilson for counts, bounded intervals for means of proportions,
log-scale intervals for positive quantities. Oracles: Wilson's textbook values, a brute-force search of the
score inequality, the t-interval, and float64 formulas written out here."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from normlab.kit import stats
from normlab.kit.intervals import bounded, mean_ci, positive_ci, proportion_ci, summarise, wilson_interval

# -- Wilson: the textbook numbers --------------------------------------------------------------------------

@pytest.mark.parametrize(("k", "n", "lo", "hi"), [
    (8, 10, 0.4902, 0.9433),   # (0.8 + z²/20 ± z sqrt(0.016 + z²/400)) / (1 + z²/10), z = 1.95996
    (0, 10, 0.0, 0.2775),      # k = 0: the upper end is z²/n / (1 + z²/n), not 0
    (10, 10, 0.7225, 1.0),     # the mirror image
    (81, 263, 0.2553, 0.3662),  # Newcombe (1998), Statistics in Medicine 17: 857, example (a)
    (15, 148, 0.0624, 0.1605),  # Newcombe (1998), example (b)
])
def test_wilson_matches_the_textbook_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def _score(k: int, n: int, mu: float) -> float:
    return abs(k / n - mu) / math.sqrt(mu * (1 - mu) / n)


def test_wilson_is_the_score_test_inversion():
    """Every mu inside is not rejected by the two-sided score test, every mu just outside is."""
    z = sps.norm.ppf(0.975)
    for k, n in ((3, 7), (1, 20), (19, 20)):
        lo, hi = wilson_interval(k, n)
        for mu in np.linspace(lo + 1e-9, hi - 1e-9, 50):
            if 0 < mu < 1:
                assert _score(k, n, mu) <= z + 1e-9
        for mu in (lo - 1e-6, hi + 1e-6):
            if 0 < mu < 1:
                assert _score(k, n, mu) > z


@pytest.mark.parametrize("bad", [(-1, 5), (6, 5), (1.5, 4), (True, 3)])
def test_wilson_rejects_impossible_counts(bad):
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_interval(*bad)


def test_wilson_of_no_trials_is_undefined():
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 5000), frac=st.floats(0, 1))
def test_wilson_inside_unit_interval_contains_estimate_and_shrinks_with_n(n, frac):
    k = round(frac * n)
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    lo2, hi2 = wilson_interval(4 * k, 4 * n)  # the same proportion from 4x the trials
    assert hi2 - lo2 < hi - lo


# -- means of per-seed proportions ------------------------------------------------------------------------

def _brute_force(values: np.ndarray) -> tuple[float, float]:
    """The set {mu : (p̄ - mu)² <= t² phi mu (1 - mu) / n} on a grid of 2e6 points."""
    n, p, s = values.size, values.mean(), values.std(ddof=1)
    phi = s**2 / (p * (1 - p))
    t = sps.t.ppf(0.975, n - 1)
    mu = np.linspace(0, 1, 2_000_001)
    inside = mu[(p - mu) ** 2 <= t**2 * phi * mu * (1 - mu) / n]
    return float(inside.min()), float(inside.max())


@pytest.mark.parametrize("values", [
    [0.91, 0.95, 0.97, 0.99],   # near 1: the t-interval would pass 1.0
    [0.02, 0.0, 0.05],          # near 0, a seed at exactly 0
    [0.4, 0.55, 0.5, 0.62, 0.47],
])
def test_proportion_ci_is_the_quasi_binomial_score_interval(values):
    v = np.asarray(values)
    iv = proportion_ci(v)
    assert (iv.lo, iv.hi) == pytest.approx(_brute_force(v), abs=1e-6)
    assert iv.mean == pytest.approx(v.mean())


def test_proportion_ci_stays_below_one_where_the_t_interval_does_not():
    """The bug it fixes: two seeds at 0.90 and 0.99 accuracy; the t-interval's upper end is above 1."""
    v = [0.90, 0.99]
    assert mean_ci(v).hi > 1.0
    iv = proportion_ci(v)
    assert 0.0 <= iv.lo < iv.mean < iv.hi <= 1.0


def test_proportion_ci_near_the_middle_is_the_t_interval():
    """Many seeds, small spread, mean 0.5: mu(1 - mu) ~ p̄(1 - p̄) across the interval."""
    rng = np.random.default_rng(0)
    v = 0.5 + 0.01 * rng.standard_normal(400)
    t, iv = mean_ci(v), proportion_ci(v)
    assert (iv.lo, iv.hi) == pytest.approx((t.lo, t.hi), abs=2e-5)


def test_proportion_ci_edge_cases():
    assert (proportion_ci([1.0, 1.0, 1.0]).lo, proportion_ci([1.0, 1.0, 1.0]).hi) == (1.0, 1.0)
    one = proportion_ci([0.7])
    assert (one.lo, one.hi, one.n) == (0.0, 1.0, 1)
    assert math.isnan(proportion_ci([math.nan]).mean)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        proportion_ci([0.5, 1.2])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=2, max_size=40))
def test_proportion_ci_inside_unit_interval_contains_mean_and_shrinks_with_n(values):
    v = np.asarray(values)
    iv = proportion_ci(v)
    assert 0.0 <= iv.lo <= iv.mean <= iv.hi <= 1.0
    assert iv.mean == pytest.approx(v.mean())
    twice = proportion_ci(np.concatenate([v, v]))  # the same spread from twice the seeds
    assert twice.hi - twice.lo <= iv.hi - iv.lo + 1e-12


# -- positive quantities: the log scale --------------------------------------------------------------------

def test_positive_ci_is_the_geometric_mean_with_a_log_scale_t_interval():
    v = np.array([1.0, 10.0, 100.0])
    iv = positive_ci(v)
    half = sps.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)  # log10 values 0, 1, 2: mean 1, sd 1
    assert (iv.mean, iv.lo, iv.hi) == pytest.approx((10.0, 10 ** (1 - half), 10 ** (1 + half)))
    with pytest.raises(ValueError, match="values > 0"):
        positive_ci([1.0, 0.0])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(1e-6, 1e6), min_size=2, max_size=30))
def test_positive_ci_stays_positive_and_contains_the_geometric_mean(values):
    iv = positive_ci(values)
    geo = math.exp(np.mean(np.log(values)))
    assert 0.0 < iv.lo <= iv.mean * (1 + 1e-9) and iv.mean <= iv.hi * (1 + 1e-9)
    assert iv.mean == pytest.approx(geo, rel=1e-9)


def test_bounded_cuts_to_the_range_and_keeps_the_estimate():
    iv = bounded(mean_ci([1.0, 0.0]), -1.0, 1.0)
    assert (iv.lo, iv.mean, iv.hi) == (-1.0, 0.5, 1.0)


# -- summaries, named --------------------------------------------------------------------------------------

def test_summarise_picks_the_interval_by_scale_and_names_it():
    flags = summarise([1, 0, 0, 1, 0, 0, 0, 0], "binary")
    assert (flags.count, flags.n, flags.estimate) == (2, 8, 0.25)
    assert (flags.lo, flags.hi) == pytest.approx(wilson_interval(2, 8))
    assert flags.described() == "2 of 8 seeds, 95% Wilson interval"
    acc = summarise([0.9, 0.99], "proportion")
    assert acc.hi <= 1.0 and acc.described() == "mean over 2 seeds, 95% Wilson interval (effective n)"
    loss = summarise([1.0, 100.0], "positive")
    assert loss.estimate == pytest.approx(10.0) and loss.name == "geometric mean"
    assert summarise([1.0, 100.0]).estimate == pytest.approx(50.5)
    assert summarise([-1.0, 2.0], "positive").name.startswith("mean (not all > 0")
    assert summarise([0.5, 2.0], "proportion").name.startswith("mean (not all in [0, 1]")
    assert summarise([0.3], "signed").fmt() == "0.3 (n=1: no interval)"
    assert summarise([1.0], "binary").fmt() == "1 [0.207, 1]"  # a count of one unit has its Wilson interval
    near_zero = summarise([0.0, 0.0, 0.0, 3.0], "nonnegative")  # a t-interval would reach below 0
    assert near_zero.lo == 0.0 and near_zero.hi > near_zero.estimate == 0.75 and mean_ci([0.0, 0.0, 0.0, 3.0]).lo < 0
    assert summarise([-1.0, 2.0], "nonnegative").name.startswith("mean (not all >= 0")
    # shares that all happen to be 0 are a mean of proportions, not "0 of n"
    zeros = summarise([0.0, 0.0, 0.0], "proportion")
    assert zeros.count is None and zeros.described().startswith("mean over 3 seeds")
    assert summarise([0.5, 1.0], "binary").name.startswith("mean (not all 0 or 1")
    with pytest.raises(ValueError, match="scale"):
        summarise([1.0], "log")
    dead = summarise([math.nan, math.inf], "positive")  # every run non-finite: undefined, not an error
    assert dead.n == 0 and math.isnan(dead.estimate)


def test_compare_claim_detail_names_the_summary_it_shows():
    """The detail shows what the test compares: geometric means for a log test, bounded proportions on
    request; the summary is named."""
    a, b = [1.0, 10.0, 100.0], [2.0, 20.0, 200.0]
    log = stats.compare_claim("x", "a < b", "t", "m", a, b, "less", transform="log", paired=True)
    assert log.detail.startswith("a 10 [") and "(geometric mean [95% CI]" in log.detail
    plain = stats.compare_claim("x", "a < b", "t", "m", a, b, "less", paired=True)
    assert plain.detail.startswith("a 37 [") and "(mean [95% CI]" in plain.detail
    acc = stats.compare_claim("x", "a < b", "t", "m", [0.90, 0.99], [0.5, 0.6], "greater", scale="proportion")
    shown = [float(x) for x in acc.detail.split("(mean")[0].replace("[", " ").replace("]", " ").replace(",", " ")
             .split() if x.replace(".", "").replace("e-", "").isdigit()]
    assert max(shown) <= 1.0
