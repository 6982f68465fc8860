"""Which rank should I use? Fixed-sequence equivalence testing downward from the best rank.

Rule: best = the rank with the best mean metric over seeds. Every rank r is compared with it by the
one paired comparison (`stats.compare`): d_s = M(r, s) − M(best, s), its 90% CI against ±δ (TOST
at α = 5%, Schuirmann 1987). The recommendation tests downward from the best rank, in order of
decreasing rank, and stops at the first rank that is not equivalent; the pick is the last rank that
was. Testing in a fixed order keeps the family-wise error at α without a correction, and no rank is
skipped over: a smaller rank that happens to look equivalent below a rank that is not is not picked.

When the sequence stops at once (the next smaller rank is not equivalent), the best rank is the pick
only if that rank is shown worse: a lead that is not significant supports no recommendation, and the
report says how many seeds could settle it.

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
from dataclasses import dataclass

from lorarank.analysis.stats import ALPHA, Comparison, Outcome, compare, seeds_to_show, t_critical
from lorarank.analysis.units import Units

DEFAULT_SHARE = 0.05  # ε: a rank may lose at most 5% of the best rank's improvement over the base model
SETTLE_SEEDS = 3  # the fewest seeds that give TOST a usable variance estimate (t_{0.95, 2} = 2.92)
MOST_SEEDS_SUGGESTED = 20  # beyond this a rerun is no practical way to settle a comparison


@dataclass(frozen=True)
class Noise:
    """What these seeds could show: the pooled SD of the paired differences to the best rank, the
    smallest mean difference a one-sided test at α could call significant, t_{1−α, n−1}·sd/√n, and
    the fewest seeds whose 90% CI of a zero difference fits inside ±δ (`stats.seeds_to_show`)."""

    sd: float
    seeds: int
    detectable: float
    seeds_for_margin: int | None  # None: more than `stats.seeds_to_show` looks at


@dataclass(frozen=True)
class Recommendation:
    metric: str  # "eval_loss" | "accuracy"
    higher_is_better: bool
    recommended: int | None  # the fixed-sequence pick; None: see reason
    best: int | None  # the rank with the best mean (None when no rank has finite values)
    base: float  # the base model's metric
    improvement: float | None  # best rank's gain over the base model, in the metric's units
    margin_share: float  # ε
    margin: float | None  # δ = ε·improvement, in the metric's units (nats for a loss)
    comparisons: dict[int, Comparison]  # every rank against the best rank
    sequence: list[int]  # the ranks tested, in order: the best, then downward up to the stop
    stopped_at: int | None  # the first rank of the sequence not shown equivalent; None: none
    tested: bool  # True when the comparisons could run (at least two shared seeds)
    lead: str  # the report's sentence for this recommendation
    rule: str  # the rule in words
    reason: str | None = None  # why there is no tested recommendation
    provisional: int | None = None  # one seed: the same sequence on point estimates against δ, untested
    settle_seeds: int | None = None  # rerun with this many seeds ...
    settle_command: str | None = None  # ... with this command (the sweep resumes: finished trials are reused)
    noise: Noise | None = None
    means: dict[int, float] | None = None

    def shown_equivalent(self, rank: int) -> bool:
        """Did the fixed sequence reach `rank` and find it equivalent to the best?"""
        return (self.recommended is not None and rank in self.sequence and rank != self.stopped_at
                and self.comparisons[rank].outcome.equivalent)


def settle_command(argv: list[str] | None, seeds: int) -> str:
    """The command that reruns a sweep with `seeds` seeds (finished trials are reused)."""
    if not argv:
        return f"lorarank run <the same options> --seeds {seeds}"
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--seeds":
            skip = True
        elif not a.startswith("--seeds="):
            kept.append(a)
    return " ".join(["lorarank", *kept, "--seeds", str(seeds)])


def recommend(per_seed: dict[int, dict[int, float]], base: float, share: float = DEFAULT_SHARE,
              higher_is_better: bool = False, metric: str = "eval_loss", alpha: float = ALPHA,
              argv: list[str] | None = None) -> Recommendation:
    """Fixed-sequence TOST downward from the best rank within δ = ε·improvement.

    per_seed: rank -> {seed: metric}; base: the base model's metric; share: ε; higher_is_better:
    False for a loss, True for an accuracy; argv: the sweep's command line, for the command that
    settles an open question. Ranks with a non-finite value (a diverged trial) cannot be the best."""
    if not 0 < share < 1:
        raise ValueError(f"margin share must be in (0, 1), got {share}")
    sign = -1.0 if higher_is_better else 1.0  # sign·metric: lower is better
    finite = {r: v for r, v in per_seed.items() if v and all(math.isfinite(x) for x in v.values())}
    means = {r: sum(v.values()) / len(v) for r, v in finite.items()}
    unit = Units(higher_is_better)
    common = dict(metric=metric, higher_is_better=higher_is_better, base=base, margin_share=share, means=means,
                  rule=_rule(share, higher_is_better, alpha))
    if not means:
        why = "no rank has a finite value (every trial failed or diverged)"
        return Recommendation(**common, recommended=None, best=None, improvement=None, margin=None, comparisons={},
                              sequence=[], stopped_at=None, tested=False, reason=why,
                              lead=f"**No recommendation: {why}.**")
    best = min(means, key=lambda r: (sign * means[r], r))
    improvement = sign * (base - means[best])
    if not improvement > 0:
        why = (f"no rank improved on the base model ({metric} {base:.4g} vs the best rank's {means[best]:.4g}): "
               f"a margin relative to the improvement means nothing")
        return Recommendation(**common, recommended=None, best=best, improvement=improvement, margin=None,
                              comparisons={}, sequence=[], stopped_at=None, tested=False, reason=why,
                              lead=f"**No recommendation: {why}.**")
    margin = share * improvement
    comparisons = {r: compare(per_seed[r], per_seed[best], margin, rank=r, reference_rank=best,
                              higher_is_better=higher_is_better, alpha=alpha) for r in sorted(per_seed)}
    common.update(best=best, improvement=improvement, margin=margin, comparisons=comparisons)
    if len(per_seed) == 1:
        why = f"a single rank ({best}): nothing to compare"
        return Recommendation(**common, recommended=None, sequence=[best], stopped_at=None, tested=False, reason=why,
                              lead=f"**No recommendation: {why}.**")
    if not any(c.n > 1 for r, c in comparisons.items() if r != best):
        return _one_seed(common, argv, unit)
    return _tested(common, alpha, argv, unit)


def _sequence(best: int, comparisons: dict[int, Comparison], equivalent) -> tuple[list[int], int, int | None]:
    """(ranks tested in order, the last equivalent one, the first not equivalent or None)."""
    sequence, pick = [best], best
    for r in sorted((r for r in comparisons if r < best), reverse=True):
        sequence.append(r)
        if not equivalent(comparisons[r]):
            return sequence, pick, r
        pick = r
    return sequence, pick, None


def _tested(common: dict, alpha: float, argv: list[str] | None, unit: Units) -> Recommendation:
    best, comparisons, margin = common["best"], common["comparisons"], common["margin"]
    sequence, pick, stop = _sequence(best, comparisons, lambda c: c.outcome.equivalent)
    noise = _noise([c for r, c in comparisons.items() if r != best], margin, alpha)
    n = max(c.n for c in comparisons.values())
    delta = (f"δ = {unit.size(margin)} {unit.name} ({common['margin_share']:.0%} of the best rank's improvement of "
             f"{unit.size(common['improvement'])} {unit.name} over the base model)")
    stopped = comparisons[stop] if stop is not None else None
    stop_text = (f" The sequence stopped at rank {stop}: {unit.interval(stopped, True)}, {unit.outcome(stopped)}."
                 if stopped is not None else "")
    if pick == best and stopped is not None and stopped.outcome is not Outcome.WORSE:
        why = f"the best rank's lead over rank {stop} is not significant, and rank {stop} is not shown equivalent to it"
        seeds = noise.seeds_for_margin if noise else None
        settle = seeds if seeds is not None and n < seeds <= MOST_SEEDS_SUGGESTED else None
        lead = (f"**No recommendation on {unit.metric}: {why}.** Rank {best} has the best mean over {n} seeds; "
                f"{delta}.{stop_text}")
        if settle:
            lead += (f" At this seed noise about {settle} seeds could settle it: `{settle_command(argv, settle)}` "
                     "(finished trials are reused).")
        return Recommendation(**common, recommended=None, sequence=sequence, stopped_at=stop, tested=True,
                              reason=why, noise=noise, settle_seeds=settle,
                              settle_command=settle_command(argv, settle) if settle else None, lead=lead)
    if pick == best and stop is None:
        lead = f"**Rank {best}**: the smallest rank swept has the best {unit.metric} over {n} seeds; {delta}."
    elif pick == best:
        lead = f"**Rank {best}**, the best rank over {n} seeds: the next smaller rank is not within {delta}.{stop_text}"
    else:
        c = comparisons[pick]
        lead = (f"**Rank {pick}**: the smallest rank equivalent to the best rank ({best}) within {delta}, testing "
                f"downward from the best over {n} seeds: difference {unit.interval(c, True)}, TOST p = {c.p_tost:.3g}."
                f"{stop_text}")
    return Recommendation(**common, recommended=pick, sequence=sequence, stopped_at=stop, tested=True, noise=noise,
                          lead=lead)


def _one_seed(common: dict, argv: list[str] | None, unit: Units) -> Recommendation:
    """No seed noise: the same sequence on the point estimates against δ, labelled provisional."""
    best, comparisons, margin = common["best"], common["comparisons"], common["margin"]
    sequence, pick, stop = _sequence(best, comparisons, lambda c: bool(c.provisional_within_margin))
    why = "one seed gives no equivalence test: the seed noise is unknown"
    command = settle_command(argv, SETTLE_SEEDS)
    lead = (f"**No tested recommendation: {why}.** On this seed, rank {pick} is within δ = {unit.size(margin)} "
            f"{unit.name} ({common['margin_share']:.0%} of the best rank's improvement) of the best rank ({best}), "
            f"testing downward from it: a provisional pick that no test supports yet. To settle it: `{command}` "
            "(finished trials are reused).")
    return Recommendation(**common, recommended=None, sequence=sequence, stopped_at=stop, tested=False, reason=why,
                          provisional=pick, settle_seeds=SETTLE_SEEDS, settle_command=command, lead=lead)


def _noise(tested: list[Comparison], margin: float, alpha: float) -> Noise | None:
    """Pooled SD of the paired differences (root mean of the comparisons' variances), from the CI
    half-widths: half = t_{1−α, n−1}·sd/√n."""
    with_ci = [c for c in tested if c.low is not None and c.n > 1]
    if not with_ci:
        return None
    n = max(c.n for c in with_ci)
    sds = [c.half_width * math.sqrt(c.n) / t_critical(c.n - 1, 1 - 2 * alpha) for c in with_ci]
    sd = math.sqrt(sum(s * s for s in sds) / len(sds))
    return Noise(sd, n, t_critical(n - 1, 1 - 2 * alpha) * sd / math.sqrt(n), seeds_to_show(sd, margin, alpha))


def _rule(share: float, higher_is_better: bool, alpha: float) -> str:
    gain = "best − base" if higher_is_better else "base − best"
    return (f"test downward from the best rank and stop at the first rank whose paired per-seed difference to the "
            f"best has its {1 - 2 * alpha:.0%} CI outside ±δ (TOST at {alpha:.0%}); the pick is the last rank "
            f"inside. δ = {share:.0%} of the best rank's improvement over the base model ({gain})")
