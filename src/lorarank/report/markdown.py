"""The README of a sweep: setup, results table, the four questions answered from the numbers.

Rendered from the analysis model alone (analysis/model.py, built from sweep.json, baseline.json and
the run_data.json records), so `lorarank report DIR` rebuilds the same text without training. Every
verdict and threshold comes from the analysis model; this module only words and formats them.
"""

from __future__ import annotations

import os

from lorarank.analysis.model import Analysis, PolicySummary, RankRow, Returns, SubspaceEntry, SubspaceLevel
from lorarank.analysis.sweep_info import Baseline, Setup
from lorarank.analysis.stats import Outcome
from lorarank.analysis.units import Units
from lorarank.report import analyzed
from lorarank.report.fmt import fmt_est, line_text
from lorarank.report.which_rank import LOSS, capacity_section, forgetting_section, which_rank_section

POLICY_TEXT = {
    "constant": ("alpha is fixed at {alpha:g}, so the scale gamma = alpha/r falls as rank grows "
                 "({gammas}). At one learning rate a higher rank therefore takes smaller steps in ΔW, "
                 "which can hide extra capacity; compare with `proportional` or `rslora` before concluding "
                 "that rank does not matter."),
    "proportional": ("alpha = 2r, so gamma = 2 for every rank (Biderman et al. 2024). Higher ranks add "
                     "parameters at the same scale, so at one learning rate their updates can grow faster."),
    "rslora": ("rank-stabilized LoRA: gamma = alpha/sqrt(r) ({gammas}), which keeps the update's "
               "magnitude comparable across ranks (Kalajdzievski 2023)."),
}


def _gammas(rows: dict[int, RankRow]) -> str:
    return ", ".join(f"r={r}: {rows[r].effective_scale:.3g}" for r in sorted(rows))


def results_table(pol: PolicySummary, baseline: Baseline | None, full_ft: RankRow | None = None) -> list[str]:
    rows = pol.rows
    has_acc = any(rows[r].accuracy for r in rows)
    head = "| Rank | Trainable Params | Final Train Loss | Final Eval Loss | Time (s) | tok/s |"
    sep = "|---:|---:|---:|---:|---:|---:|"
    if has_acc:
        head, sep = head + " Accuracy |", sep + "---:|"
    lines = [head, sep]
    if baseline:
        acc = f" {100 * baseline.accuracy:.1f}% |" if has_acc and baseline.accuracy is not None else (
            " n/a |" if has_acc else "")
        lines.append(f"| 0 (base model) | 0 | – | {baseline.eval_loss:.4f} | – | – |{acc}")
    for r in sorted(rows):
        lines.append(_result_row(str(r), rows[r], has_acc))
    if full_ft:
        lines.append(_result_row(f"full fine-tuning (lr {full_ft.learning_rate.chosen:g})", full_ft, has_acc))
    return lines


def _result_row(label: str, row: RankRow, has_acc: bool) -> str:
    line = (f"| {label} | {row.trainable_params:,} ({100 * row.trainable_ratio:.2f}%) | "
            f"{fmt_est(row.train_loss)} | {fmt_est(row.final_eval_loss)} | "
            f"{fmt_est(row.training_time_seconds, 1)} | {fmt_est(row.tokens_per_second, 0)} |")
    return line + (f" {fmt_est(row.accuracy, 1, pct=True)} |" if has_acc else "")


def family_table(pol: PolicySummary, baseline: Baseline | None) -> list[str]:
    rows, ranks = pol.rows, pol.ranks
    if not rows[ranks[0]].per_family:
        return []
    fams = sorted(rows[ranks[0]].per_family)
    base = baseline.accuracy_per_family if baseline else None
    lines = ["| Family | " + ("base | " if base else "") + " | ".join(f"r={r}" for r in ranks) + " |",
             "|---|" + ("---:|" if base else "") + "---:|" * len(ranks)]
    for f in fams:
        cells = ([f"{100 * base.get(f, 0.0):.0f}%"] if base else []) + \
                [f"{100 * rows[r].per_family[f]:.0f}%" for r in ranks]
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    return lines


