"""normlab.kit.stats against scipy (the oracle) and against verdicts known by construction."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from normlab.engine.spec import Claim
from normlab.kit import stats

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
samples = st.lists(finite, min_size=3, max_size=30).filter(lambda v: np.std(v) > 1e-3)


@settings(max_examples=25, deadline=None)
@given(samples)
def test_mean_ci_matches_scipy_t_interval(values):
    iv = stats.mean_ci(values)
    lo, hi = sps.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sps.sem(values))
    assert iv.mean == pytest.approx(np.mean(values))
    assert iv.lo == pytest.approx(lo, rel=1e-9, abs=1e-9)
    assert iv.hi == pytest.approx(hi, rel=1e-9, abs=1e-9)
    assert iv.n == len(values)


def test_mean_ci_one_value_claims_no_certainty_and_drops_nan():
    iv = stats.mean_ci([3.0])
    assert iv.mean == 3.0 and iv.lo == -math.inf and iv.hi == math.inf
    assert stats.mean_ci([1.0, float("nan"), 3.0]).n == 2


@settings(max_examples=25, deadline=None)
@given(samples, samples)
def test_welch_matches_scipy(a, b):
    r = stats.welch_t(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert r.statistic == pytest.approx(ref.statistic, rel=1e-9)
    assert r.p_two_sided == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-12)
    assert r.p_less == pytest.approx(sps.ttest_ind(a, b, equal_var=False, alternative="less").pvalue, rel=1e-7, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(finite, finite), min_size=3, max_size=20).filter(
    lambda p: np.std([x - y for x, y in p]) > 1e-3))
def test_paired_matches_scipy(pairs):
    a, b = np.array(pairs).T
    r = stats.paired_t(a, b)
    ref = sps.ttest_rel(a, b)
    assert r.statistic == pytest.approx(ref.statistic, rel=1e-9)
    assert r.p_greater == pytest.approx(sps.ttest_rel(a, b, alternative="greater").pvalue, rel=1e-7, abs=1e-12)


def test_one_sample_matches_scipy():
    v = np.array([1.2, 0.7, 1.9, 1.1, 0.4])
    r = stats.one_sample_t(v, 1.5)
    assert r.statistic == pytest.approx(sps.ttest_1samp(v, 1.5).statistic)


def test_cohens_d_and_relative_effect_by_hand():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([3.0, 4.0, 5.0])
    assert stats.cohens_d(a, b) == pytest.approx(-2.0)  # pooled sd = 1
    assert stats.relative_effect(a, b) == pytest.approx(-0.5)


def test_constant_groups_give_exact_p_not_nan():
    r = stats.welch_t([1.0, 1.0, 1.0], [2.0, 2.0, 2.0])
    assert r.p_less == 0.0 and r.p_greater == 1.0
    assert stats.welch_t([1.0, 1.0], [1.0, 1.0]).p_two_sided == 1.0


def _claim(a, b, direction="less", **kw):
    return stats.compare_claim("X", "a < b", "test", "m", a, b, direction, **kw)


rng = np.random.default_rng(0)
LOW, HIGH = rng.normal(1.0, 0.1, 30), rng.normal(2.0, 0.1, 30)


def test_compare_claim_supported_refuted_inconclusive():
    assert _claim(LOW, HIGH).verdict == "supported"
    assert _claim(HIGH, LOW).verdict == "refuted"  # significant the other way
    same = rng.normal(1.0, 0.5, 5)
    assert _claim(same, same + rng.normal(0, 0.5, 5)).verdict == "inconclusive"


def test_compare_claim_refutes_when_effect_too_small_for_the_claim():
    a = np.full(30, 1.0) + rng.normal(0, 1e-3, 30)
    b = a + 0.01  # a is 1% lower, precisely measured: "clearly lower (>= 10%)" is ruled out
    c = _claim(a, b, paired=True, min_effect=0.1)
    assert c.verdict == "refuted"
    assert c.effect_size == pytest.approx(-0.01 / 1.01, rel=1e-2)
    assert _claim(a, b, paired=True).verdict == "supported"  # without a minimum effect: a real difference


def test_compare_claim_log_transform_effect_is_ratio_of_geometric_means():
    a, b = np.array([1.0, 2.0, 4.0]), np.array([10.0, 20.0, 40.0])
    c = _claim(a, b, transform="log", paired=True)
    assert c.effect_size == pytest.approx(-0.9)
    with pytest.raises(ValueError, match="positive"):
        _claim(-a, b, transform="log")


def test_compare_claim_bad_arguments_are_named():
    with pytest.raises(ValueError, match="direction"):
        _claim(LOW, HIGH, direction="lower")
    with pytest.raises(ValueError, match="min_effect"):
        _claim(LOW, HIGH, min_effect=-1)
    assert _claim([1.0], [2.0]).verdict == "inconclusive"


def test_threshold_equivalence_exact_and_combine():
    assert stats.threshold_claim("T", "c", "s", "m", LOW, "less", 1.5).verdict == "supported"
    assert stats.threshold_claim("T", "c", "s", "m", LOW, "greater", 1.5).verdict == "refuted"
    close = rng.normal(0.0, 0.01, 40)
    assert stats.equivalence_claim("E", "c", "s", "m", close, 0.0, margin=0.05).verdict == "supported"
    assert stats.equivalence_claim("E", "c", "s", "m", close + 1.0, 0.0, margin=0.05).verdict == "refuted"
    assert stats.equivalence_claim("E", "c", "s", "m", LOW, HIGH, margin=0.05).verdict == "refuted"
    assert stats.equivalence_claim("E", "c", "s", "m", LOW, LOW + 1e-3, margin=0.2).verdict == "supported"
    assert stats.exact_claim("X", "c", "s", "m", 0.3000000001, 0.3).verdict == "supported"
    assert stats.exact_claim("X", "c", "s", "m", 0.31, 0.3).verdict == "refuted"
    assert stats.combine_verdicts(["supported", "supported"]) == "supported"
    assert stats.combine_verdicts(["supported", "refuted"]) == "refuted"
    assert stats.combine_verdicts(["supported", "inconclusive"]) == "inconclusive"



def test_verdict_agrees_with_the_shown_95pct_interval_at_the_boundary():
    """One-sided p between 0.025 and 0.05: the 95% interval printed beside the verdict still admits no
    effect, so the claim must not be 'supported' (the default alpha is the interval's 0.025 per side)."""
    n = 10
    z = np.linspace(-1.0, 1.0, n)
    z = (z - z.mean()) / z.std(ddof=1)  # mean 0, sd 1: the paired t statistic is shift * sqrt(n)
    b = np.linspace(1.0, 2.0, n)
    a = b - 2.0 / math.sqrt(n) + z  # t = -2.0 with 9 df: one-sided p ~ 0.038
    p_one_sided = sps.ttest_rel(a, b, alternative="less").pvalue
    assert 0.025 < p_one_sided < 0.05
    c = stats.compare_claim("x", "a < b", "test", "m", a, b, "less", effect="cohen_d", paired=True)
    assert c.ci is not None and c.ci[0] < 0 < c.ci[1]
    assert c.verdict == "inconclusive"


# -- one significance rule, multiplicity ------------------------------------------------------------------


def _naive_holm(p):
    """Holm by its definition: reject H_(1..k) while p_(i) <= alpha / (m - i + 1); the adjusted p of H_(i)
    is the smallest alpha at which it is rejected: max over j <= i of min(1, (m - j + 1) p_(j))."""
    m = len(p)
    order = sorted(range(m), key=lambda i: (p[i], i))
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=20))
def test_holm_matches_its_definition(p):
    assert stats.holm_adjust(p) == pytest.approx(_naive_holm(p), rel=1e-12, abs=1e-15)


