"""The README's decision sections: which rank to use and its price, forgetting and intruder
dimensions, capacity. Words and tables only; every verdict comes from the analysis model."""

from __future__ import annotations

from lorarank.analysis.model import Analysis, AssociationVerdict, PolicySummary, Trend, TrendVerdict
from lorarank.analysis.recommend import Recommendation
from lorarank.analysis.stats import Comparison, Outcome
from lorarank.analysis.units import Units
from lorarank.report.fmt import fmt_est

MIB = 2 ** 20
GIB = 2 ** 30
DOC = "docs/concepts/choosing-a-rank.md"
LOSS = Units(higher_is_better=False)
CONVENTION = ("Every test in this report is at α = 5%. A comparison of two ranks is two one-sided tests, so the "
              "interval next to it is its 90% CI; a trend or a mean over seeds is two-sided, so its interval (±) is "
              "the 95% CI. Each interval is printed next to the decision it made.")

SHORT = {Outcome.EQUIVALENT: "equivalent", Outcome.EQUIVALENT_AND_WORSE: "equivalent, and measurably worse",
         Outcome.EQUIVALENT_AND_BETTER: "equivalent, and measurably better", Outcome.WORSE: "worse",
         Outcome.BETTER: "better", Outcome.INCONCLUSIVE: "inconclusive", Outcome.UNTESTED: "untested"}


def sequence_cell(rec: Recommendation, r: int) -> str:
    """The outcome of rank r against the best, and where the fixed sequence left it."""
    c = rec.comparisons[r]
    if r == rec.best:
        return "best"
    if c.outcome is Outcome.UNTESTED:
        if c.provisional_within_margin is None:
            return "untested"
        return f"untested: {'within' if c.provisional_within_margin else 'beyond'} δ (provisional)"
    text = SHORT[c.outcome]
    if r < rec.best and r not in rec.sequence:
        text += f"; not reached (the sequence stopped at rank {rec.stopped_at})"
    elif r == rec.stopped_at:
        text += "; the sequence stops here"
    return text