def _steps_text(pol: PolicySummary) -> str:
    steps = [f"r={c.reference}→{c.rank}: {LOSS.interval(c).replace('90% CI ', '')}" for c in pol.returns.steps]
    level = " (paired, 90% CI)" if any(c.low is not None for c in pol.returns.steps) else ""
    return f"Change in eval loss at each step up in rank{level}: {'; '.join(steps)}."


def answer_diminishing(pol: PolicySummary) -> str:
    ret, rec = pol.returns, pol.recommendation
    if ret.verdict is Returns.SINGLE_RANK:
        return "Only one rank was run, so there is no curve to have a knee."
    if rec is None or rec.margin is None:
        why = rec.reason if rec else "there is no base model to measure the margin δ from"
        return f"**Inconclusive.** No equivalence can be tested: {why}. {_steps_text(pol)}"
    best = rec.best if rec else None
    verdict = {
        Returns.DIMINISH: (f"**Yes: returns diminish from rank {ret.rank}.** The recommendation's sequence finds rank "
                           f"{ret.rank} equivalent to the best rank ({best}) within δ: the ranks above it add less "
                           "than δ on eval loss."),
        Returns.NONE_SHOWN: (f"**No diminishing returns shown inside the range tried.** The best rank is the largest "
                             f"({best}), and the next rank down is "
                             f"{LOSS.outcome(ret.basis) if ret.basis else 'worse'}: a larger rank might still help."),
        Returns.INCONCLUSIVE: ("**Inconclusive.** No rank below the largest is shown equivalent to the best, and the "
                               "largest rank is not shown better than the next one down either (see the "
                               "recommendation above)."),
        Returns.UNTESTED: (f"**Untested with one seed.** On point estimates against δ, returns would diminish from "
                           f"rank {ret.rank}, a provisional reading that no test supports."),
    }[ret.verdict]
    return f"{verdict} {_steps_text(pol)}"


HEADLINE = {Outcome.EQUIVALENT: "Yes, within δ", Outcome.EQUIVALENT_AND_WORSE: "Yes, within δ",
            Outcome.EQUIVALENT_AND_BETTER: "Yes, within δ", Outcome.BETTER: "Yes, it does better",
            Outcome.WORSE: "No", Outcome.INCONCLUSIVE: "Undecided", Outcome.UNTESTED: "Untested"}


def answer_small_vs_large(pol: PolicySummary) -> str:
    pair = pol.pair
    if not pair:
        return "Only one rank was run."
    c = pair.loss
    text = (f"**{HEADLINE[c.outcome]}** on eval loss: rank {pair.small} − rank {pair.large} = "
            f"{LOSS.interval(c, True)}: {LOSS.outcome(c)}.")
    if pair.accuracy:
        points = Units(higher_is_better=True)
        text += f" On task accuracy: {points.interval(pair.accuracy, True)}: {points.outcome(pair.accuracy)}"
        text += _items_text(pair) + "."
    return text


def _items_text(pair) -> str:
    items = pair.accuracy_items
    if items is None:
        return ""
    if items.mcnemar is not None:
        m = items.mcnemar
        return (f"; on its {m.n_items} eval items rank {pair.small} alone is right on {m.only_first} and rank "
                f"{pair.large} alone on {m.only_second}, exact McNemar p = {m.p:.3g} (the noise of the items, not of "
                "the seeds)")
    d = items.unpaired
    return (f"; the records hold per-item correctness for {items.items_recorded} of {items.n_items} items, too few to "
            f"pair them for McNemar's test, so the two-proportion {d.level:.0%} CI over the items, which ignores the "
            f"pairing, stands in: {100 * d.low:+.1f} .. {100 * d.high:+.1f} points (the noise of the items, not of "
            "the seeds)")


