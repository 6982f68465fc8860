"""Figures of learning against forgetting, and of intruder dimensions, from the analysis model."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from lorarank.analysis.model import PolicySummary
from lorarank.analysis.stats import Estimate
from lorarank.report.plots import _colors


def _half(e: Estimate | None) -> float:
    return 0.0 if e is None or e.low is None else (e.high - e.low) / 2


def forgetting(pol: PolicySummary) -> Figure | None:
    """Learning (eval-loss gain over the base model) against forgetting (general-text loss increase),
    one point per rank, 95% CIs over seeds as error bars (Biderman et al. 2024, Fig. 1's axes)."""
    ranks = [r for r in pol.ranks if pol.rows[r].forgetting and pol.rows[r].learning_gain]
    if not ranks:
        return None
    rows, colors = pol.rows, _colors(ranks)
    fig, ax = plt.subplots(figsize=(7, 5.2))
    for r in ranks:
        f, g = rows[r].forgetting, rows[r].learning_gain
        ax.errorbar(f.mean, g.mean, xerr=_half(f), yerr=_half(g), fmt="o", ms=8, color=colors[r], capsize=3,
                    label=f"r={r}")
        ax.annotate(f"r={r}", (f.mean, g.mean), xytext=(6, 6), textcoords="offset points")
    ax.axvline(0.0, color="gray", ls="--", lw=1)
    ax.set_xlabel("forgetting: general-text loss − base model's (nats)")
    ax.set_ylabel("learning: base eval loss − eval loss (nats)")
    ax.set_title(f"Learning vs forgetting by rank (alpha policy: {pol.policy}; bars = 95% CI over seeds)",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def intruders(pol: PolicySummary) -> Figure | None:
    """Intruder dimensions per module by module type and rank, and against forgetting per rank."""
    ranks = [r for r in pol.ranks if pol.rows[r].intruders]
    if not ranks:
        return None
    rows, colors = pol.rows, _colors(ranks)
    first = rows[ranks[0]].intruders
    types = sorted(first.by_type)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(14, 4.8))
    fig.suptitle(f"Intruder dimensions (k = {first.k}, ε = {first.epsilon:g}; Shuttleworth et al. 2024; "
                 f"alpha policy: {pol.policy})", fontsize=12)
    width = 0.8 / len(ranks)
    for i, r in enumerate(ranks):
        xs = [j + (i - (len(ranks) - 1) / 2) * width for j in range(len(types))]
        ax.bar(xs, [rows[r].intruders.by_type[t] for t in types], width, color=colors[r], label=f"r={r}")
    ax.set_xticks(range(len(types)), types)
    ax.set_ylabel(f"intruders per module (of the top {first.k} directions)")
    ax.set_title("By module type and rank (mean over layers and seeds)")
    ax.grid(True, alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    with_f = [r for r in ranks if rows[r].forgetting]
    for r in with_f:
        ax2.errorbar(rows[r].intruders.per_module, rows[r].forgetting.mean, yerr=_half(rows[r].forgetting),
                     fmt="o", ms=8, color=colors[r], capsize=3, label=f"r={r}")
    ax2.set_xlabel("intruders per module")
    ax2.set_ylabel("forgetting (nats)")
    ax2.set_title("Intruders against forgetting" if with_f else "No forgetting measured")
    ax2.grid(True, alpha=0.3)
    if with_f:
        ax2.legend(fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig
