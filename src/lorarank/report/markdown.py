"""The README of a sweep: setup, results table, the four questions answered from the numbers.

Built only from saved JSON (sweep.json, baseline.json, and the analysis model built from the
run_data.json records), so `lorarank report DIR` rebuilds the same text without training. Every
verdict and threshold comes from the analysis model; this module only words and formats them.
"""

from __future__ import annotations

import os

from lorarank.analysis.model import Analysis, PolicySummary, RankRow, SubspaceEntry
from lorarank.analysis.recommend import SETTLE_SEEDS
from lorarank.report import analyzed
from lorarank.report.fmt import fmt_est, line_text
from lorarank.report.which_rank import capacity_section, forgetting_section, which_rank_section

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


def results_table(pol: PolicySummary, baseline: dict | None, full_ft: RankRow | None = None) -> list[str]:
    rows = pol.rows
    has_acc = any(rows[r].accuracy for r in rows)
    head = "| Rank | Trainable Params | Final Train Loss | Final Eval Loss | Time (s) | tok/s |"
    sep = "|---:|---:|---:|---:|---:|---:|"
    if has_acc:
        head, sep = head + " Accuracy |", sep + "---:|"
    lines = [head, sep]
    if baseline:
        acc = f" {100 * baseline['accuracy']['overall']:.1f}% |" if has_acc and baseline.get("accuracy") else (
            " n/a |" if has_acc else "")
        lines.append(f"| 0 (base model) | 0 | – | {baseline['eval_loss']:.4f} | – | – |{acc}")
    for r in sorted(rows):
        lines.append(_result_row(str(r), rows[r], has_acc))
    if full_ft:
        lines.append(_result_row(f"full fine-tuning (lr {full_ft.learning_rate.chosen:g})", full_ft, has_acc))
    return lines


def _result_row(label: str, row: RankRow, has_acc: bool) -> str:
    line = (f"| {label} | {row.trainable_params:,} ({100 * row.trainable_ratio:.2f}%) | "
            f"{fmt_est(row.final_train_loss)} | {fmt_est(row.final_eval_loss)} | "
            f"{fmt_est(row.training_time_seconds, 1)} | {fmt_est(row.tokens_per_second, 0)} |")
    return line + (f" {fmt_est(row.accuracy, 1, pct=True)} |" if has_acc else "")


def family_table(pol: PolicySummary, baseline: dict | None) -> list[str]:
    rows, ranks = pol.rows, pol.ranks
    if not rows[ranks[0]].per_family:
        return []
    fams = sorted(rows[ranks[0]].per_family)
    base = baseline["accuracy"]["per_family"] if baseline and baseline.get("accuracy") else None
    lines = ["| Family | " + ("base | " if base else "") + " | ".join(f"r={r}" for r in ranks) + " |",
             "|---|" + ("---:|" if base else "") + "---:|" * len(ranks)]
    for f in fams:
        cells = ([f"{100 * base.get(f, 0.0):.0f}%"] if base else []) + \
                [f"{100 * rows[r].per_family[f]:.0f}%" for r in ranks]
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    return lines


def answer_diminishing(pol: PolicySummary) -> str:
    knee = pol.knee
    if not knee:
        return "Only one rank was run, so there is no curve to have a knee."
    steps = []
    for a, b in zip(pol.ranks, pol.ranks[1:]):
        ea, eb = pol.rows[a].final_eval_loss.mean, pol.rows[b].final_eval_loss.mean
        steps.append(f"r={a}→{b}: {eb - ea:+.4f} ({(eb - ea) / ea:+.1%})")
    k, best = knee.knee, knee.best
    verdict = {
        "smallest": (f"**No returns beyond the smallest rank.** Rank {k} is already within noise of the best "
                     f"rank ({best}); raising the rank did not buy a measurable eval-loss improvement."),
        "largest": (f"**No diminishing returns inside the range tried.** Only rank {k} reaches the best eval "
                    "loss; every smaller rank is measurably worse, so a larger rank might still help."),
        "inside": (f"**Yes: returns diminish at rank {k}.** Rank {k} is the smallest rank within noise of the "
                   f"best rank ({best}); ranks above it do not improve eval loss measurably."),
    }[knee.where]
    return f"{verdict} Eval-loss change per step up in rank: {'; '.join(steps)}. Rule: {knee.rule}."


