"""Statistics on scipy.stats: t confidence intervals, paired differences, line fits, knees, TOST.

With n seeds the 95% confidence interval of a mean is  x̄ ± t_{0.975, n-1} · s / √n  (Student t).
Rank comparisons are paired: every rank of a seed saw the same data order and initialisation
stream, so the CI of the per-seed difference is much tighter than that of two independent means.
Quantiles and tests come from scipy.stats, the library results are usually checked against.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


def t_critical(df: int, level: float = 0.95) -> float:
    """Two-sided Student t critical value t_{(1+level)/2, df} (t_{0.975, df} = 2.262 at df = 9)."""
    if df < 1:
        raise ValueError("need at least 2 values for a confidence interval")
    return float(stats.t.ppf((1 + level) / 2, df))


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
    n: int = 0
    slope_low: float | None = None  # 95% CI of the slope (t with n - 2 df); None with two points
    slope_high: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def fit_line(xs: list[float], ys: list[float], level: float = 0.95) -> LineFit:
    """Ordinary least squares y = intercept + slope·x (scipy.stats.linregress), with R² and the
    CI of the slope at `level`: slope ± t_{(1+level)/2, n-2} · SE(slope)."""
    n = len(xs)
    if n < 2 or len(set(xs)) < 2:
        raise ValueError("need at least two distinct x values")
    fit = stats.linregress(xs, ys)
    exact = len(set(ys)) == 1  # constant y: a perfect fit (linregress returns NaN for r and SE)
    r2 = 1.0 if exact else float(fit.rvalue) ** 2
    if n < 3:
        return LineFit(float(fit.intercept), float(fit.slope), r2, n)
    half = 0.0 if exact else t_critical(n - 2, level) * float(fit.stderr)
    return LineFit(float(fit.intercept), float(fit.slope), r2, n, float(fit.slope) - half, float(fit.slope) + half)


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


def compare(small: dict[int, float], large: dict[int, float], tolerance: float, lower_is_better: bool = True,
            margin: float | None = None, margin_text: str | None = None) -> dict:
    """Verdict for "does the small rank do as well as the large rank?" on one metric.

    Several seeds (paired over the seeds both have):
    - worse / better: the 95% CI of (small - large) excludes 0;
    - equivalent: otherwise, when a paired TOST puts the difference within ±margin (the
      recommendation's δ); a CI that merely contains 0 is absence of evidence, not equivalence;
    - inconclusive: neither (no difference shown, none ruled out), or no margin to test against.
    One seed: no noise estimate, so tied when |diff| <= tolerance·|large|, else worse / better."""
    shared = set(small) & set(large)
    multi = len(shared) > 1
    diff = paired_difference(small, large) if multi else mean_ci(
        [sum(small.values()) / len(small) - sum(large.values()) / len(large)])
    ref = sum(large.values()) / len(large)
    worse = (diff.mean > 0) if lower_is_better else (diff.mean < 0)
    sign = "worse" if worse else "better"
    if not multi:
        verdict = "tied" if abs(diff.mean) <= tolerance * abs(ref) else sign
        rule = f"one seed, no noise estimate: tied within a tolerance of {tolerance:.0%}"
    elif not diff.low <= 0.0 <= diff.high:
        verdict, rule = sign, "paired 95% CI across seeds"
    elif margin is None:
        verdict, rule = "inconclusive", "paired 95% CI across seeds; no margin to test equivalence against"
    else:
        eq = tost([small[s] - large[s] for s in sorted(shared)], margin)
        verdict = "equivalent" if eq.equivalent else "inconclusive"
        p = f", p = {eq.p:.3g}" if eq.p is not None else ""
        rule = f"paired 95% CI across seeds; equivalence by paired TOST within δ = {margin_text or f'{margin:.4g}'}{p}"
    return {"verdict": verdict, "difference": diff.to_dict(), "relative": diff.mean / ref if ref else None,
            "rule": rule}


def two_proportion_difference(p1: float, n1: int, p2: float, n2: int) -> Estimate:
    """95% CI of p1 - p2 for two accuracies measured on n1 and n2 items (Agresti & Caffo 2000:
    add one success and one failure to each group, then the Wald interval; well-behaved at 0% and
    100%). This is the noise of a finite eval set, available even with a single seed."""
    a1, a2 = (p1 * n1 + 1) / (n1 + 2), (p2 * n2 + 1) / (n2 + 2)
    half = float(stats.norm.ppf(0.975)) * math.sqrt(a1 * (1 - a1) / (n1 + 2) + a2 * (1 - a2) / (n2 + 2))
    return Estimate(p1 - p2, a1 - a2 - half, a1 - a2 + half, min(n1, n2), None)


def compare_accuracy(small: list[dict], large: list[dict], tolerance: float, margin: float | None = None) -> dict:
    """Accuracy verdict (higher is better). Several seeds: as `compare`, with the accuracy margin.
    One seed: the two-proportion CI over the scored eval items, so a one-item difference is not
    called a win; a CI containing 0 is inconclusive (one seed tests no equivalence)."""
    by_seed = lambda runs: {r["seed"]: r["accuracy"]["overall"] for r in runs}  # noqa: E731
    if len(set(by_seed(small)) & set(by_seed(large))) > 1:
        return compare(by_seed(small), by_seed(large), tolerance, lower_is_better=False, margin=margin,
                       margin_text=f"{100 * margin:.1f} points" if margin is not None else None)
    a, b = small[0]["accuracy"], large[0]["accuracy"]
    diff = two_proportion_difference(a["overall"], a["n"], b["overall"], b["n"])
    verdict = "inconclusive" if diff.low <= 0.0 <= diff.high else ("better" if diff.mean > 0 else "worse")
    return {"verdict": verdict, "difference": diff.to_dict(),
            "relative": diff.mean / b["overall"] if b["overall"] else None,
            "rule": f"one seed: 95% two-proportion CI over {a['n']} scored items"}


# ---------------------------------------------------------------------------------------------- equivalence


@dataclass(frozen=True)
class Equivalence:
    """Two one-sided tests (TOST) of |mean(d)| < margin on paired differences d."""
    n: int
    mean: float | None
    low: float | None  # 90% CI of mean(d) (1 - 2α); equivalent <=> (low, high) inside (-margin, margin)
    high: float | None
    p_lower: float | None  # H0: mean(d) <= -margin
    p_upper: float | None  # H0: mean(d) >= +margin
    p: float | None  # max(p_lower, p_upper): the TOST p-value
    margin: float
    equivalent: bool | None  # None: no test possible (see reason)
    reason: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def tost(differences: list[float], margin: float, alpha: float = 0.05) -> Equivalence:
    """Paired equivalence test (Schuirmann 1987) of the per-seed differences d_s within ±margin.

    Failing to find a difference is no evidence of equivalence; TOST tests it directly:
        H0⁻: mean(d) <= -δ  vs  mean(d) > -δ     scipy.stats.ttest_1samp(d, -δ, alternative="greater")
        H0⁺: mean(d) >= +δ  vs  mean(d) < +δ     scipy.stats.ttest_1samp(d, +δ, alternative="less")
    Equivalent at level α when both reject, i.e. p = max(p⁻, p⁺) < α, which is the same as the
    (1 - 2α) CI  mean ± t_{1-α, n-1}·s/√n  lying inside (-δ, δ).

    Edge cases: one difference has no variance estimate, so no test (equivalent None). Differences
    that are all 0 (the best rank against itself, or identical values on every seed) are equivalent
    by definition. Differences that are all equal but not 0 (coarse metrics such as accuracy on a few
    dozen items repeat values) have no spread to estimate the seed noise from, so no test either:
    the limit of the t-test as the variance goes to 0 would call two seeds decisive. A non-finite
    difference (a diverged or missing run) gives no test.
    """
    if not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"equivalence margin must be a positive number, got {margin}")
    d = np.asarray(differences, dtype=float)
    n = int(d.size)
    if n == 0:
        return Equivalence(0, None, None, None, None, None, None, margin, None, "no paired values")
    if not np.isfinite(d).all():
        return Equivalence(n, None, None, None, None, None, None, margin, None,
                           "a non-finite value (diverged or missing run): no test")
    mean = float(d.mean())
    if n == 1:
        return Equivalence(1, mean, None, None, None, None, None, margin, None,
                           "one seed gives no equivalence test: no estimate of the seed noise")
    if np.ptp(d) == 0:
        if mean == 0:
            return Equivalence(n, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, margin, True,
                               "all differences are 0 (identical values): equivalent by definition")
        return Equivalence(n, mean, None, None, None, None, None, margin, None,
                           "all differences are equal: no spread to estimate the seed noise from, so no test")
    p_lower = float(stats.ttest_1samp(d, -margin, alternative="greater").pvalue)
    p_upper = float(stats.ttest_1samp(d, margin, alternative="less").pvalue)
    half = t_critical(n - 1, 1 - 2 * alpha) * float(d.std(ddof=1)) / math.sqrt(n)
    p = max(p_lower, p_upper)
    return Equivalence(n, mean, mean - half, mean + half, p_lower, p_upper, p, margin, p < alpha)