def answer_params(pol: PolicySummary) -> str:
    p, rows, ranks = pol.params, pol.rows, pol.ranks
    counts = ", ".join(f"r={r}: {rows[r].trainable_params:,}" for r in ranks)
    if not p.fit:
        return f"Only one rank was run ({counts})."
    exact = (f"exactly r × Σ(d_in + d_out) = r × {p.per_rank_formula:,} for every trial, as counted by PEFT"
             if p.exact else "**not** equal to r × Σ(d_in + d_out) for every trial: something besides the "
             "adapters is trainable")
    return (f"Linearly: {counts}. Fitted slope {p.fit.slope:,.1f} parameters per unit of rank "
            f"(intercept {p.fit.intercept:,.1f}, R² = {p.fit.r2:.6f}); the counts are {exact}. "
            f"Doubling the rank doubles the adapter and its optimizer state; the share of the model stays small "
            f"({100 * rows[ranks[-1]].trainable_ratio:.2f}% at r={ranks[-1]}).")


def answer_time(pol: PolicySummary) -> str:
    t, rows, ranks = pol.time, pol.rows, pol.ranks
    if not t and len(ranks) > 1:  # time_fit needs every trial's time: trainers that logged none
        return "The trainers logged no training time (train_runtime in trainer_state.json), so time cannot be related to rank."
    if not t:
        return "Only one rank was run, so time cannot be related to rank."
    lo, hi = rows[ranks[0]].training_time_seconds.mean, rows[ranks[-1]].training_time_seconds.mean
    text = (f"Training took {lo:.1f} s at r={ranks[0]} and {hi:.1f} s at r={ranks[-1]} ({hi / lo:.2f}x). Fit time = "
            f"{line_text(t.fit.intercept, t.fit.slope, 's')} (R² {t.fit.r2:.3f})")
    if t.measured_overhead is not None:
        text += f": the LoRA cost at r={t.r_max} is {t.measured_overhead:+.1%} of the rank-independent part"
    if t.predicted_overhead is not None:
        text += (f", against {t.predicted_overhead:+.1%} predicted from FLOPs "
                 "(6·r·Σ(d_in+d_out) per token for the adapters vs 4·N for the frozen matmuls)")
    text += ". "
    if t.negligible:
        text += "So rank barely affects training time here; the frozen base model dominates the cost."
    else:
        text += "So rank does cost time, roughly linearly, on top of a fixed cost set by the frozen base model."
    return text


def hypotheses_table(pol: PolicySummary) -> list[str]:
    lines = ["The original experiment expected: rank 8 minimal capacity, 16 a good balance, 32 the standard "
             "choice, 64 a plateau. Each claim, judged from the comparisons above on this data and budget only:", "",
             "| Rank | Expectation | Verdict | Evidence |", "|---:|---|---|---|"]
    lines += [f"| {h.rank} | {h.claim} | **{h.verdict.value}** | {h.evidence} |" for h in pol.hypotheses]
    if pol.pair:
        p = pol.pair
        lines += ["", f"Low-rank hypothesis (\"if rank {p.small} works as well as rank {p.large}, the adaptation is "
                  f"low-dimensional\"): **{p.low_rank_hypothesis.value}** on eval loss ({LOSS.outcome(p.loss)})."]
    return lines