def answer_small_vs_large(pol: PolicySummary) -> str:
    cmp_ = pol.small_vs_large
    if not cmp_:
        return "Only one rank was run."
    small, large = pol.pair
    d = cmp_.difference
    ci = f" (95% CI {d.low:+.4f} .. {d.high:+.4f})" if d.low is not None else ""
    words = {"equivalent": f"**Yes — rank {small} does as well as rank {large}**",
             "tied": f"**Seemingly — rank {small} is within the one-seed tolerance of rank {large}**",
             "inconclusive": f"**Undecided — rank {small} is not shown worse than rank {large}, nor equivalent**",
             "worse": f"**No — rank {small} is worse than rank {large}**",
             "better": f"**Rank {small} does better than rank {large}**"}[cmp_.verdict]
    text = (f"{words} on eval loss: difference (r={small} − r={large}) = {d.mean:+.4f} "
            f"({cmp_.relative:+.1%}){ci}; verdict by {cmp_.rule}.")
    acc = pol.small_vs_large_accuracy
    if acc:
        a = acc.difference
        aci = f" (95% CI {100 * a.low:+.1f} .. {100 * a.high:+.1f} points)" if a.low is not None else ""
        verdict = {"inconclusive": "no difference shown, and no equivalence either"}.get(acc.verdict, acc.verdict)
        text += f" On task accuracy the difference is {100 * a.mean:+.1f} points{aci}: {verdict} ({acc.rule})."
    return text


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
             "choice, 64 a plateau. Each claim judged from this sweep:", "",
             "| Rank | Original expectation | Verdict | Evidence |", "|---:|---|---|---|"]
    lines += [f"| {h.rank} | {h.claim} | **{h.verdict}** | {h.evidence} |" for h in pol.hypotheses]
    small, large = pol.pair
    cmp_ = pol.small_vs_large
    if cmp_:
        lines += ["", f"Low-rank hypothesis (\"if rank {small} works nearly as well as rank {large}, the adaptation "
                  f"is low-dimensional\"): **{pol.low_rank_hypothesis}** on eval loss ({cmp_.verdict}, {cmp_.rule})."]
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
        amp = f"{o['amplification']:.3g}" if o.get("amplification") is not None else "n/a"
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
SUBSPACE_WORDS = {"strong": "the strongest direction is strongly shared (Hu et al. call φ > {strong:g} strong).",
                  "above_chance": "the strongest direction is shared above chance, but weakly (φ < {strong:g}).",
                  "chance": "the strongest directions are not shared beyond chance."}


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


def related_links(sweep: dict) -> list[str]:
    """Links from the report to docs/concepts, relative to where the report was configured to go."""
    out_dir = sweep["config"]["sweep"]["output_dir"]
    docs = (("choosing-a-rank.md", "Choosing a rank: the recommendation, its margin, forgetting, intruders"),
            ("lora-rank.md", "LoRA rank, alpha and the scale γ"), ("qlora.md", "QLoRA: 4-bit base, LoRA adapters"),
            ("loss-curves.md", "Reading loss curves across ranks"), ("data-formats.md", "Data formats and loss masks"))
    if os.path.isabs(out_dir):
        return [f"- `docs/concepts/{name}` in the lorarank repository: {title}" for name, title in docs]
    return [f"- [{title}]({os.path.relpath(os.path.join('docs', 'concepts', name), out_dir)})" for name, title in docs]


