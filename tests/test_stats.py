"""Statistics against known answers."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from lorarank.analysis.stats import (Outcome, compare, fit_line, mcnemar, mean_ci, paired_difference, seeds_to_show,
                                     slopes_over_seeds, t_critical, tost, two_proportion_difference)


def test_t_interval_textbook():
    # Classic example: n = 10, mean 5.1, sd 1.2 -> 95% CI half width 2.262 * 1.2 / sqrt(10) = 0.8584
    values = [5.1 + d for d in (-1.2, 1.2, -1.2, 1.2, -1.2, 1.2, -1.2, 1.2, 0.0, 0.0)]
    est = mean_ci(values)
    assert est.mean == pytest.approx(5.1)
    sd = (8 * 1.44 / 9) ** 0.5
    assert est.std == pytest.approx(sd)
    assert est.half_width == pytest.approx(2.262 * sd / 10 ** 0.5, rel=1e-4)  # printed tables round t to 2.262
    low, high = stats.t.interval(0.95, 9, loc=est.mean, scale=stats.sem(values))
    assert (est.low, est.high) == pytest.approx((low, high))
    one = mean_ci([3.0])
    assert one.low is None and one.mean == 3.0


def test_t_critical_textbook_values_and_limit():
    assert t_critical(1) == pytest.approx(12.706, abs=5e-4) and t_critical(2) == pytest.approx(4.303, abs=5e-4)
    assert t_critical(27) == pytest.approx(2.052, abs=5e-4)
    assert t_critical(10_000) == pytest.approx(1.960, abs=5e-4)
    assert t_critical(2, level=0.90) == pytest.approx(2.920, abs=5e-4)  # one-sided 5%: TOST's quantile
    with pytest.raises(ValueError, match="at least 2 values"):
        t_critical(0)


def test_paired_difference_uses_common_seeds_only():
    d = paired_difference({1: 2.0, 2: 3.0, 3: 9.0}, {1: 1.0, 2: 2.0})
    assert d.n == 2 and d.mean == 1.0 and d.low == d.high == 1.0


def test_fit_line_exact():
    fit = fit_line([8, 16, 32, 64], [305280 * r for r in (8, 16, 32, 64)])
    assert fit.slope == pytest.approx(305280) and fit.intercept == pytest.approx(0, abs=1e-6)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.slope_low == pytest.approx(305280) and fit.slope_high == pytest.approx(305280)
    with pytest.raises(ValueError):
        fit_line([1, 1], [2, 3])


def test_fit_line_slope_interval_matches_scipy():
    xs, ys = [1, 2, 3, 4, 5], [1.1, 1.9, 3.2, 3.8, 5.3]
    fit, ref = fit_line(xs, ys), stats.linregress(xs, ys)
    half = stats.t.ppf(0.975, 3) * ref.stderr
    assert (fit.slope_low, fit.slope_high) == pytest.approx((ref.slope - half, ref.slope + half))
    assert fit.r2 == pytest.approx(ref.rvalue ** 2) and fit.n == 5
    two = fit_line([1, 2], [3, 5])  # two points: a line but no interval
    assert two.slope == pytest.approx(2) and two.slope_low is None


def _cmp(d: list[float], margin: float | None = 0.1, higher_is_better: bool = False):
    """rank 8 against rank 64 with per-seed differences d (rank 64 at 1.0 on every seed)."""
    ref = {s: 1.0 for s in range(1, len(d) + 1)}
    return compare({s: 1.0 + x for s, x in zip(ref, d)}, ref, margin, rank=8, reference_rank=64,
                   higher_is_better=higher_is_better)


def test_compare_outcomes_on_known_differences():
    # d = (0.04, 0.05, 0.06): mean 0.05, sd 0.01, 90% CI 0.05 ± 2.920·0.01/√3 = (0.0331, 0.0669)
    c = _cmp([0.04, 0.05, 0.06], margin=0.113)
    half = stats.t.ppf(0.95, 2) * 0.01 / math.sqrt(3)
    assert (c.low, c.high) == pytest.approx((0.05 - half, 0.05 + half)) and c.level == pytest.approx(0.90)
    assert c.outcome is Outcome.EQUIVALENT_AND_WORSE and c.outcome.equivalent and c.outcome.shown_worse
    assert c.p_tost == pytest.approx(tost([0.04, 0.05, 0.06], 0.113).p)
    # the same differences against a margin inside the CI: worse, not equivalent
    assert _cmp([0.04, 0.05, 0.06], margin=0.06).outcome is Outcome.WORSE
    # a CI that holds 0 and fits inside ±δ: equivalent; one that reaches past δ: inconclusive
    assert _cmp([0.01, -0.01, 0.005], margin=0.1).outcome is Outcome.EQUIVALENT
    assert _cmp([0.3, -0.2, 0.05], margin=0.1).outcome is Outcome.INCONCLUSIVE
    # no margin (no base model): no equivalence, only worse / better / inconclusive
    assert _cmp([0.01, -0.01, 0.005], margin=None).outcome is Outcome.INCONCLUSIVE
    assert _cmp([-0.5, -0.52, -0.49], margin=0.1).outcome is Outcome.BETTER
    assert _cmp([-0.05, -0.04, -0.06], margin=0.1).outcome is Outcome.EQUIVALENT_AND_BETTER


def test_compare_orientation_for_accuracy():
    # accuracy 10 points lower on every seed, with spread: worse (higher is better)
    c = _cmp([-0.10, -0.12, -0.08], margin=0.02, higher_is_better=True)
    assert c.outcome is Outcome.WORSE and c.high < 0


def test_compare_with_one_seed_is_untested_and_provisional():
    c = _cmp([0.05], margin=0.113)
    assert c.outcome is Outcome.UNTESTED and c.low is None and c.provisional_within_margin is True
    assert "one seed" in c.reason
    assert _cmp([0.2], margin=0.113).provisional_within_margin is False
    flat = _cmp([1 / 48] * 3, margin=0.024)  # equal non-zero differences: no spread, no test
    assert flat.outcome is Outcome.UNTESTED and "no spread" in flat.reason
    same = compare({1: 1.0, 2: 2.0}, {1: 1.0, 2: 2.0}, 0.1, rank=8, reference_rank=64)  # identical values
    assert same.outcome is Outcome.EQUIVALENT
    assert compare({1: 1.0}, {2: 1.0}, 0.1, rank=8, reference_rank=64).reason == "no shared seed: no test"
    assert compare({1: math.nan, 2: 1.0}, {1: 1.0, 2: 1.0}, 0.1, rank=8, reference_rank=64).outcome is Outcome.UNTESTED


def test_slopes_over_seeds_by_hand():
    """The committed snapshot's forgetting slopes per doubling of the rank are 0.0257, 0.0624 and
    0.0638 (one least-squares fit per seed over log2 r = 3..6). Mean and 95% t interval by hand:
    mean 0.0506, sd 0.0216, half-width t_{0.975, 2}·sd/√3 = 4.303·0.0216/1.732 = 0.0537."""
    xs = [3.0, 4.0, 5.0, 6.0]
    slopes = {42: 0.0257, 43: 0.0624, 44: 0.0638}
    jitter = [0.004, -0.004, -0.004, 0.004]  # orthogonal to 1 and to x: leaves each seed's slope exact
    fit = slopes_over_seeds({s: [(x, 0.1 + b * x + j) for x, j in zip(xs, jitter)] for s, b in slopes.items()})
    assert fit.per_seed == pytest.approx(slopes)
    mean = sum(slopes.values()) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in slopes.values()) / 2)
    half = 4.302653 * sd / math.sqrt(3)  # t_{0.975, 2}
    assert fit.mean == pytest.approx(0.0506, abs=5e-5) and fit.n == 3
    assert (fit.low, fit.high) == pytest.approx((mean - half, mean + half), rel=1e-5)
    assert fit.low == pytest.approx(-0.0030, abs=5e-4) and fit.high == pytest.approx(0.1043, abs=5e-4)
    assert fit.p == pytest.approx(stats.ttest_1samp(list(slopes.values()), 0.0).pvalue)
    assert fit.p == pytest.approx(0.056, abs=2e-3)  # the CI holds 0: no trend shown at 5%
    one = slopes_over_seeds({1: [(1.0, 1.0), (2.0, 3.0)]})
    assert one.mean == pytest.approx(2.0) and one.low is None and one.p is None
    assert slopes_over_seeds({1: [(1.0, 1.0), (1.0, 2.0)]}) is None  # one rank per seed: no slope


def test_two_proportion_interval():
    # Agresti-Caffo on 40/50 vs 30/50: adjusted 41/52 vs 31/52, at 90% (the comparison level)
    d = two_proportion_difference(0.8, 50, 0.6, 50)
    a1, a2 = 41 / 52, 31 / 52
    half = stats.norm.ppf(0.95) * ((a1 * (1 - a1) + a2 * (1 - a2)) / 52) ** 0.5
    assert d.mean == pytest.approx(0.2) and d.level == pytest.approx(0.9)
    assert (d.low, d.high) == pytest.approx((a1 - a2 - half, a1 - a2 + half))
    tie = two_proportion_difference(0.0, 48, 0.0, 48)
    assert tie.low < 0 < tie.high  # both 0%: still a proper interval around 0


def test_mcnemar_exact():
    # b = 6 items only the first gets right, c = 1 only the second: exact two-sided p = 2·P(B <= 1),
    # B ~ Bin(7, ½): 2·(1 + 7)/128 = 0.125
    first = [True] * 6 + [False] + [True] * 10 + [False] * 3
    second = [False] * 6 + [True] + [True] * 10 + [False] * 3
    m = mcnemar(first, second)
    assert (m.only_first, m.only_second, m.n_items) == (6, 1, 20)
    assert m.p == pytest.approx(0.125)
    assert mcnemar([True, False], [True, False]).p == 1.0  # no discordant item
    with pytest.raises(ValueError, match="same, non-empty"):
        mcnemar([True], [True, False])


def test_seeds_to_show_an_equivalence():
    # sd 3 points, δ 2.4 points: t_{0.95, n−1}·3/√n < 2.4 first at n = 7 (n = 6: 2.015·3/√6 = 2.47)
    assert seeds_to_show(0.03, 0.024) == 7
    assert seeds_to_show(0.01, 1.0) == 2
    assert seeds_to_show(1.0, 0.001) is None


def test_tost_equivalent_and_not():
    # d = (0.01, 0.02, 0.00): mean 0.01, s 0.01, 90% CI 0.01 ± 2.920·0.01/√3 = (-0.00686, 0.02686)
    eq = tost([0.01, 0.02, 0.00], margin=0.05)
    half = 2.919986 * 0.01 / math.sqrt(3)
    assert (eq.low, eq.high) == pytest.approx((0.01 - half, 0.01 + half), rel=1e-5)
    assert eq.equivalent is True and eq.p < 0.05 and eq.p == max(eq.p_lower, eq.p_upper)
    assert eq.p_upper == pytest.approx(stats.ttest_1samp([0.01, 0.02, 0.0], 0.05, alternative="less").pvalue)
    # the same differences with a margin inside the CI: not shown equivalent
    assert tost([0.01, 0.02, 0.00], margin=0.02).equivalent is False
    # a clear, consistent difference larger than the margin
    worse = tost([0.30, 0.32, 0.31], margin=0.05)
    assert worse.equivalent is False and worse.p_upper > 0.5
    # the CI is what decides: inside (-δ, δ) exactly when both one-sided tests reject
    # d = (0.04, -0.03, 0.05, 0): mean 0.015, 90% CI (-0.028, 0.058): inside ±0.06, not inside ±0.05
    verdicts = []
    for d, m in [([0.04, -0.03, 0.05, 0.0], 0.06), ([0.04, -0.03, 0.05, 0.0], 0.05), ([-0.2, 0.1], 1.0)]:
        r = tost(d, m)
        assert r.equivalent == (-m < r.low and r.high < m) == (r.p < 0.05)
        verdicts.append(r.equivalent)
    assert verdicts == [True, False, True]


def test_tost_edge_cases():
    one = tost([0.01], 0.05)
    assert one.equivalent is None and "one seed" in one.reason and one.mean == 0.01
    same = tost([0.0, 0.0, 0.0], 0.05)  # the best rank against itself
    assert same.equivalent is True and same.p == 0.0 and "by definition" in same.reason
    # equal non-zero differences (accuracy on 48 items: one item on every seed): no spread, no test
    flat = tost([1 / 48] * 3, 0.024)
    assert flat.equivalent is None and flat.p is None and "no spread" in flat.reason
    assert tost([0.01, math.inf, 0.0], 0.05).equivalent is None
    assert tost([0.01, math.nan], 0.05).reason.startswith("a non-finite value")
    with pytest.raises(ValueError, match="positive"):
        tost([0.1, 0.2], 0.0)
