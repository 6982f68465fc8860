"""The README's decision sections: which rank to use and its price, forgetting and intruder
dimensions, capacity. Words and tables only; every verdict comes from the analysis model."""

from __future__ import annotations

from lorarank.analysis.model import Analysis, PolicySummary
from lorarank.analysis.recommend import Recommendation
from lorarank.report.fmt import fmt_est

MIB = 2 ** 20
GIB = 2 ** 30
DOC = "docs/concepts/choosing-a-rank.md"


def settle_command(sweep: dict, seeds: int) -> str:
    """The command that reruns this sweep with `seeds` seeds (finished trials are reused)."""
    argv = list(sweep.get("environment", {}).get("argv") or [])
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


def _tested(rec: Recommendation, unit: str, fmt, size) -> str:
    best, r = rec.best, rec.recommended
    n = max(t.n for t in rec.tests.values())
    if r == best and r == min(rec.tests):
        metric = "task accuracy" if rec.higher_is_better else "eval loss"
        lead = f"**Rank {r}**: the smallest rank swept has the best {metric}"
    elif r == best:
        lead = f"**Rank {r}**, the best rank: no smaller rank is shown equivalent to it"
    else:
        t = rec.tests[r]
        lead = (f"**Rank {r}**: the smallest rank equivalent to the best rank ({best}); difference "
                f"{fmt(t.mean)} (90% CI {fmt(t.low)} .. {fmt(t.high)}, TOST p = {t.p:.3g})")
    return (f"{lead}, within δ = {size(rec.margin)} {unit} ({rec.margin_share:.0%} of the best rank's "
            f"improvement of {size(rec.improvement)} {unit} over the base model), by a paired TOST over {n} seeds.")


def recommendation_text(rec: Recommendation, sweep: dict) -> str:
    if rec.higher_is_better:  # an accuracy share, shown in percentage points
        unit, fmt, size = "points", (lambda x: f"{100 * x:+.1f}"), (lambda x: f"{100 * abs(x):.1f}")
    else:
        unit, fmt, size = "nats", (lambda x: f"{x:+.4f}"), (lambda x: f"{abs(x):.4g}")
    if rec.tested:
        return _tested(rec, unit, fmt, size)
    if rec.provisional is not None:
        return (f"**No tested recommendation: {rec.reason}.** On this seed, rank {rec.provisional} is within "
                f"δ = {size(rec.margin)} {unit} ({rec.margin_share:.0%} of the best rank's improvement) of the best "
                f"rank ({rec.best}), a provisional pick that no test supports yet. To settle it: "
                f"`{settle_command(sweep, rec.settle_seeds)}` (finished trials are reused).")
    return f"**No recommendation: {rec.reason}.**"


