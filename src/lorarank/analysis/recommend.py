"""Which rank should I use? The smallest rank statistically equivalent to the best one.

Rule: best = the rank with the best mean metric over seeds. A rank r is equivalent to it when the
two one-sided tests (TOST, Schuirmann 1987; `stats.tost`) on the paired per-seed differences
    d_s = M(r, s) − M(best, s)
put the 90% CI of mean(d) inside (−δ, δ). The recommendation is the smallest equivalent rank.

The margin δ is a share ε of the best rank's improvement over the base model,
    δ = ε · (M_base − M_best)   for a loss        δ = ε · (M_best − M_base)   for an accuracy,
so "within 5%" means "loses at most 5% of what fine-tuning gained". A share of M_best itself loses
its meaning when losses approach zero (0.0017 vs 0.0004 nats is a 300% "difference" on a task every
rank has learned). The base model has no seed, so M_base is one number.

What it is not: the best rank, or a rank that transfers to other data. It is a statement about this
data, budget and policy (steps, learning rate, alpha policy), at the chosen margin.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from lorarank.analysis.stats import Equivalence, tost

DEFAULT_SHARE = 0.05  # ε: a rank may lose at most 5% of the best rank's improvement over the base model
SETTLE_SEEDS = 3  # the fewest seeds that give TOST a usable variance estimate (t_{0.95, 2} = 2.92)


@dataclass(frozen=True)
class Recommendation:
    metric: str  # "eval_loss" | "accuracy" | ...
    higher_is_better: bool
    recommended: int | None  # the smallest rank shown equivalent to the best; None: see reason
    best: int | None  # the rank with the best mean (None when no rank has finite values)
    base: float  # the base model's metric
    improvement: float | None  # best rank's gain over the base model, in the metric's units
    margin_share: float  # ε
    margin: float | None  # δ = ε·improvement, in the metric's units (nats for a loss)
    tests: dict[int, Equivalence]  # per rank: TOST of (rank − best) within ±δ
    rule: str  # the rule in words
    tested: bool  # True when the equivalence tests could run (at least two seeds)
    reason: str | None = None  # why there is no tested recommendation
    provisional: int | None = None  # one seed: smallest rank within ±δ of the best, untested
    settle_seeds: int | None = None  # one seed: rerun with this many seeds ...
    settle_command: str | None = None  # ... with this command (the sweep resumes: finished trials are reused)
    means: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("tests", "means"):  # JSON object keys are strings
            out[key] = {str(r): v for r, v in sorted(out[key].items())}
        return out


def recommend(per_seed: dict[int, dict[int, float]], base: float, share: float = DEFAULT_SHARE,
              higher_is_better: bool = False, metric: str = "eval_loss", alpha: float = 0.05) -> Recommendation:
    """The smallest rank whose metric is TOST-equivalent to the best rank's within δ = ε·improvement.

    per_seed: rank -> {seed: metric}; base: the base model's metric; share: ε; higher_is_better:
    False for a loss, True for an accuracy. Ranks with a non-finite value (a diverged trial) cannot be
    the best and get no test."""
    if not 0 < share < 1:
        raise ValueError(f"margin share must be in (0, 1), got {share}")
    sign = -1.0 if higher_is_better else 1.0  # sign·metric: lower is better
    finite = {r: v for r, v in per_seed.items() if v and all(math.isfinite(x) for x in v.values())}
    means = {r: sum(v.values()) / len(v) for r, v in finite.items()}
    common = dict(metric=metric, higher_is_better=higher_is_better, base=base, margin_share=share, means=means,
                  rule=_rule(share, higher_is_better, alpha))
    if not means:
        return Recommendation(**common, recommended=None, best=None, improvement=None, margin=None, tests={},
                              tested=False, reason="no rank has a finite value (every trial failed or diverged)")
    best = min(means, key=lambda r: (sign * means[r], r))
    improvement = sign * (base - means[best])
    if not improvement > 0:
        why = (f"no rank improved on the base model ({metric} {base:.4g} vs the best rank's {means[best]:.4g}): "
               f"a margin relative to the improvement means nothing")
        return Recommendation(**common, recommended=None, best=best, improvement=improvement, margin=None,
                              tests={}, tested=False, reason=why)
    margin = share * improvement
    tests = {r: _test(per_seed[r], per_seed[best], r == best, margin, alpha) for r in sorted(per_seed)}
    if len(per_seed) == 1:
        return Recommendation(**common, recommended=None, best=best, improvement=improvement, margin=margin,
                              tests=tests, tested=False, reason=f"a single rank ({best}): nothing to compare")
    if any(t.n > 1 for r, t in tests.items() if r != best):
        return Recommendation(**common, recommended=min(r for r, t in tests.items() if t.equivalent), best=best,
                              improvement=improvement, margin=margin, tests=tests, tested=True)
    within = [r for r in means if abs(means[r] - means[best]) < margin]
    return Recommendation(**common, recommended=None, best=best, improvement=improvement, margin=margin,
                          tests=tests, tested=False,
                          reason="one seed gives no equivalence test: the seed noise is unknown",
                          provisional=min(within), settle_seeds=SETTLE_SEEDS,
                          settle_command=f"lorarank run <the same options> --seeds {SETTLE_SEEDS}")


def _test(values: dict[int, float], best_values: dict[int, float], is_best: bool, margin: float,
          alpha: float) -> Equivalence:
    """TOST of rank − best over the seeds both have; the best rank is equivalent to itself."""
    if is_best:
        return Equivalence(len(values), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, margin, True, "the best rank itself")
    seeds = sorted(set(values) & set(best_values))
    return tost([values[s] - best_values[s] for s in seeds], margin, alpha)


def _rule(share: float, higher_is_better: bool, alpha: float) -> str:
    gain = "best − base" if higher_is_better else "base − best"
    return (f"the smallest rank whose paired per-seed difference to the best rank has its {1 - 2 * alpha:.0%} CI "
            f"inside ±δ (TOST at {alpha:.0%}), δ = {share:.0%} of the best rank's improvement over the base model "
            f"({gain})")