def test_holm_refuses_what_is_not_a_p_value():
    for bad in ([0.1, float("nan")], [1.5], [-0.1]):
        with pytest.raises(ValueError, match="p_values"):
            stats.holm_adjust(bad)


def test_correction_marks_which_supported_verdicts_survive():
    strong = _claim(LOW - 0.5, HIGH)  # p far below 0.025 / m
    weak = stats.Claim("W", "c", "s", "m", "supported", "t", 2.2, p_value=0.02)  # supported alone, not after Holm
    refuted = stats.Claim("R", "c", "s", "m", "refuted", "t", -3.0, p_value=0.999)
    exact = stats.exact_claim("X", "c", "s", "m", 1.0, 1.0)
    out = stats.correct_for_multiplicity([strong, weak, refuted, exact])
    assert out == [strong, weak, refuted, exact]
    assert strong.survives is True and weak.survives is False
    assert weak.p_adjusted == pytest.approx(min(1.0, 2 * 0.02))  # second smallest of three: (3 - 1) * p
    assert refuted.survives is None and refuted.p_adjusted == pytest.approx(0.999)
    assert exact.p_adjusted is None and exact.survives is None and exact.unit == "exact" and exact.n is None


def test_equivalence_uses_the_same_level_as_every_other_verdict():
    """TOST at 0.025 per side = the 95% interval inside the margin; its p is the larger one-sided p (scipy)."""
    d = np.array([0.02, -0.01, 0.04, 0.03, -0.02, 0.05, 0.0, 0.01])
    margin = 0.035
    cl = stats.equivalence_claim("E", "c", "s", "m", d, 0.0, margin=margin, unit="seed")
    se = sps.sem(d)
    p_lo = sps.t.sf((d.mean() + margin) / se, d.size - 1)
    p_hi = sps.t.cdf((d.mean() - margin) / se, d.size - 1)
    assert cl.p_value == pytest.approx(max(p_lo, p_hi))
    lo, hi = sps.t.interval(0.95, d.size - 1, loc=d.mean(), scale=se)
    assert cl.ci == pytest.approx((lo, hi))
    # This sample sits between the rules: the 90% interval is inside the margin, the 95% one is not.
    lo90, hi90 = sps.t.interval(0.90, d.size - 1, loc=d.mean(), scale=se)
    assert -margin < lo90 and hi90 < margin and not (-margin < lo and hi < margin)
    assert cl.verdict == "inconclusive" and cl.p_value > stats.ALPHA and cl.unit == "seed" and cl.n == 8