def price_table(pol: PolicySummary) -> list[str]:
    rec = pol.recommendation
    lines = ["| Rank | Trainable params | Adapter (MiB) | Training time (s) | Peak memory (GiB) | Eval loss | "
             "vs best (mean, 90% CI) | Equivalent to best |",
             "|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in pol.ranks:
        row, t = pol.rows[r], rec.tests.get(r) if rec else None
        adapter = f"{row.adapter_bytes / MIB:.2f}" if row.adapter_bytes else "n/a"
        memory = f"{row.peak_memory_bytes.mean / GIB:.2f}" if row.peak_memory_bytes else "n/a"
        diff = "n/a"
        if rec and r == rec.best:
            diff = "best"
        elif t is not None and t.mean is not None:
            diff = f"{t.mean:+.4f}" + (f" ({t.low:+.4f} .. {t.high:+.4f})" if t.low is not None and t.n > 1 else "")
        equiv = {True: "yes", False: "no", None: "untested"}[t.equivalent] if t is not None else "n/a"
        lines.append(f"| {r} | {row.trainable_params:,} | {adapter} | {fmt_est(row.training_time_seconds, 1)} | "
                     f"{memory} | {fmt_est(row.final_eval_loss)} | {diff} | {equiv} |")
    return lines


def which_rank_section(sweep: dict, analysis: Analysis) -> list[str]:
    lines = ["## Which rank should I use?", ""]
    for pol in analysis.policies.values():
        label = f" (alpha policy `{pol.policy}`)" if len(analysis.policies) > 1 else ""
        if pol.recommendation is None:
            lines += [f"No recommendation{label}: the base model's eval loss, the reference for the margin, "
                      "is missing.", ""]
            continue
        lines += [f"On eval loss{label}: " + recommendation_text(pol.recommendation, sweep), ""]
        if pol.recommendation_accuracy:
            lines += [f"On task accuracy{label}: " + recommendation_text(pol.recommendation_accuracy, sweep), ""]
        lines += [f"The price of each rank{label}:", ""] + price_table(pol) + [""]
    lines += [f"Rule: {_first_rule(analysis)}. Equivalent means \"within the margin on this data, budget and "
              f"policy\", not \"the best rank\" and not \"good for other tasks\"; see `{DOC}` in the lorarank "
              "repository. The margin is `report.equivalence_margin`.", ""]
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
        if rec is None or (not rec.tested and rec.provisional is None):
            parts.append(f"no recommendation{label}" + (f": {rec.reason}" if rec else ""))
        elif rec.tested:
            parts.append(f"use rank {rec.recommended}{label}: the smallest rank equivalent to the best "
                         f"(rank {rec.best}) within {abs(rec.margin):.4g} nats of eval loss")
        else:
            parts.append(f"rank {rec.provisional}{label}, provisionally: untested with one seed; rerun with "
                         f"--seeds {rec.settle_seeds} to test it")
    return "[lorarank] which rank: " + "; ".join(parts)


def _trend_words(tr, grows: str, shrinks: str) -> str:
    if tr is None:
        return "not measured"
    ci = f" ({tr.level:.0%} CI {tr.low:+.4g} .. {tr.high:+.4g})" if tr.low is not None else ""
    if tr.verdict == "none":
        return f"none at any rank (0 in all {tr.n} trials)"
    words = {"grows": grows, "shrinks": shrinks, "no trend": "no trend with rank shown",
             "untested": "too few trials to test a trend"}[tr.verdict]
    return f"{words}: slope {tr.slope:+.4g} per doubling of the rank{ci}, over {tr.n} trials"


def forgetting_section(pol: PolicySummary, baseline: dict | None) -> list[str]:
    rows = pol.rows
    if not any(rows[r].general_loss for r in pol.ranks):
        return ["No general-text loss was measured (`eval.general_text: none`)."]
    source = ((baseline or {}).get("general_text") or {}).get("source", "general text")
    base = (baseline or {}).get("general_loss")
    base_text = f"{base:.4f}" if base is not None else "not measured, so no forgetting"
    lines = [f"Loss on held-out general text ({source}; base model {base_text}) after training: an increase is "
             "forgetting (Biderman et al. 2024, \"LoRA Learns Less and Forgets Less\"). Learning = the eval-loss "
             "gain over the base model. Intruder dimensions (Shuttleworth et al. 2024): top singular vectors of "
             "W + ΔW unlike every singular vector of W.", "",
             "| Rank | General loss | Forgetting | Learning | Intruders per module |", "|---:|---:|---:|---:|---:|"]
    for r in pol.ranks:
        row = rows[r]
        intr = f"{row.intruders['per_module']:.2f}" if row.intruders else "n/a"
        lines.append(f"| {r} | {fmt_est(row.general_loss)} | {fmt_est(row.forgetting)} | "
                     f"{fmt_est(row.learning_gain)} | {intr} |")
    lines += ["", f"- Does higher rank forget more? {_trend_words(pol.forgetting_trend, 'yes, forgetting grows with rank', 'no, forgetting shrinks with rank')}."]
    with_intr = [r for r in pol.ranks if rows[r].intruders]
    if with_intr:
        k, eps = rows[with_intr[0]].intruders["k"], rows[with_intr[0]].intruders["epsilon"]
        lines += [f"- Do intruder dimensions grow with rank (k = {k}, ε = {eps:g})? "
                  f"{_trend_words(pol.intruder_trend, 'yes', 'no, they shrink with rank')}."]
        a = pol.intruders_vs_forgetting
        if a is not None:
            words = {"together": "yes, they go together", "opposite": "they go in opposite directions",
                     "no association": "no association shown", "untested": "untested (one of them is constant)"}
            rho = f": Spearman ρ = {a.rho:+.2f}, p = {a.p:.3g}" if a.rho is not None else ""
            lines += [f"- Do intruders go with forgetting across trials? {words[a.verdict]}{rho} ({a.n} trials)."]
        types = sorted(rows[with_intr[0]].intruders["by_type"])
        lines += ["", "Intruders per module, by module type:", "",
                  "| Module | " + " | ".join(f"r={r}" for r in with_intr) + " |", "|---|" + "---:|" * len(with_intr)]
        lines += [f"| {t} | " + " | ".join(f"{rows[r].intruders['by_type'][t]:.2f}" for r in with_intr) + " |"
                  for t in types]
    return lines


def capacity_section(pol: PolicySummary) -> list[str]:
    rows, top = pol.rows, max(pol.ranks)
    lines = ["LoRA Without Regret (2025): LoRA keeps up while its parameters are plentiful relative to the "
             "trained tokens; low ranks then fall behind the high-rank curve. Divergence step = the eval step "
             f"from which a rank's eval loss stays above rank {top}'s by more than the seed noise (the rule below).", "",
             "| Rank | Params per trained token | Divergence from the highest rank | ‖A − A₀‖ / ‖A₀‖ |",
             "|---:|---:|---:|---:|"]
    for r in pol.ranks:
        d = pol.divergence.get(r)
        step = "—" if r == top else ("n/a" if d is None else "never" if d.step is None else f"step {d.step}")
        ppt = f"{rows[r].params_per_token:.1f}" if rows[r].params_per_token is not None else "n/a"
        lines.append(f"| {r} | {ppt} | {step} | {fmt_est(rows[r].a_relative_change, 3)} |")
    rules = sorted({d.rule for d in pol.divergence.values()})
    if rules:
        lines += ["", f"Divergence rule: {'; '.join(rules)}."]
    s = pol.rank_scaling
    if s is not None:
        ci = f" (95% CI {s.low:.2f} .. {s.high:.2f})" if s.low is not None else ""
        lines += ["", f"Stable rank of ΔW grows as r^β with β = {s.beta:.2f}{ci}, R² {s.r2:.3f}, {s.n_points} trials "
                      "(β = 1 would be growth in proportion to the rank; Yazidi et al. report β ≈ 0.23-0.30)."]
    return lines
