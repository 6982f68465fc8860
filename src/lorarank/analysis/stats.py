"""Small, dependency-free statistics: t confidence intervals, paired differences, line fits, knees.

With n seeds the 95% confidence interval of a mean is  x̄ ± t_{0.975, n-1} · s / √n  (Student t).
Rank comparisons are paired: every rank of a seed saw the same data order and initialisation
stream, so the CI of the per-seed difference is much tighter than that of two independent means.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

# two-sided 95% Student t critical values t_{0.975, df}
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
         18: 2.101, 19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t_critical(df: int) -> float:
    """t_{0.975, df}; linear interpolation between tabulated df, 1.96 in the limit."""
    if df < 1:
        raise ValueError("need at least 2 values for a confidence interval")
    if df in _T975:
        return _T975[df]
    keys = sorted(_T975)
    if df > keys[-1]:
        return 1.960
    lo = max(k for k in keys if k < df)
    hi = min(k for k in keys if k > df)
    return _T975[lo] + (_T975[hi] - _T975[lo]) * (df - lo) / (hi - lo)


@dataclass
class Estimate:
    mean: float
    low: float | None  # 95% CI; None with a single value
    high: float | None
    n: int
    std: float | None

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2

    def to_dict(self) -> dict:
        return asdict(self)


def mean_ci(values: list[float]) -> Estimate:
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return Estimate(mean, None, None, 1, None)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_critical(n - 1) * std / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n, std)


def paired_difference(a: dict[int, float], b: dict[int, float]) -> Estimate | None:
    """Mean and CI of a[seed] - b[seed] over the seeds both have; None when they share none."""
    common = sorted(set(a) & set(b))
    if not common:
        return None
    return mean_ci([a[s] - b[s] for s in common])


@dataclass
class LineFit:
    intercept: float
    slope: float
    r2: float

    def to_dict(self) -> dict:
        return asdict(self)


def fit_line(xs: list[float], ys: list[float]) -> LineFit:
    """Ordinary least squares y = intercept + slope·x, with R²."""
    n = len(xs)
    if n < 2 or len(set(xs)) < 2:
        raise ValueError("need at least two distinct x values")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    return LineFit(intercept, slope, 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0)


def within_noise(diff: Estimate, best_mean: float, tolerance: float) -> bool:
    """Is a rank indistinguishable from the best? diff = metric(rank) - metric(best), lower is better.

    Several seeds: the paired 95% CI of the difference reaches 0 (not significantly worse).
    One seed: no noise estimate exists, so use a relative tolerance |diff| <= tolerance·|best|."""
    if diff.low is not None:
        return diff.low <= 0.0
    return abs(diff.mean) <= tolerance * abs(best_mean)


def find_knee(ranks: list[int], per_seed: dict[int, dict[int, float]], tolerance: float) -> dict:
    """The smallest rank whose metric (lower is better) is within noise of the best rank.

    per_seed: rank -> {seed: metric}. Returns the knee, the best rank, and the rule used."""
    means = {r: sum(v.values()) / len(v) for r, v in per_seed.items()}
    best = min(ranks, key=lambda r: means[r])
    multi = any(len(v) > 1 for v in per_seed.values())
    checks = {}
    for r in sorted(ranks):
        diff = paired_difference(per_seed[r], per_seed[best]) if multi else mean_ci([means[r] - means[best]])
        checks[r] = {"difference": diff.to_dict() if diff else None,
                     "within_noise": bool(diff) and within_noise(diff, means[best], tolerance)}
    knee = min(r for r in ranks if checks[r]["within_noise"])
    rule = ("paired 95% CI across seeds of (rank - best) reaches 0" if multi
            else f"one seed: within {tolerance:.0%} of the best (no noise estimate)")
    return {"knee": knee, "best": best, "rule": rule, "checks": {str(k): v for k, v in checks.items()}}


def compare(small: dict[int, float], large: dict[int, float], tolerance: float, lower_is_better: bool = True) -> dict:
    """Verdict for "does the small rank do as well as the large rank?" on one metric.

    equivalent: CI of (small - large) contains 0 (several seeds) or |diff| <= tolerance·|large| (one seed);
    otherwise worse / better by the sign of the difference."""
    multi = len(set(small) & set(large)) > 1
    diff = paired_difference(small, large) if multi else mean_ci(
        [sum(small.values()) / len(small) - sum(large.values()) / len(large)])
    ref = sum(large.values()) / len(large)
    if diff.low is not None:
        equivalent = diff.low <= 0.0 <= diff.high
    else:
        equivalent = abs(diff.mean) <= tolerance * abs(ref)
    worse = (diff.mean > 0) if lower_is_better else (diff.mean < 0)
    verdict = "equivalent" if equivalent else ("worse" if worse else "better")
    return {"verdict": verdict, "difference": diff.to_dict(), "relative": diff.mean / ref if ref else None,
            "rule": "paired 95% CI" if multi else f"one seed, tolerance {tolerance:.0%}"}


def two_proportion_difference(p1: float, n1: int, p2: float, n2: int) -> Estimate:
    """95% CI of p1 - p2 for two accuracies measured on n1 and n2 items (Agresti & Caffo 2000:
    add one success and one failure to each group, then the Wald interval; well-behaved at 0% and
    100%). This is the noise of a finite eval set, available even with a single seed."""
    a1, a2 = (p1 * n1 + 1) / (n1 + 2), (p2 * n2 + 1) / (n2 + 2)
    half = 1.96 * math.sqrt(a1 * (1 - a1) / (n1 + 2) + a2 * (1 - a2) / (n2 + 2))
    return Estimate(p1 - p2, a1 - a2 - half, a1 - a2 + half, min(n1, n2), None)


def compare_accuracy(small: list[dict], large: list[dict], tolerance: float) -> dict:
    """Accuracy verdict (higher is better). Several seeds: paired CI across seeds. One seed: the
    two-proportion CI over the scored eval items, so a one-item difference is not called a win."""
    by_seed = lambda runs: {r["seed"]: r["accuracy"]["overall"] for r in runs}  # noqa: E731
    if len(set(by_seed(small)) & set(by_seed(large))) > 1:
        return compare(by_seed(small), by_seed(large), tolerance, lower_is_better=False)
    a, b = small[0]["accuracy"], large[0]["accuracy"]
    diff = two_proportion_difference(a["overall"], a["n"], b["overall"], b["n"])
    verdict = "equivalent" if diff.low <= 0.0 <= diff.high else ("better" if diff.mean > 0 else "worse")
    return {"verdict": verdict, "difference": diff.to_dict(),
            "relative": diff.mean / b["overall"] if b["overall"] else None,
            "rule": f"one seed: 95% two-proportion CI over {a['n']} scored items"}
