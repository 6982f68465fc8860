"""The original experiment's expectations, each judged from a sweep's numbers.

The original expected rank 8 to underfit, 16 to be a good balance, 32 the standard choice and 64 a
plateau over 32. "Within noise" is the knee rule (analysis/stats.find_knee): the paired 95% CI across
seeds, or the relative tolerance with one seed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lorarank.analysis.model import Comparison, Hypothesis, Thresholds
from lorarank.analysis.stats import compare

if TYPE_CHECKING:
    from lorarank.analysis.model import PolicySummary

CLAIMS = {8: "minimal adaptation, may underfit complex tasks", 16: "good balance for simple tasks",
          32: "standard choice, good for most tasks", 64: "maximum capacity, may not improve much over 32"}


def _within(pol: PolicySummary, r: int) -> bool | None:
    check = pol.knee.checks.get(r) if pol.knee else None
    return None if check is None else check.within_noise


def _loss(pol: PolicySummary, r: int) -> float:
    return pol.rows[r].final_eval_loss.mean


def _inconclusive(rank: int, need: int) -> Hypothesis:
    return Hypothesis(rank, CLAIMS[rank], "INCONCLUSIVE", f"rank {need} was not part of this sweep")


def rank8(pol: PolicySummary, best: int) -> Hypothesis:
    gap = _loss(pol, 8) - _loss(pol, best)
    ev = f"eval loss {_loss(pol, 8):.4f} vs {_loss(pol, best):.4f} at the best rank {best} ({gap:+.4f})"
    worse = not _within(pol, 8)
    return Hypothesis(8, CLAIMS[8], "CONFIRMED" if worse else "REFUTED",
                      ev + ("; measurably worse than the best rank" if worse else "; within noise of the best rank"))


def rank16(pol: PolicySummary, best: int, baseline: dict | None, thresholds: Thresholds) -> Hypothesis:
    within = _within(pol, 16)
    if not baseline:
        return Hypothesis(16, CLAIMS[16], "CONFIRMED" if within else "REFUTED",
                          "within noise of the best rank" if within else "measurably worse than the best rank")
    share = (baseline["eval_loss"] - _loss(pol, 16)) / (baseline["eval_loss"] - _loss(pol, best))
    params = pol.rows[16].trainable_params / pol.rows[best].trainable_params
    return Hypothesis(16, CLAIMS[16], "CONFIRMED" if share >= thresholds.balance_share or within else "REFUTED",
                      f"rank 16 achieves {share:.0%} of the best rank's eval-loss improvement over the base model "
                      f"with {params:.0%} of its parameters (balance = at least {thresholds.balance_share:.0%})")


def rank32(pol: PolicySummary, best: int) -> Hypothesis:
    ok = _within(pol, 32)
    return Hypothesis(32, CLAIMS[32], "CONFIRMED" if ok else "REFUTED",
                      f"eval loss {_loss(pol, 32):.4f}, " + ("within noise of the best rank" if ok else
                                                              f"measurably worse than rank {best} ({_loss(pol, best):.4f})"))


def rank64(pol: PolicySummary, tolerance: float) -> Hypothesis:
    margin = pol.recommendation.margin if pol.recommendation else None
    cmp_ = compare(pol.per_seed_eval[64], pol.per_seed_eval[32], tolerance, margin=margin)
    d = cmp_["difference"]["mean"]
    verdict = "REFUTED" if cmp_["verdict"] == "better" else "CONFIRMED"  # 64 better than 32 refutes the plateau
    return Hypothesis(64, CLAIMS[64], verdict, f"rank 64 − rank 32 eval loss = {d:+.4f} ({cmp_['relative']:+.1%}): "
                      f"{'a clear improvement' if verdict == 'REFUTED' else 'no measurable improvement'} "
                      f"({cmp_['rule']})")


def hypotheses(pol: PolicySummary, baseline: dict | None, thresholds: Thresholds) -> list[Hypothesis]:
    ranks, best = pol.ranks, pol.knee.best if pol.knee else None
    out = [rank8(pol, best) if 8 in ranks and best is not None else _inconclusive(8, 8),
           rank16(pol, best, baseline, thresholds) if 16 in ranks and best is not None else _inconclusive(16, 16),
           rank32(pol, best) if 32 in ranks and best is not None else _inconclusive(32, 32)]
    if 64 not in ranks or 32 not in ranks:
        out.append(_inconclusive(64, 64 if 64 not in ranks else 32))
    else:
        out.append(rank64(pol, thresholds.tolerance))
    return out


def low_rank_hypothesis(cmp_: Comparison | None) -> str | None:
    """"If the small rank works nearly as well as the large one, the adaptation is low-dimensional"."""
    if cmp_ is None:
        return None
    return {"equivalent": "SUPPORTED", "worse": "NOT SUPPORTED at this budget",
            "better": "SUPPORTED (the small rank is even better)",
            "tied": "SUPPORTED on one seed (untested: no noise estimate)",
            "inconclusive": "UNDECIDED (no difference shown, and no equivalence either)"}[cmp_.verdict]
