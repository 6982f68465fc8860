"""The original experiment's expectations, each judged from comparison outcomes (stats.compare).

The original expected rank 8 to underfit, 16 to be a good balance, 32 the standard choice and 64 a
plateau over 32. Here each becomes a claim about this data and budget that one outcome decides:
- 8 may underfit: CONFIRMED when rank 8 is worse than the best rank, REFUTED when the recommendation's
  fixed sequence reaches it and finds it equivalent (or it is the best);
- 16 a good balance, 32 the standard choice: CONFIRMED when the sequence finds it equivalent to the
  best (or it is the best), REFUTED when it is worse;
- 64 may not improve much over 32: rank 64 against rank 32 with the same δ; CONFIRMED when
  equivalent or worse, REFUTED when better beyond the margin.
Everything else (an untested or inconclusive outcome, or a rank equivalent on its own below where
the sequence stopped) is INCONCLUSIVE.
"""

from __future__ import annotations

from lorarank.analysis.model import Hypothesis, Verdict
from lorarank.analysis.recommend import Recommendation
from lorarank.analysis.stats import Comparison, Outcome, compare
from lorarank.analysis.units import Units

CLAIMS = {8: "minimal adaptation, may underfit (on this data and budget: worse than the best rank)",
          16: "a good balance (on this data and budget: as good as the best rank, within δ)",
          32: "the standard choice (on this data and budget: as good as the best rank, within δ)",
          64: "maximum capacity, may not improve much over 32 (on this data and budget: within δ of 32, or worse)"}
LOSS = Units(higher_is_better=False)


def _missing(rank: int, why: str) -> Hypothesis:
    return Hypothesis(rank, CLAIMS[rank], Verdict.INCONCLUSIVE, why)


def _against_best(rec: Recommendation, rank: int) -> tuple[bool, Comparison, str]:
    """(shown equivalent by the fixed sequence, the comparison, its evidence)."""
    c = rec.comparisons[rank]
    if rank == rec.best:  # with one seed "the best" is a point estimate: no claim rests on it
        return rec.tested, c, f"rank {rank} is the best rank" + ("" if rec.tested else " on one seed (untested)")
    text = f"rank {rank} − rank {rec.best} (best) = {LOSS.interval(c)}: {LOSS.outcome(c)}"
    if c.outcome.equivalent and not rec.shown_equivalent(rank):
        text += f"; the fixed sequence stopped at rank {rec.stopped_at} before reaching it, so it is not claimed"
    return rec.shown_equivalent(rank) or False, c, text


def underfit(rec: Recommendation) -> Hypothesis:
    equivalent, c, text = _against_best(rec, 8)
    worse = c.outcome is Outcome.WORSE
    verdict = Verdict.REFUTED if equivalent else Verdict.CONFIRMED if worse else Verdict.INCONCLUSIVE
    return Hypothesis(8, CLAIMS[8], verdict, text)


def as_good_as_best(rec: Recommendation, rank: int) -> Hypothesis:
    equivalent, c, text = _against_best(rec, rank)
    worse = c.outcome is Outcome.WORSE
    verdict = Verdict.CONFIRMED if equivalent else Verdict.REFUTED if worse else Verdict.INCONCLUSIVE
    return Hypothesis(rank, CLAIMS[rank], verdict, text)


def plateau(rec: Recommendation, per_seed: dict[int, dict[int, float]]) -> Hypothesis:
    c = compare(per_seed[64], per_seed[32], rec.margin, rank=64, reference_rank=32)
    if c.outcome.equivalent or c.outcome is Outcome.WORSE:
        verdict = Verdict.CONFIRMED
    else:
        verdict = Verdict.REFUTED if c.outcome is Outcome.BETTER else Verdict.INCONCLUSIVE
    return Hypothesis(64, CLAIMS[64], verdict, f"rank 64 − rank 32 = {LOSS.interval(c)}: {LOSS.outcome(c)}")


def hypotheses(rec: Recommendation | None, ranks: list[int], per_seed: dict[int, dict[int, float]]) -> list[Hypothesis]:
    if rec is None or not rec.comparisons:
        why = rec.reason if rec is not None else "no base model: no margin δ to test equivalence against"
        return [_missing(r, why) for r in CLAIMS]
    absent = lambda r: f"rank {r} was not part of this sweep"  # noqa: E731
    out = [underfit(rec) if 8 in ranks else _missing(8, absent(8))]
    out += [as_good_as_best(rec, r) if r in ranks else _missing(r, absent(r)) for r in (16, 32)]
    if 64 in ranks and 32 in ranks:
        out.append(plateau(rec, per_seed))
    else:
        out.append(_missing(64, absent(64 if 64 not in ranks else 32)))
    return out
