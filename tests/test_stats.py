"""Statistics against known answers."""

from __future__ import annotations

import pytest

from lorarank.analysis.stats import (compare, compare_accuracy, find_knee, fit_line, mean_ci, paired_difference,
                                     t_critical, two_proportion_difference)


def test_t_interval_textbook():
    # Classic example: n = 10, mean 5.1, sd 1.2 -> 95% CI half width 2.262 * 1.2 / sqrt(10) = 0.8584
    values = [5.1 + d for d in (-1.2, 1.2, -1.2, 1.2, -1.2, 1.2, -1.2, 1.2, 0.0, 0.0)]
    est = mean_ci(values)
    assert est.mean == pytest.approx(5.1)
    sd = (8 * 1.44 / 9) ** 0.5
    assert est.std == pytest.approx(sd)
    assert est.half_width == pytest.approx(2.262 * sd / 10 ** 0.5)
    one = mean_ci([3.0])
    assert one.low is None and one.mean == 3.0


def test_t_critical_table_and_limit():
    assert t_critical(1) == 12.706 and t_critical(2) == 4.303
    assert 2.060 > t_critical(27) > 2.042
    assert t_critical(10_000) == 1.96


def test_paired_difference_uses_common_seeds_only():
    d = paired_difference({1: 2.0, 2: 3.0, 3: 9.0}, {1: 1.0, 2: 2.0})
    assert d.n == 2 and d.mean == 1.0 and d.low == d.high == 1.0


def test_fit_line_exact():
    fit = fit_line([8, 16, 32, 64], [305280 * r for r in (8, 16, 32, 64)])
    assert fit.slope == pytest.approx(305280) and fit.intercept == pytest.approx(0, abs=1e-6)
    assert fit.r2 == pytest.approx(1.0)
    with pytest.raises(ValueError):
        fit_line([1, 1], [2, 3])


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
    same = compare({1: 1.00, 2: 1.02, 3: 0.99}, {1: 1.01, 2: 1.00, 3: 1.00}, 0.02)
    assert same["verdict"] == "equivalent"
    worse = compare({1: 1.5, 2: 1.52, 3: 1.49}, {1: 1.0, 2: 1.01, 3: 1.0}, 0.02)
    assert worse["verdict"] == "worse" and worse["difference"]["low"] > 0
    better_acc = compare({1: 0.9}, {1: 0.5}, 0.02, lower_is_better=False)
    assert better_acc["verdict"] == "better" and "one seed" in better_acc["rule"]


def test_two_proportion_interval():
    # Agresti-Caffo on 40/50 vs 30/50: adjusted 41/52 vs 31/52
    d = two_proportion_difference(0.8, 50, 0.6, 50)
    a1, a2 = 41 / 52, 31 / 52
    half = 1.96 * ((a1 * (1 - a1) + a2 * (1 - a2)) / 52) ** 0.5
    assert d.mean == pytest.approx(0.2)
    assert (d.low, d.high) == pytest.approx((a1 - a2 - half, a1 - a2 + half))
    assert d.low > 0  # 20 points on 50 items each is a real difference
    tie = two_proportion_difference(0.0, 48, 0.0, 48)
    assert tie.low < 0 < tie.high  # both 0%: still a proper interval around 0


def test_one_seed_accuracy_uses_item_noise():
    run = lambda acc, n: {"seed": 1, "accuracy": {"overall": acc, "n": n}}  # noqa: E731
    assert compare_accuracy([run(0.417, 48)], [run(0.438, 48)], 0.02)["verdict"] == "equivalent"
    assert compare_accuracy([run(0.2, 200)], [run(0.6, 200)], 0.02)["verdict"] == "worse"
