"""Statistics against known answers."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from lorarank.analysis.stats import (compare, compare_accuracy, find_knee, fit_line, mean_ci, paired_difference,
                                     t_critical, tost, two_proportion_difference)


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


def test_knee_on_synthetic_curves():
    ranks = [4, 8, 16, 32, 64]
    # loss drops quickly then plateaus from rank 16 on: 16, 32 and 64 differ only by seed noise
    per_seed = {4: {1: 2.00, 2: 2.02, 3: 1.99}, 8: {1: 1.50, 2: 1.49, 3: 1.52},
                16: {1: 1.21, 2: 1.18, 3: 1.20}, 32: {1: 1.19, 2: 1.20, 3: 1.19}, 64: {1: 1.20, 2: 1.21, 3: 1.18}}
    knee = find_knee(ranks, per_seed, tolerance=0.02)
    assert knee["best"] == 32 and knee["knee"] == 16 and "paired" in knee["rule"]
    assert knee["checks"]["8"]["within_noise"] is False and knee["checks"]["64"]["within_noise"] is True
    # strictly improving: the knee is the largest rank
    steep = {r: {1: 10.0 / r, 2: 10.0 / r + 0.001} for r in ranks}
    assert find_knee(ranks, steep, 0.02)["knee"] == 64
    # flat within tolerance, one seed: the smallest rank already suffices
    flat = {r: {1: 1.0 + 0.001 * (r % 3)} for r in ranks}
    out = find_knee(ranks, flat, 0.02)
    assert out["knee"] == 4 and "one seed" in out["rule"]


def test_compare_verdicts():
    # d = (-0.01, +0.02, -0.01): the 95% CI contains 0; the 90% CI (-0.0269 .. +0.0269) lies inside ±0.05
    small, large = {1: 1.00, 2: 1.02, 3: 0.99}, {1: 1.01, 2: 1.00, 3: 1.00}
    same = compare(small, large, 0.02, margin=0.05)
    assert same["verdict"] == "equivalent" and "TOST within δ = 0.05" in same["rule"]
    # no difference shown is not equivalence: a margin the CI reaches beyond, or no margin at all
    assert compare(small, large, 0.02, margin=0.02)["verdict"] == "inconclusive"
    assert compare(small, large, 0.02)["verdict"] == "inconclusive"
    assert compare({1: 1.0}, {1: 1.01}, 0.02)["verdict"] == "tied"  # one seed: within the tolerance
    worse = compare({1: 1.5, 2: 1.52, 3: 1.49}, {1: 1.0, 2: 1.01, 3: 1.0}, 0.02)
    assert worse["verdict"] == "worse" and worse["difference"]["low"] > 0
    better_acc = compare({1: 0.9}, {1: 0.5}, 0.02, lower_is_better=False)
    assert better_acc["verdict"] == "better" and "one seed" in better_acc["rule"]


def test_two_proportion_interval():
    # Agresti-Caffo on 40/50 vs 30/50: adjusted 41/52 vs 31/52
    d = two_proportion_difference(0.8, 50, 0.6, 50)
    a1, a2 = 41 / 52, 31 / 52
    half = stats.norm.ppf(0.975) * ((a1 * (1 - a1) + a2 * (1 - a2)) / 52) ** 0.5
    assert d.mean == pytest.approx(0.2)
    assert (d.low, d.high) == pytest.approx((a1 - a2 - half, a1 - a2 + half))
    assert d.low > 0  # 20 points on 50 items each is a real difference
    tie = two_proportion_difference(0.0, 48, 0.0, 48)
    assert tie.low < 0 < tie.high  # both 0%: still a proper interval around 0


def test_one_seed_accuracy_uses_item_noise():
    run = lambda acc, n: {"seed": 1, "accuracy": {"overall": acc, "n": n}}  # noqa: E731
    assert compare_accuracy([run(0.417, 48)], [run(0.438, 48)], 0.02)["verdict"] == "inconclusive"
    assert compare_accuracy([run(0.2, 200)], [run(0.6, 200)], 0.02)["verdict"] == "worse"


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