def price_table(pol: PolicySummary) -> list[str]:
    rec = pol.recommendation
    lines = ["| Rank | Trainable params | Adapter (MiB) | Training time (s) | Peak memory (GiB) | Eval loss | "
             "vs best (mean, 90% CI) | Outcome against the best |",
             "|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in pol.ranks:
        row = pol.rows[r]
        c = rec.comparisons.get(r) if rec else None
        adapter = f"{row.adapter_bytes / MIB:.2f}" if row.adapter_bytes else "n/a"
        memory = f"{row.peak_memory_bytes.mean / GIB:.2f}" if row.peak_memory_bytes else "n/a"
        diff = "best" if rec and r == rec.best else LOSS.interval(c) if c else "n/a"
        outcome = sequence_cell(rec, r) if c else "n/a"
        lines.append(f"| {r} | {row.trainable_params:,} | {adapter} | {fmt_est(row.training_time_seconds, 1)} | "
                     f"{memory} | {fmt_est(row.final_eval_loss)} | {diff} | {outcome} |")
    return lines


def noise_line(rec: Recommendation) -> str | None:
    """What these seeds could have shown on the recommendation's metric."""
    n = rec.noise
    if n is None:
        return None
    u = Units(rec.higher_is_better)
    need = (f"an equivalence test within δ = {u.size(rec.margin)} {u.name} needs at least {n.seeds_for_margin} seeds "
            "at this noise (and more if the ranks differ)" if n.seeds_for_margin else
            f"no practical number of seeds fits an equivalence test within δ = {u.size(rec.margin)} {u.name} at "
            "this noise")
    return (f"What these {n.seeds} seeds can show on {u.metric}: the paired differences to the best rank scatter with "
            f"an SD of {u.size(n.sd)} {u.name}, so a difference smaller than about {u.size(n.detectable)} {u.name} "
            f"cannot be shown; {need}.")


def which_rank_section(analysis: Analysis, figure: str | None) -> list[str]:
    lines = ["## Which rank should I use?", ""]
    if figure:
        lines += [f"![Paired difference of each rank to the best rank, 90% CI, and the ±δ band]({figure})", ""]
    for pol in analysis.policies.values():
        label = f" (alpha policy `{pol.policy}`)" if len(analysis.policies) > 1 else ""
        if pol.recommendation is None:
            lines += [f"No recommendation{label}: the base model's eval loss, the reference for the margin, "
                      "is missing.", ""]
            continue
        lines += [f"On eval loss{label}: {pol.recommendation.lead}", ""]
        if pol.recommendation_accuracy:
            lines += [f"On task accuracy{label}: {pol.recommendation_accuracy.lead}", ""]
        for rec in (pol.recommendation, pol.recommendation_accuracy):
            line = noise_line(rec) if rec else None
            if line:
                lines += [line, ""]
        lines += [f"The price of each rank{label}:", ""] + price_table(pol) + [""]
    lines += [f"Rule: {_first_rule(analysis)}. Equivalent means \"within the margin on this data, budget and "
              f"policy\", not \"the best rank\" and not \"good for other tasks\"; see `{DOC}` in the lorarank "
              "repository. The margin is `report.equivalence_margin`. " + CONVENTION, ""]
    return lines


def _first_rule(analysis: Analysis) -> str:
    recs = [p.recommendation for p in analysis.policies.values() if p.recommendation]
    return recs[0].rule if recs else "no recommendation could be made"


def recommendation_line(analysis: Analysis) -> str:
    """The last line `lorarank run` prints."""
    parts = []
    for pol in analysis.policies.values():
        rec = pol.recommendation
        label = f" ({pol.policy})" if len(analysis.policies) > 1 else ""
        if rec is not None and rec.recommended is not None:
            parts.append(f"use rank {rec.recommended}{label}: the smallest rank equivalent to the best "
                         f"(rank {rec.best}) within {abs(rec.margin):.4g} nats of eval loss")
        elif rec is not None and rec.provisional is not None:
            parts.append(f"rank {rec.provisional}{label}, provisionally: untested with one seed; rerun with "
                         f"--seeds {rec.settle_seeds} to test it")
        else:
            parts.append(f"no recommendation{label}" + (f": {rec.reason}" if rec else ""))
    return "[lorarank] which rank: " + "; ".join(parts)


def _slopes_text(tr: Trend) -> str:
    s = tr.slopes
    per_seed = ", ".join(f"{v:+.4f}" for v in s.per_seed.values())
    ci = f", {s.level:.0%} CI {s.low:+.4f} .. {s.high:+.4f} over {s.n} seeds" if s.low is not None else ", one seed"
    return f"slope {s.mean:+.4f} per doubling of the rank{ci} (fitted per seed: {per_seed})"


def trend_words(tr: Trend | None, grows: str, shrinks: str) -> str:
    if tr is None:
        return "not measured"
    if tr.verdict is TrendVerdict.NONE:
        return f"none at any rank (0 in all {tr.n_trials} trials)"
    words = {TrendVerdict.GROWS: grows, TrendVerdict.SHRINKS: shrinks,
             TrendVerdict.NOT_SHOWN: "not shown (the interval holds 0)",
             TrendVerdict.UNTESTED: "untested with one seed (no interval)"}[tr.verdict]
    return f"{words}: {_slopes_text(tr)}"


ASSOCIATION_WORDS = {AssociationVerdict.TOGETHER: "yes, they go together",
                     AssociationVerdict.OPPOSITE: "they go in opposite directions",
                     AssociationVerdict.NO_ASSOCIATION: "no association shown",
                     AssociationVerdict.UNTESTED: "untested (one of them is constant)"}


def forgetting_section(analysis: Analysis, pol: PolicySummary) -> list[str]:
    rows, base = pol.rows, analysis.baseline
    if not any(rows[r].general_loss for r in pol.ranks):
        return ["No general-text loss was measured (`eval.general_text: none`)."]
    source = (base.general_text_source if base else None) or "general text"
    measured = base is not None and base.general_loss is not None
    base_text = f"{base.general_loss:.4f}" if measured else "not measured, so no forgetting"
    lines = [f"Loss on held-out general text ({source}; base model {base_text}) after training: an increase is "
             "forgetting (Biderman et al. 2024, \"LoRA Learns Less and Forgets Less\"). Learning = the eval-loss "
             "gain over the base model. Intruder dimensions (Shuttleworth et al. 2024): top singular vectors of "
             "W + ΔW unlike every singular vector of W.", "",
             "| Rank | General loss | Forgetting | Learning | Intruders per module |", "|---:|---:|---:|---:|---:|"]
    for r in pol.ranks:
        row = rows[r]
        intr = f"{row.intruders.per_module:.2f}" if row.intruders else "n/a"
        lines.append(f"| {r} | {fmt_est(row.general_loss)} | {fmt_est(row.forgetting)} | "
                     f"{fmt_est(row.learning_gain)} | {intr} |")
    words = trend_words(pol.forgetting_trend, "yes, forgetting grows with rank", "no, forgetting shrinks with rank")
    lines += ["", f"- Does higher rank forget more? {words}."]
    with_intr = [r for r in pol.ranks if rows[r].intruders]
    if with_intr:
        first = rows[with_intr[0]].intruders
        lines += [f"- Do intruder dimensions grow with rank (k = {first.k}, ε = {first.epsilon:g})? "
                  f"{trend_words(pol.intruder_trend, 'yes', 'no, they shrink with rank')}."]
        a = pol.intruders_vs_forgetting
        if a is not None:
            rho = f": Spearman ρ = {a.rho:+.2f}, p = {a.p:.3g}" if a.rho is not None else ""
            lines += [f"- Do intruders go with forgetting across trials? {ASSOCIATION_WORDS[a.verdict]}{rho} "
                      f"({a.n} trials)."]
        types = sorted(first.by_type)
        lines += ["", "Intruders per module, by module type:", "",
                  "| Module | " + " | ".join(f"r={r}" for r in with_intr) + " |", "|---|" + "---:|" * len(with_intr)]
        lines += [f"| {t} | " + " | ".join(f"{rows[r].intruders.by_type[t]:.2f}" for r in with_intr) + " |"
                  for t in types]
    return lines


def _gap_cell(c: Comparison) -> str:
    if c.mean is None:
        return "n/a"
    text = LOSS.diff(c.mean) + (f" ({LOSS.diff(c.low)} .. {LOSS.diff(c.high)})" if c.low is not None else "")
    return f"**{text}**" if c.outcome is Outcome.WORSE else text


def capacity_section(pol: PolicySummary) -> list[str]:
    rows, top = pol.rows, max(pol.ranks)
    lines = ["LoRA Without Regret (2025): LoRA keeps up while its parameters are plentiful relative to the "
             "trained tokens; low ranks then fall behind the high-rank curve. The gap of a rank's eval loss to rank "
             f"{top}'s is compared at every eval step, paired over seeds; it is significant when its 90% CI lies "
             "above 0. The first step with a significant gap is when the gap becomes visible through the seed "
             "noise, not when it opens.", "",
             f"| Rank | Params per trained token | First step with a significant gap to rank {top} "
             "| ‖A − A₀‖ / ‖A₀‖ |",
             "|---:|---:|---:|---:|"]
    for r in pol.ranks:
        g = pol.gaps.get(r)
        if r == top:
            step = "—"
        elif g is None:
            step = "n/a"
        elif not g.tested:
            step = "untested (one seed)"
        else:
            step = "none" if g.first_significant is None else f"step {g.first_significant}"
        ppt = f"{rows[r].params_per_token:.1f}" if rows[r].params_per_token is not None else "n/a"
        lines.append(f"| {r} | {ppt} | {step} | {fmt_est(rows[r].a_relative_change, 3)} |")
    steps = sorted({t for g in pol.gaps.values() for t in g.steps})
    if steps:
        lines += ["", f"Gap to rank {top} per eval step (eval loss, mean and 90% CI over seeds; **bold** = "
                      "significant):", "",
                  "| Rank | " + " | ".join(f"step {t}" for t in steps) + " |", "|---:|" + "---:|" * len(steps)]
        for r, g in pol.gaps.items():
            cells = dict(zip(g.steps, g.gaps))
            lines.append(f"| {r} | " + " | ".join(_gap_cell(cells[t]) if t in cells else "n/a" for t in steps) + " |")
    s = pol.rank_scaling
    if s is not None:
        b = s.beta
        ci = f" ({b.level:.0%} CI {b.low:.2f} .. {b.high:.2f} over {b.n} seeds" if b.low is not None else " (one seed"
        per_seed = ", ".join(f"{v:.3f}" for v in b.per_seed.values())
        lines += ["", f"Stable rank of ΔW grows as r^β with β = {b.mean:.2f}{ci}; fitted per seed: {per_seed}), "
                      f"{s.n_trials} trials (β = 1 would be growth in proportion to the rank; Yazidi et al. report "
                      "β ≈ 0.23-0.30)."]
    return lines
