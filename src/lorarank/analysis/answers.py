"""Answers 1 and 2 of the report, each a function of comparison outcomes (stats.compare).

1. Is there a point of diminishing returns? It follows from the recommendation: returns diminish
   from the recommended rank when it lies below the largest rank; "no diminishing returns shown" when
   the best rank is the largest and the next rank down is worse; inconclusive otherwise. The change
   at each step up in rank is reported with its CI, not judged by a rule of its own (a rule such as
   "the first step whose CI reaches 0" rewards noise: fewer seeds give a smaller knee).
2. Does the small rank do as well as the large one? The same comparison with the same δ; "as well
   as" is an equivalence outcome, never a CI that merely holds 0.
"""

from __future__ import annotations

from lorarank.analysis.model import DiminishingReturns, ItemTest, PairAnswer, Returns, Verdict
from lorarank.analysis.recommend import Recommendation
from lorarank.analysis.stats import Comparison, Outcome, compare, mcnemar, two_proportion_difference


def diminishing_returns(rec: Recommendation | None, ranks: list[int],
                        per_seed: dict[int, dict[int, float]]) -> DiminishingReturns:
    steps = [compare(per_seed[b], per_seed[a], None, rank=b, reference_rank=a) for a, b in zip(ranks, ranks[1:])]
    top = max(ranks)
    if len(ranks) < 2:
        return DiminishingReturns(Returns.SINGLE_RANK, None, None, steps)
    if rec is not None and not rec.tested and rec.provisional is not None:
        return DiminishingReturns(Returns.UNTESTED, rec.provisional, None, steps)
    if rec is not None and rec.recommended is not None and rec.recommended < top:
        return DiminishingReturns(Returns.DIMINISH, rec.recommended, None, steps)
    below = [r for r in ranks if r < top]
    if rec is not None and rec.comparisons and rec.best == top and rec.comparisons[below[-1]].outcome is Outcome.WORSE:
        return DiminishingReturns(Returns.NONE_SHOWN, None, rec.comparisons[below[-1]], steps)
    return DiminishingReturns(Returns.INCONCLUSIVE, None, None, steps)


def pick_pair(ranks: list[int]) -> tuple[int, int]:
    """The original asks "does rank 8 do as well as rank 64?": use those when swept, else min and max."""
    return (8, 64) if 8 in ranks and 64 in ranks else (min(ranks), max(ranks))


def claim_verdict(c: Comparison) -> Verdict:
    """"The small rank does as well as the large one": confirmed by an equivalence (or by doing
    better), refuted by a worse outcome, inconclusive otherwise (one seed included)."""
    if c.outcome.equivalent or c.outcome is Outcome.BETTER:
        return Verdict.CONFIRMED
    return Verdict.REFUTED if c.outcome is Outcome.WORSE else Verdict.INCONCLUSIVE


def pair_answer(chosen: dict[int, list[dict]], per_seed: dict[int, dict[int, float]],
                accuracy: dict[int, dict[int, float]], on_loss: Recommendation | None,
                on_acc: Recommendation | None) -> PairAnswer | None:
    ranks = sorted(chosen)
    small, large = pick_pair(ranks)
    if small == large:
        return None
    loss = compare(per_seed[small], per_seed[large], on_loss.margin if on_loss else None, rank=small,
                   reference_rank=large)
    acc, items = None, None
    if accuracy.get(small) and accuracy.get(large):
        acc = compare(accuracy[small], accuracy[large], on_acc.margin if on_acc else None, rank=small,
                      reference_rank=large, higher_is_better=True)
        if acc.n == 1:
            seed = acc.seeds[0]
            first = next(t for t in chosen[small] if t["seed"] == seed)
            second = next(t for t in chosen[large] if t["seed"] == seed)
            items = item_test(first["accuracy"], second["accuracy"])
    return PairAnswer(small, large, loss, acc, items, claim_verdict(loss))


def item_test(first: dict, second: dict) -> ItemTest:
    """McNemar's test on the items both records score, when they hold every item's correctness;
    run_data records keep the first few decoded answers only (`samples`), so on a larger eval set
    the unpaired two-proportion interval stands in, and the report says so."""
    a, b = first.get("samples") or [], second.get("samples") or []
    n = first["n"]
    same_items = [x["reference"] for x in a] == [y["reference"] for y in b]
    if len(a) == n == len(b) == second["n"] and same_items:
        return ItemTest(mcnemar([x["correct"] for x in a], [y["correct"] for y in b]), None, n, n)
    diff = two_proportion_difference(first["overall"], n, second["overall"], second["n"])
    return ItemTest(None, diff, min(len(a), len(b)) if same_items else 0, n)
