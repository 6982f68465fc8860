"""The "which rank" figure: a forest plot of the recommendation's comparisons (analysis model only)."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from lorarank.analysis.model import PolicySummary
from lorarank.analysis.recommend import Recommendation
from lorarank.analysis.stats import Outcome
from lorarank.report.which_rank import sequence_cell

COLORS = {Outcome.EQUIVALENT: "tab:green", Outcome.EQUIVALENT_AND_WORSE: "tab:green",
          Outcome.EQUIVALENT_AND_BETTER: "tab:green", Outcome.WORSE: "tab:red", Outcome.BETTER: "tab:blue",
          Outcome.INCONCLUSIVE: "tab:orange", Outcome.UNTESTED: "gray"}


def _forest(ax, rec: Recommendation, ranks: list[int]) -> None:
    """One row per rank: the paired difference to the best rank (rank − best) with its 90% CI, the
    ±δ band of the equivalence test, and the outcome. A rank inside the band on both ends is
    equivalent; a CI that holds 0 but leaves the band is inconclusive."""
    scale, unit = (100.0, "points") if rec.higher_is_better else (1.0, "nats")
    delta = scale * rec.margin
    ax.axvspan(-delta, delta, color="tab:green", alpha=0.12, label=f"±δ = ±{delta:.3g} {unit}")
    ax.axvline(0.0, color="black", lw=0.8)
    for y, r in enumerate(ranks):
        c = rec.comparisons[r]
        if c.mean is None:
            continue
        color = COLORS[c.outcome]
        if c.low is not None:
            ax.plot([scale * c.low, scale * c.high], [y, y], color=color, lw=2.5, solid_capstyle="butt")
        ax.plot(scale * c.mean, y, "o", color=color, ms=7, mfc="white" if c.low is None else color)
        label = sequence_cell(rec, r)
        if r == rec.recommended:
            label += " — recommended"
        elif r == rec.provisional:
            label += " — provisional pick"
        ax.annotate(label, (scale * (c.high if c.high is not None else c.mean), y), xytext=(8, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.set_yticks(range(len(ranks)), [f"r={r}" for r in ranks])
    ax.set_ylim(-0.7, len(ranks) - 0.3)
    metric = "task accuracy" if rec.higher_is_better else "eval loss"
    ax.set_xlabel(f"{metric}: rank − rank {rec.best} (best), {unit}; bars = paired 90% CI over seeds")
    pick = (f"use rank {rec.recommended}" if rec.recommended is not None else
            f"provisionally rank {rec.provisional} (untested)" if rec.provisional is not None else "no recommendation")
    ax.set_title(f"{metric}: paired difference to the best rank — {pick}", fontsize=10)
    ax.grid(True, alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="lower right")
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi + 0.35 * (hi - lo))  # room for the labels


def which_rank(pol: PolicySummary) -> Figure | None:
    """The forest plot of the eval-loss recommendation, and of the accuracy one where there is one."""
    recs = [rec for rec in (pol.recommendation, pol.recommendation_accuracy) if rec is not None and rec.comparisons]
    if not recs:
        return None
    fig, axes = plt.subplots(1, len(recs), figsize=(7.5 * len(recs), 1.2 + 0.7 * len(pol.ranks)), squeeze=False)
    for ax, rec in zip(axes[0], recs):
        _forest(ax, rec, pol.ranks)
    fig.suptitle(f"Which rank? (alpha policy: {pol.policy}; hollow points: one seed, untested)", fontsize=11)
    fig.tight_layout()
    return fig
