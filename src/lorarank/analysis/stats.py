"""Statistics on scipy.stats: t intervals, the one paired comparison, slopes over seeds, TOST, McNemar.

With n seeds the CI of a mean is  x̄ ± t_{(1+level)/2, n-1} · s / √n  (Student t).
Rank comparisons are paired: every rank of a seed saw the same data order and initialisation
stream, so the CI of the per-seed difference is much tighter than that of two independent means.
Quantiles and tests come from scipy.stats, the library results are usually checked against.

One confidence convention: every test is at α = 5%. A comparison of two ranks is two one-sided
tests, so its interval is the 90% CI (1 − 2α); a trend or a mean is two-sided, so its interval is
the 95% CI (1 − α).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np
from scipy import stats

ALPHA = 0.05  # the level of every test in the report
COMPARISON_LEVEL = 1 - 2 * ALPHA  # 90%: the CI that decides two one-sided tests at α
TWO_SIDED_LEVEL = 1 - ALPHA  # 95%: trends and means


def t_critical(df: int, level: float = TWO_SIDED_LEVEL) -> float:
    """Two-sided Student t critical value t_{(1+level)/2, df} (t_{0.975, df} = 2.262 at df = 9)."""
    if df < 1:
        raise ValueError("need at least 2 values for a confidence interval")
    return float(stats.t.ppf((1 + level) / 2, df))


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float | None  # CI at `level`; None with a single value
    high: float | None
    n: int
    std: float | None
    level: float = TWO_SIDED_LEVEL

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2


def mean_ci(values: list[float], level: float = TWO_SIDED_LEVEL) -> Estimate:
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return Estimate(mean, None, None, 1, None, level)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_critical(n - 1, level) * std / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n, std, level)


def paired_difference(a: dict[int, float], b: dict[int, float]) -> Estimate | None:
    """Mean and 95% CI of a[seed] - b[seed] over the seeds both have; None when they share none."""
    common = sorted(set(a) & set(b))
    if not common:
        return None
    return mean_ci([a[s] - b[s] for s in common])


@dataclass(frozen=True)
class LineFit:
    intercept: float
    slope: float
    r2: float
    n: int = 0
    slope_low: float | None = None  # 95% CI of the slope (t with n - 2 df); None with two points
    slope_high: float | None = None


def fit_line(xs: list[float], ys: list[float], level: float = TWO_SIDED_LEVEL) -> LineFit:
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


# ---------------------------------------------------------------------------------------------- slopes over seeds


@dataclass(frozen=True)
class SeedSlopes:
    """A trend across ranks fitted per seed, then combined over seeds by a one-sample t test.

    The ranks of one seed share its data order and initialisation, so its points are not independent
    replicates: pooling every trial in one least-squares fit with n − 2 df overstates the evidence.
    Each seed gives one slope b_s; the seeds are the replicates:
        mean(b) ± t_{(1+level)/2, S-1} · sd(b) / √S,   p from scipy.stats.ttest_1samp(b, 0)."""

    per_seed: dict[int, float]  # seed -> slope of its own least-squares fit
    intercepts: dict[int, float]  # seed -> intercept of that fit
    mean: float
    low: float | None  # CI of mean(b) at `level`; None with one seed
    high: float | None
    p: float | None  # two-sided p of mean(b) = 0; None with one seed or no spread
    level: float

    @property
    def n(self) -> int:
        return len(self.per_seed)


def slopes_over_seeds(points: dict[int, list[tuple[float, float]]],
                      level: float = TWO_SIDED_LEVEL) -> SeedSlopes | None:
    """points: seed -> [(x, y)] of that seed's trials. Seeds with fewer than two distinct x are left
    out (no slope); None when no seed is left."""
    fits = {s: stats.linregress(*zip(*pts)) for s, pts in sorted(points.items())
            if len({x for x, _ in pts}) >= 2}
    if not fits:
        return None
    slopes = {s: float(f.slope) for s, f in fits.items()}
    est = mean_ci(list(slopes.values()), level)
    p = None
    if est.std and est.std > 1e-12 * max(1.0, abs(est.mean)):  # no spread: scipy's t test is undefined
        p = float(stats.ttest_1samp(list(slopes.values()), 0.0).pvalue)
    return SeedSlopes(slopes, {s: float(f.intercept) for s, f in fits.items()}, est.mean, est.low, est.high, p,
                      level)


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


def tost(differences: list[float], margin: float, alpha: float = ALPHA) -> Equivalence:
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


# ---------------------------------------------------------------------------------------------- the comparison


class Outcome(str, Enum):
    """What one paired comparison of a rank with a reference rank shows (see `compare`)."""

    EQUIVALENT = "equivalent"  # the 90% CI lies inside ±δ and holds 0
    EQUIVALENT_AND_WORSE = "equivalent_and_worse"  # inside ±δ, and above 0 (for a loss): both hold
    EQUIVALENT_AND_BETTER = "equivalent_and_better"  # inside ±δ, and on the better side of 0
    WORSE = "worse"  # beyond 0 on the worse side, and not inside ±δ
    BETTER = "better"  # beyond 0 on the better side, and not inside ±δ
    INCONCLUSIVE = "inconclusive"  # holds 0 and reaches past δ: nothing shown either way
    UNTESTED = "untested"  # no seed noise to test with (one shared seed, no spread, a non-finite value)

    @property
    def equivalent(self) -> bool:
        return self in (Outcome.EQUIVALENT, Outcome.EQUIVALENT_AND_WORSE, Outcome.EQUIVALENT_AND_BETTER)

    @property
    def shown_worse(self) -> bool:
        return self in (Outcome.WORSE, Outcome.EQUIVALENT_AND_WORSE)

    @property
    def shown_better(self) -> bool:
        return self in (Outcome.BETTER, Outcome.EQUIVALENT_AND_BETTER)


@dataclass(frozen=True)
class Comparison:
    """Rank `rank` against rank `reference` on one metric, paired over the seeds both have.

    mean, low, high: the mean per-seed difference (rank − reference, in the metric's units) and its
    90% CI. margin: δ (None when there is no base model to measure it from: no equivalence test).
    With one shared seed the outcome is UNTESTED and `provisional_within_margin` holds the point
    estimate against δ, a reading no test supports."""

    rank: int
    reference: int
    seeds: list[int]
    mean: float | None
    low: float | None
    high: float | None
    margin: float | None
    p_tost: float | None
    outcome: Outcome
    higher_is_better: bool
    provisional_within_margin: bool | None = None
    reason: str | None = None
    level: float = COMPARISON_LEVEL

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2


def compare(values: dict[int, float], reference: dict[int, float], margin: float | None, *, rank: int,
            reference_rank: int, higher_is_better: bool = False, alpha: float = ALPHA) -> Comparison:
    """The one comparison behind every "is rank r as good as rank s?" in the report.

    d_s = M(rank, s) − M(reference, s) over the shared seeds s; the (1 − 2α) CI of mean(d) decides:
    inside ±δ → equivalent (TOST at α, `tost`), and also worse / better when it excludes 0;
    beyond 0 and not inside ±δ → worse / better (a one-sided t test at α); else inconclusive.
    A CI that merely holds 0 is inconclusive: absence of evidence is not equivalence."""
    seeds = sorted(set(values) & set(reference))
    common = dict(rank=rank, reference=reference_rank, seeds=seeds, margin=margin, higher_is_better=higher_is_better,
                  level=1 - 2 * alpha)
    if rank == reference_rank:
        return Comparison(**common, mean=0.0, low=0.0, high=0.0, p_tost=0.0, outcome=Outcome.EQUIVALENT,
                          reason="the reference itself")
    d = np.asarray([values[s] - reference[s] for s in seeds], dtype=float)
    if d.size == 0 or not np.isfinite(d).all():
        why = "no shared seed" if d.size == 0 else "a non-finite value (diverged or missing run)"
        return Comparison(**common, mean=None, low=None, high=None, p_tost=None, outcome=Outcome.UNTESTED,
                          reason=why + ": no test")
    mean = float(d.mean())
    if d.size == 1 or (np.ptp(d) == 0 and mean != 0):
        why = ("one seed: no estimate of the seed noise" if d.size == 1 else
               "all differences are equal: no spread to estimate the seed noise from")
        return Comparison(**common, mean=mean, low=None, high=None, p_tost=None, outcome=Outcome.UNTESTED,
                          provisional_within_margin=None if margin is None else abs(mean) < margin,
                          reason=why + ", so no test")
    half = t_critical(d.size - 1, 1 - 2 * alpha) * float(d.std(ddof=1)) / math.sqrt(d.size)
    low, high = mean - half, mean + half
    eq = tost(list(d), margin, alpha) if margin is not None else None
    worse, better = (high < 0, low > 0) if higher_is_better else (low > 0, high < 0)
    if eq is not None and eq.equivalent:
        outcome = (Outcome.EQUIVALENT_AND_WORSE if worse else Outcome.EQUIVALENT_AND_BETTER if better
                   else Outcome.EQUIVALENT)
    else:
        outcome = Outcome.WORSE if worse else Outcome.BETTER if better else Outcome.INCONCLUSIVE
    return Comparison(**common, mean=mean, low=low, high=high, p_tost=eq.p if eq else None, outcome=outcome)


def seeds_to_show(std: float, margin: float, alpha: float = ALPHA, most: int = 1000) -> int | None:
    """The fewest seeds whose (1 − 2α) CI of a zero mean difference, ± t_{1−α, n−1}·sd/√n, fits
    inside ±margin: the seeds an equivalence test at this seed noise would need at best. None when
    more than `most` would be needed."""
    for n in range(2, most + 1):
        if t_critical(n - 1, 1 - 2 * alpha) * std / math.sqrt(n) < margin:
            return n
    return None


# ---------------------------------------------------------------------------------------------- eval items


def two_proportion_difference(p1: float, n1: int, p2: float, n2: int, level: float = COMPARISON_LEVEL) -> Estimate:
    """CI of p1 - p2 for two accuracies measured on n1 and n2 items (Agresti & Caffo 2000: add one
    success and one failure to each group, then the Wald interval; well-behaved at 0% and 100%).
    It treats the two item sets as independent; on the same items (paired) it is conservative."""
    a1, a2 = (p1 * n1 + 1) / (n1 + 2), (p2 * n2 + 1) / (n2 + 2)
    half = float(stats.norm.ppf((1 + level) / 2)) * math.sqrt(a1 * (1 - a1) / (n1 + 2) + a2 * (1 - a2) / (n2 + 2))
    return Estimate(p1 - p2, a1 - a2 - half, a1 - a2 + half, min(n1, n2), None, level)


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test of two models scored on the same items: of the items exactly one of them
    gets right (b for the first, c for the second), is the split 50:50? p = binomtest(b, b + c, ½)."""

    only_first: int  # b
    only_second: int  # c
    n_items: int
    p: float


def mcnemar(first: list[bool], second: list[bool]) -> McNemar:
    if len(first) != len(second) or not first:
        raise ValueError("McNemar needs the same, non-empty list of items scored by both")
    b = sum(1 for x, y in zip(first, second) if x and not y)
    c = sum(1 for x, y in zip(first, second) if y and not x)
    p = float(stats.binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    return McNemar(b, c, len(first), p)