def learned_section(pol: PolicySummary, full_ft: RankRow | None, strong_phi: float) -> list[str]:
    rows = pol.rows
    ranks = [r for r in pol.ranks if rows[r].spectra]
    if not ranks:
        return ["No adapter spectra were recorded for these trials."]
    lines = ["Singular values of ΔW = γ·B·A per adapted module, computed in float32 from the r x r core "
             "(no d x d matrix formed); means over modules and seeds. Effective rank = exp(entropy of σ/Σσ) "
             "(Roy & Vetterli 2007); energy rank = directions holding 90% of ‖ΔW‖²; amplification = "
             "‖ΔW‖_F / ‖UᵀWV‖_F (Hu et al. 2021 §7.3).", "",
             "| Rank | Effective rank | Energy rank (90%) | Stable rank | ‖ΔW‖_F | Amplification |",
             "|---:|---:|---:|---:|---:|---:|"]

    def cells(o):
        amp = f"{o['amplification']:.3g}" if o["amplification"] is not None else "n/a"
        return (f"{o['effective_rank']:.2f} | {o['energy_rank_90']:.1f} | {o['stable_rank']:.2f} | "
                f"{o['frobenius']:.4f} | {amp} |")

    for r in ranks:
        lines.append(f"| {r} | " + cells(rows[r].spectra["overall"]))
    full_spec = full_ft.spectra if full_ft else None
    if full_spec:
        lines.append("| full FT | " + cells(full_spec["overall"]))
    types = sorted(rows[ranks[0]].spectra["by_type"])
    lines += ["", "Effective rank by module type:", "",
              "| Module | " + " | ".join(f"r={r}" for r in ranks) + (" | full FT |" if full_spec else " |"),
              "|---|" + "---:|" * (len(ranks) + bool(full_spec))]
    for t in types:
        vals = [f"{rows[r].spectra['by_type'][t]['effective_rank']:.2f}" for r in ranks]
        if full_spec:
            vals.append(f"{full_spec['by_type'][t]['effective_rank']:.1f}")
        lines.append(f"| {t} | " + " | ".join(vals) + " |")
    use = pol.capacity_use
    lines += ["", f"At r={use.rank} the update uses an effective rank of {use.effective_rank:.1f} "
                  f"({use.effective_rank / use.rank:.0%} of r), and {use.energy_rank_90:.1f} directions hold "
                  f"90% of its energy: "
                  + ("the extra capacity is largely unused." if use.largely_unused else
                     "the adapter spreads its update over many of its directions.")]
    lines += [""] + subspace_lines(pol.subspace, strong_phi)
    return lines


SPACES = (("A", "A matrices (input directions; Hu et al.'s measure)"),
          ("delta_out", "ΔW output directions (left-singular vectors of B·A)"))
SUBSPACE_WORDS = {SubspaceLevel.STRONG: "the strongest direction is strongly shared "
                                        "(Hu et al. call φ > {strong:g} strong).",
                  SubspaceLevel.ABOVE_CHANCE: "the strongest direction is shared above chance, "
                                              "but weakly (φ < {strong:g}).",
                  SubspaceLevel.CHANCE: "the strongest directions are not shared beyond chance."}


def subspace_lines(sub: dict[str, SubspaceEntry], strong_phi: float) -> list[str]:
    if not sub:
        return ["Subspace similarity needs the saved adapters of two trials to compare (two ranks on one seed, "
                "or two seeds of one rank); none were available."]
    out = ["Subspace similarity φ (Hu et al. 2021 §7.2): overlap of the top-i and top-j singular directions of "
           "two adapters; 1 = same subspace, random ≈ max(i, j)/d. Means over layers. Hu et al. compare the A "
           "matrices; B starts at zero and takes most early updates while A keeps much of its random "
           "initialisation (how much: ‖A − A₀‖/‖A₀‖ under Capacity), so the output directions of ΔW are "
           "shown too."]
    for kind, label in (("small_vs_large", "smallest vs largest rank, same seed"),
                        ("seed_vs_seed", "two seeds, largest rank")):
        if kind not in sub:
            continue
        e = sub[kind]
        out += ["", f"**{label}** ({e.names[0]} vs {e.names[1]}):", "",
                "| Module | " + " | ".join(f"{s}: φ(1,1) | {s}: φ(r₁,r₂)" for s, _ in SPACES) + " | random φ(1,1) for A |",
                "|---|" + "---:|" * (2 * len(SPACES) + 1)]
        for t in sorted(e.spaces["A"]):
            cells = [f"{e.spaces[s][t]['top1']:.3f} | {e.spaces[s][t]['full']:.3f}" for s, _ in SPACES]
            out.append(f"| {t} | " + " | ".join(cells) + f" | {e.spaces['A'][t]['top1_random']:.4f} |")
        names = dict(SPACES)
        for v in e.verdicts:
            words = SUBSPACE_WORDS[v.verdict].format(strong=strong_phi)
            out += ["", f"- {names[v.space]}: mean φ(1,1) = {v.top1:.3f} against {v.random:.4f} for random "
                        f"directions: {words}"]
    return out