def test_claim_n_is_a_count_of_units():
    assert stats.Claim("A", "c", "s", "m", "supported", "t", 1.0, n=np.int64(3)).n == 3
    for bad in (2.5, -1, True):
        with pytest.raises(ValueError, match="n must be a count"):
            stats.Claim("A", "c", "s", "m", "supported", "t", 1.0, n=bad)


@pytest.mark.parametrize("values, side, bound, verdict", [
    ([0.1, 0.2, 0.3], "below", 0.3, "supported"),
    ([0.1, 0.2, 0.31], "below", 0.3, "refuted"),  # one counterexample
    ([0.1, float("nan")], "below", 0.3, "refuted"),  # a non-finite value is no evidence of the bound
    ([0.5, 0.6], "above", 0.4, "supported"),
    ([0.5, 0.4], "above", 0.4, "refuted"),  # strictly above
    ([], "below", 1.0, "inconclusive"),
])
def test_bound_claim_is_a_worst_case_over_units(values, side, bound, verdict):
    cl = stats.bound_claim("B", "c", "s", "m", values, bound, side, unit="seed")
    assert cl.verdict == verdict and cl.unit == "seed" and cl.n == len(values)
    if values and verdict != "inconclusive" and all(map(math.isfinite, values)):
        assert cl.value == (max(values) if side == "below" else min(values))


def test_claims_on_values_that_are_all_non_finite_are_inconclusive_not_errors():
    dead = [float("nan"), float("inf"), float("nan")]
    assert stats.threshold_claim("T", "c", "s", "m", dead, "less", 1.0, unit="seed").verdict == "inconclusive"
    assert stats.compare_claim("C", "c", "s", "m", dead, [1.0, 2.0], "less", unit="seed").verdict == "inconclusive"
    assert stats.equivalence_claim("E", "c", "s", "m", dead, 0.0, margin=0.1, unit="seed").verdict == "inconclusive"


def _part(verdict: str, p: float | None, n: int = 8, value: float = 0.0) -> Claim:
    return Claim(id="", claim="", source="", measurement="", verdict=verdict, statistic="t", value=value,
                 p_value=p, n=n, detail=f"{verdict} at p={p}", unit="seed")


@pytest.mark.parametrize(("verdicts", "expected", "top"), [
    (("supported", "supported", "supported"), "supported", 1),  # every part decides: the largest p (0.02)
    (("supported", "refuted", "refuted"), "refuted", 1),  # the refuted parts decide: the larger p of theirs
    (("supported", "inconclusive", "refuted"), "refuted", 2),
    (("supported", "inconclusive", "supported"), "inconclusive", 1),
])
def test_all_of_claim_takes_the_deciding_part_with_the_largest_p(verdicts, expected, top):
    ps = (0.001, 0.02, 0.01)
    parts = [(f"part{i}", _part(v, p, n=5 + i, value=float(i))) for i, (v, p) in enumerate(zip(verdicts, ps, strict=True))]
    combined = stats.all_of_claim("x", "claim", "src", "m", parts, unit="seed", note="a note")
    assert combined.verdict == expected
    assert (combined.p_value, combined.n, combined.value) == (ps[top], 5 + top, float(top))
    assert combined.unit == "seed" and "a note" in combined.detail
    for label, part in parts:  # every part is listed with its own verdict
        assert f"{label}: {part.verdict} ({part.detail})" in combined.detail
    if expected == "supported":
        assert not combined.detail.startswith(("refuted by", "not shown by"))
    else:
        deciding = [label for label, part in parts
                    if (part.verdict == "refuted" if expected == "refuted" else part.verdict != "supported")]
        verb = "refuted" if expected == "refuted" else "not shown"
        assert combined.detail.startswith(f"{verb} by {', '.join(deciding)}; ")


def test_all_of_claim_needs_a_part():
    with pytest.raises(ValueError, match="at least one part"):
        stats.all_of_claim("x", "claim", "src", "m", [], unit="seed")