def caveats(sweep: dict, pol: PolicySummary, tolerance: float) -> list[str]:
    cfg = sweep["config"]
    data = sweep["data"]
    out = [f"- **Scaling policy `{pol.policy}`:** " + POLICY_TEXT[pol.policy].format(
        alpha=cfg["lora"]["alpha"], gammas=_gammas(pol.rows))]
    if "analyzed" in sweep:  # adapters trained elsewhere: the seeds, LRs and data are the user's
        return out + analyzed.caveats(sweep, pol)
    if pol.n_seeds == 1:
        out.append(f"- **One seed per rank:** differences below about {100 * tolerance:.0f}% are treated as ties, "
                   f"but with one seed there is no noise estimate; rerun with `--seeds {SETTLE_SEEDS}` for "
                   "confidence intervals.")
    else:
        out.append(f"- **{pol.n_seeds} seeds per rank**, paired (same data order and initialisation stream across "
                   "ranks); ± values are 95% confidence half-widths.")
    lrs = cfg["sweep"]["learning_rates"]
    if len(lrs) > 1:
        out.append(f"- **Learning rate:** each rank is shown at its best of {', '.join(f'{x:g}' for x in lrs)} "
                   "by mean eval loss.")
    else:
        out.append(f"- **One learning rate ({lrs[0]:g}) for every rank:** the best LR can differ by rank "
                   "(LoRA Without Regret, 2025); sweep `--lr` to check.")
    out.append(f"- **Data:** {data['n_train']} training and {data['n_eval']} eval examples from "
               f"`{cfg['data']['dataset']}`; a small dataset can make every rank look alike (too little to learn) "
               "or favour large ranks (memorisation).")
    return out


def _data_format(data: dict) -> str:
    """'alpaca records, chat template, loss on the response (output)'; older sweep.json files lack the
    record format and say what they trained on as then: response tokens."""
    rendered = f"{data['prompt_format']} template" if data["prompt_format"] == "chat" else f"{data['prompt_format']} format"
    if "record_format" not in data:
        return f"{rendered}, loss on response tokens only"
    return f"{data['record_format']} records, {rendered}, loss on {data['trained_on']}"


def setup_table(sweep: dict) -> list[str]:
    if "analyzed" in sweep:
        return analyzed.setup_table(sweep)
    cfg = sweep["config"]
    inv = sweep.get("invocations", [])
    wall = sweep.get("sweep_wall_time_seconds")
    train = cfg["train"]
    environment = sweep.get("environment", {})
    dtype = cfg["model"]["dtype"]
    used = environment.get("compute_dtype", dtype)  # the precision `auto` resolved to
    cpu = environment.get("cpu")
    bf16_units = [unit for key, unit in (("amx_tile", "AMX"), ("avx512_bf16", "AVX512-BF16")) if cpu and cpu[key]]
    return [
        "## Setup",
        "",
        "| | |",
        "|---|---|",
        f"| Model | `{cfg['model']['name']}` ({dtype if used == dtype else f'{dtype}: {used}'}) |",
        f"| Dataset | `{cfg['data']['dataset']}`: {sweep['data']['n_train']} train / {sweep['data']['n_eval']} eval "
        f"examples, {_data_format(sweep['data'])} |",
        f"| Eval set | {sweep['data'].get('eval_source') or 'held out from the training records'} |",
        f"| LoRA | targets {', '.join(cfg['lora']['target_modules'])}; dropout {cfg['lora']['dropout']:g}; "
        f"alpha policies {', '.join(sweep['axes']['alpha_policies'])} (alpha {cfg['lora']['alpha']:g}) |",
        f"| Ranks / seeds / LRs | {sweep['axes']['ranks']} / {sweep['axes']['seeds']} / "
        f"{[float(f'{x:g}') for x in sweep['axes']['learning_rates']]} |",
        f"| Training | AdamW, {train['lr_schedule']} schedule, warmup {train['warmup_ratio']:g}, "
        f"batch {train['batch_size']} × accumulation {train['grad_accum']}, "
        + (f"{train['max_steps']} steps" if train['max_steps'] else f"{train['epochs']:g} epoch(s)")
        + f", grad clip {train['max_grad_norm']:g} |",
        f"| Device | {environment.get('device', 'n/a')}"
        + (f"; CPU {cpu['capability']}, bf16 units: {', '.join(bf16_units) or 'none'}" if cpu else "") + " |",
        f"| Sweep wall time | {wall:.0f} s over {len(inv)} invocation(s), including model load, data, "
        "evaluation and this report |" if wall else "| Sweep wall time | n/a |",
        "",
    ]