def related_links(setup: Setup) -> list[str]:
    """Links from the report to docs/concepts, relative to where the report was configured to go."""
    docs = (("choosing-a-rank.md", "Choosing a rank: the recommendation, its margin, forgetting, intruders"),
            ("lora-rank.md", "LoRA rank, alpha and the scale γ"), ("qlora.md", "QLoRA: 4-bit base, LoRA adapters"),
            ("loss-curves.md", "Reading loss curves across ranks"), ("data-formats.md", "Data formats and loss masks"))
    if os.path.isabs(setup.output_dir):
        return [f"- `docs/concepts/{name}` in the lorarank repository: {title}" for name, title in docs]
    return [f"- [{title}]({os.path.relpath(os.path.join('docs', 'concepts', name), setup.output_dir)})"
            for name, title in docs]


def caveats(setup: Setup, pol: PolicySummary) -> list[str]:
    out = [f"- **Scaling policy `{pol.policy}`:** " + POLICY_TEXT[pol.policy].format(
        alpha=setup.alpha, gammas=_gammas(pol.rows))]
    if setup.analyzed:  # adapters trained elsewhere: the seeds, LRs and data are the user's
        return out + analyzed.caveats(setup, pol)
    rec = pol.recommendation
    if pol.n_seeds == 1:
        settle = f": `{rec.settle_command}`" if rec and rec.settle_command else ""
        out.append("- **One seed per rank:** nothing measures the seed noise, so no comparison is tested: every "
                   f"reading above is a provisional point estimate. Rerun with more seeds to test them{settle}.")
    else:
        out.append(f"- **{pol.n_seeds} seeds per rank**, paired (same data order and initialisation stream across "
                   "ranks).")
    lrs = setup.learning_rates
    if len(lrs) > 1:
        out.append(f"- **Learning rate:** each rank is shown at its best of {', '.join(f'{x:g}' for x in lrs)} "
                   "by mean eval loss.")
    else:
        out.append(f"- **One learning rate ({lrs[0]:g}) for every rank:** the best LR can differ by rank "
                   "(LoRA Without Regret, 2025); sweep `--lr` to check.")
    out.append(f"- **Data:** {setup.n_train} training and {setup.n_eval} eval examples from "
               f"`{setup.dataset}`; a small dataset can make every rank look alike (too little to learn) "
               "or favour large ranks (memorisation).")
    return out


def _data_format(setup: Setup) -> str:
    """'alpaca records, chat template, loss on the response (output)'; older sweep.json files lack the
    record format and say what they trained on as then: response tokens."""
    rendered = f"{setup.prompt_format} template" if setup.prompt_format == "chat" else f"{setup.prompt_format} format"
    if setup.record_format is None:
        return f"{rendered}, loss on response tokens only"
    return f"{setup.record_format} records, {rendered}, loss on {setup.trained_on}"


def setup_table(setup: Setup) -> list[str]:
    if setup.analyzed:
        return analyzed.setup_table(setup)
    s = setup
    dtype = s.dtype if s.compute_dtype == s.dtype else f"{s.dtype}: {s.compute_dtype}"
    cpu = ""
    if s.bf16_units is not None:
        cpu = f"; CPU {s.cpu_capability}, bf16 units: {', '.join(s.bf16_units) or 'none'}"
    return [
        "## Setup",
        "",
        "| | |",
        "|---|---|",
        f"| Model | `{s.model}` ({dtype}) |",
        f"| Dataset | `{s.dataset}`: {s.n_train} train / {s.n_eval} eval examples, {_data_format(s)} |",
        f"| Eval set | {s.eval_source or 'held out from the training records'} |",
        f"| LoRA | targets {', '.join(s.target_modules)}; dropout {s.dropout:g}; "
        f"alpha policies {', '.join(s.alpha_policies)} (alpha {s.alpha:g}) |",
        f"| Ranks / seeds / LRs | {s.ranks} / {s.seeds} / {[float(f'{x:g}') for x in s.learning_rates]} |",
        f"| Training | AdamW, {s.lr_schedule} schedule, warmup {s.warmup_ratio:g}, "
        f"batch {s.batch_size} × accumulation {s.grad_accum}, "
        + (f"{s.max_steps} steps" if s.max_steps else f"{s.epochs:g} epoch(s)")
        + f", grad clip {s.max_grad_norm:g} |",
        f"| Device | {s.device or 'n/a'}{cpu} |",
        f"| Sweep wall time | {s.wall_time_seconds:.0f} s over {s.invocations} invocation(s), including model load, "
        "data, evaluation and this report |" if s.wall_time_seconds else "| Sweep wall time | n/a |",
        "",
    ]


def policy_sections(analysis: Analysis, pol: PolicySummary) -> list[str]:
    suffix = f" (alpha policy `{pol.policy}`)" if len(analysis.policies) > 1 else ""
    lines = [f"## Results{suffix}", ""] + results_table(pol, analysis.baseline, analysis.full_finetune) + [""]
    lines += ["Loss = mean cross-entropy per trained token (nats); ± = 95% CI over seeds; final train loss = the mean "
              f"over the last {analysis.thresholds.train_tail_share:.0%} of the logged training windows; time = "
              "optimisation only (evaluation excluded); tok/s counts every non-padding token trained on.", ""]
    fam = family_table(pol, analysis.baseline)
    if fam:
        lines += ["Exact-match accuracy per task family (greedy decoding of held-out prompts):", ""] + fam + [""]
    return lines + [
        f"## Answers{suffix}", "",
        f"1. **Is there a point of diminishing returns?** {answer_diminishing(pol)}", "",
        f"2. **Does rank {pol.pair.small if pol.pair else pol.ranks[0]} do as well as rank "
        f"{pol.pair.large if pol.pair else pol.ranks[0]}?** {answer_small_vs_large(pol)}", "",
        f"3. **How do trainable parameters scale with rank?** {answer_params(pol)}", "",
        f"4. **Is training time affected by rank?** {answer_time(pol)}", "",
        f"## Were hypotheses confirmed?{suffix}", "",
    ] + hypotheses_table(pol) + [
        "", f"## What the adapters learned{suffix}", "",
    ] + learned_section(pol, analysis.full_finetune, analysis.thresholds.strong_phi) + [
        "", f"## Forgetting and intruder dimensions{suffix}", "",
    ] + forgetting_section(analysis, pol) + [
        "", f"## Capacity{suffix}", "",
    ] + capacity_section(pol) + [
        "", f"## Caveats{suffix}", "",
    ] + caveats(analysis.setup, pol) + [""]


FILES = ["- `all_results.json`: every trial's `run_data.json`, keyed by rank (plus seed/LR/policy suffixes)",
         "- `results.csv`: one row per trial", "- `analysis.json`: the numbers behind the answers above",
         "- `rank_*/run_data.json`, `rank_*/adapter/` (PEFT format: `PeftModel.from_pretrained(base, path)`)",
         "- `sweep.json`: the config, data fingerprint and invocations; `baseline.json`: the base model",
         "- `subspace.json`: φ matrices between adapters (kept so the report rebuilds without the adapters)"]


def render(analysis: Analysis, figures: list[str], which_rank_figure: str | None = None) -> str:
    """The README; `figures` are listed at the end, `which_rank_figure` (the forest plot) opens the
    answer to "which rank should I use?"."""
    setup = analysis.setup
    if setup is None:
        raise ValueError("the analysis has no setup (sweep.json): build it with analysis.build.build")
    lines = ["# LoRA Rank Comparison Results", ""]
    if setup.note:
        lines += [f"> {setup.note}", ""]
    lines += ["Generated by `lorarank` from the JSON in this directory (`lorarank report <dir>` rebuilds it).", ""]
    lines += which_rank_section(analysis, which_rank_figure)
    lines += setup_table(setup)
    for pol in analysis.policies.values():
        lines += policy_sections(analysis, pol)
    if analysis.not_ok:
        lines += ["## Failed or diverged trials", "", "| Trial | Status | Error |", "|---|---|---|"]
        lines += [f"| {t.name} | {t.status} | {(t.error or '').replace('|', '/')[:200]} |"
                  for t in analysis.not_ok] + [""]
    lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    lines += ["## Related", ""] + related_links(setup) + [""]
    lines += ["## Files", ""] + FILES + [""]
    return "\n".join(lines)