def policy_sections(sweep: dict, baseline: dict | None, analysis: Analysis, pol: PolicySummary) -> list[str]:
    suffix = f" (alpha policy `{pol.policy}`)" if len(analysis.policies) > 1 else ""
    lines = [f"## Results{suffix}", ""] + results_table(pol, baseline, analysis.full_finetune) + [""]
    lines += ["Loss = mean cross-entropy per trained token (nats); ± = 95% CI over seeds; time = optimisation "
              "only (evaluation excluded); tok/s counts every non-padding token trained on.", ""]
    fam = family_table(pol, baseline)
    if fam:
        lines += ["Exact-match accuracy per task family (greedy decoding of held-out prompts):", ""] + fam + [""]
    return lines + [
        f"## Answers{suffix}", "",
        f"1. **Is there a point of diminishing returns?** {answer_diminishing(pol)}", "",
        f"2. **Does rank {pol.pair[0]} do as well as rank {pol.pair[1]}?** {answer_small_vs_large(pol)}", "",
        f"3. **How do trainable parameters scale with rank?** {answer_params(pol)}", "",
        f"4. **Is training time affected by rank?** {answer_time(pol)}", "",
        f"## Were hypotheses confirmed?{suffix}", "",
    ] + hypotheses_table(pol) + [
        "", f"## What the adapters learned{suffix}", "",
    ] + learned_section(pol, analysis.full_finetune, analysis.thresholds.strong_phi) + [
        "", f"## Forgetting and intruder dimensions{suffix}", "",
    ] + forgetting_section(pol, baseline) + [
        "", f"## Capacity{suffix}", "",
    ] + capacity_section(pol) + [
        "", f"## Caveats{suffix}", "",
    ] + caveats(sweep, pol, analysis.thresholds.tolerance) + [""]


FILES = ["- `all_results.json`: every trial's `run_data.json`, keyed by rank (plus seed/LR/policy suffixes)",
         "- `results.csv`: one row per trial", "- `analysis.json`: the numbers behind the answers above",
         "- `rank_*/run_data.json`, `rank_*/adapter/` (PEFT format: `PeftModel.from_pretrained(base, path)`)",
         "- `sweep.json`: the config, data fingerprint and invocations; `baseline.json`: the base model",
         "- `subspace.json`: φ matrices between adapters (kept so the report rebuilds without the adapters)"]


def render(sweep: dict, baseline: dict | None, analysis: Analysis, figures: list[str]) -> str:
    cfg = sweep["config"]
    lines = ["# LoRA Rank Comparison Results", ""]
    if cfg["report"].get("note"):
        lines += [f"> {cfg['report']['note']}", ""]
    lines += ["Generated by `lorarank` from the JSON in this directory (`lorarank report <dir>` rebuilds it).", ""]
    lines += which_rank_section(sweep, analysis)
    lines += setup_table(sweep)
    for pol in analysis.policies.values():
        lines += policy_sections(sweep, baseline, analysis, pol)
    if analysis.not_ok:
        lines += ["## Failed or diverged trials", "", "| Trial | Status | Error |", "|---|---|---|"]
        lines += [f"| {t.name} | {t.status} | {(t.error or '').replace('|', '/')[:200]} |"
                  for t in analysis.not_ok] + [""]
    lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    lines += ["## Related", ""] + related_links(sweep) + [""]
    lines += ["## Files", ""] + FILES + [""]
    return "\n".join(lines)
