"""The README of a sweep: setup, results table, the four questions answered from the numbers.

Built only from saved JSON (sweep.json, baseline.json, run_data.json via the summary), so
`lorarank report DIR` rebuilds the same text without training.
"""

from __future__ import annotations

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


def fmt_est(est: dict | None, digits: int = 4, pct: bool = False) -> str:
    if not est:
        return "n/a"
    scale, unit = (100.0, "%") if pct else (1.0, "")
    text = f"{est['mean'] * scale:.{digits}f}{unit}"
    if est.get("low") is not None:
        text += f" ± {(est['high'] - est['low']) / 2 * scale:.{digits}f}"
    return text


def line_text(intercept: float, slope: float, unit: str, digits: int = 4) -> str:
    """'101.7 s + 0.1792 s × r', with the sign folded in (never '+ -')."""
    sign = "+" if slope >= 0 else "−"
    return f"{intercept:.1f} {unit} {sign} {abs(slope):.{digits}f} {unit} × r"


def _gammas(rows: dict) -> str:
    return ", ".join(f"r={r}: {rows[r]['effective_scale']:.3g}" for r in sorted(rows, key=int))


def results_table(pol: dict, baseline: dict | None, full_ft: dict | None = None) -> list[str]:
    rows = pol["rows"]
    has_acc = any(rows[r]["accuracy"] for r in rows)
    head = "| Rank | Trainable Params | Final Train Loss | Final Eval Loss | Time (s) | tok/s |"
    sep = "|---:|---:|---:|---:|---:|---:|"
    if has_acc:
        head, sep = head + " Accuracy |", sep + "---:|"
    lines = [head, sep]
    if baseline:
        acc = f" {100 * baseline['accuracy']['overall']:.1f}% |" if has_acc and baseline.get("accuracy") else (
            " n/a |" if has_acc else "")
        lines.append(f"| 0 (base model) | 0 | – | {baseline['eval_loss']:.4f} | – | – |{acc}")
    for r in sorted(rows, key=int):
        lines.append(_result_row(r, rows[r], has_acc))
    if full_ft:
        lines.append(_result_row(f"full fine-tuning (lr {full_ft['learning_rate']['chosen']:g})", full_ft, has_acc))
    return lines


def _result_row(label: str, row: dict, has_acc: bool) -> str:
    line = (f"| {label} | {row['trainable_params']:,} ({100 * row['trainable_ratio']:.2f}%) | "
            f"{fmt_est(row['final_train_loss'])} | {fmt_est(row['final_eval_loss'])} | "
            f"{fmt_est(row['training_time_seconds'], 1)} | {fmt_est(row['tokens_per_second'], 0)} |")
    return line + (f" {fmt_est(row['accuracy'], 1, pct=True)} |" if has_acc else "")


def family_table(pol: dict, baseline: dict | None) -> list[str]:
    rows = pol["rows"]
    ranks = sorted(rows, key=int)
    if not rows[ranks[0]]["per_family"]:
        return []
    fams = sorted(rows[ranks[0]]["per_family"])
    base = baseline["accuracy"]["per_family"] if baseline and baseline.get("accuracy") else None
    lines = ["| Family | " + ("base | " if base else "") + " | ".join(f"r={r}" for r in ranks) + " |",
             "|---|" + ("---:|" if base else "") + "---:|" * len(ranks)]
    for f in fams:
        cells = ([f"{100 * base.get(f, 0.0):.0f}%"] if base else []) + \
                [f"{100 * rows[r]['per_family'][f]:.0f}%" for r in ranks]
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    return lines


def answer_diminishing(pol: dict) -> str:
    rows, knee = pol["rows"], pol["knee"]
    if not knee:
        return "Only one rank was run, so there is no curve to have a knee."
    ranks = pol["ranks"]
    steps = []
    for a, b in zip(ranks, ranks[1:]):
        ea, eb = rows[str(a)]["final_eval_loss"]["mean"], rows[str(b)]["final_eval_loss"]["mean"]
        steps.append(f"r={a}→{b}: {eb - ea:+.4f} ({(eb - ea) / ea:+.1%})")
    k, best = knee["knee"], knee["best"]
    if k == ranks[0]:
        verdict = (f"**No returns beyond the smallest rank.** Rank {k} is already within noise of the best "
                   f"rank ({best}); raising the rank did not buy a measurable eval-loss improvement.")
    elif k == ranks[-1]:
        verdict = (f"**No diminishing returns inside the range tried.** Only rank {k} reaches the best eval "
                   "loss; every smaller rank is measurably worse, so a larger rank might still help.")
    else:
        verdict = (f"**Yes: returns diminish at rank {k}.** Rank {k} is the smallest rank within noise of the "
                   f"best rank ({best}); ranks above it do not improve eval loss measurably.")
    return f"{verdict} Eval-loss change per step up in rank: {'; '.join(steps)}. Rule: {knee['rule']}."


def answer_small_vs_large(pol: dict) -> str:
    cmp_ = pol["small_vs_large"]
    if not cmp_:
        return "Only one rank was run."
    small, large = pol["pair"]
    d = cmp_["difference"]
    ci = f" (95% CI {d['low']:+.4f} .. {d['high']:+.4f})" if d.get("low") is not None else ""
    words = {"equivalent": f"**Yes — rank {small} does as well as rank {large}**",
             "worse": f"**No — rank {small} is worse than rank {large}**",
             "better": f"**Rank {small} does better than rank {large}**"}[cmp_["verdict"]]
    text = (f"{words} on eval loss: difference (r={small} − r={large}) = {d['mean']:+.4f} "
            f"({cmp_['relative']:+.1%}){ci}; verdict by {cmp_['rule']}.")
    acc = pol.get("small_vs_large_accuracy")
    if acc:
        a = acc["difference"]
        aci = f" (95% CI {100 * a['low']:+.1f} .. {100 * a['high']:+.1f} points)" if a.get("low") is not None else ""
        text += (f" On task accuracy the difference is {100 * a['mean']:+.1f} points{aci}: "
                 f"{acc['verdict']} ({acc['rule']}).")
    return text


def answer_params(pol: dict) -> str:
    p = pol["params"]
    ranks = pol["ranks"]
    rows = pol["rows"]
    counts = ", ".join(f"r={r}: {rows[str(r)]['trainable_params']:,}" for r in ranks)
    if not p["fit"]:
        return f"Only one rank was run ({counts})."
    exact = (f"exactly r × Σ(d_in + d_out) = r × {p['per_rank_formula']:,} for every trial, as counted by PEFT"
             if p["exact"] else "**not** equal to r × Σ(d_in + d_out) for every trial: something besides the "
             "adapters is trainable")
    return (f"Linearly: {counts}. Fitted slope {p['fit']['slope']:,.1f} parameters per unit of rank "
            f"(intercept {p['fit']['intercept']:,.1f}, R² = {p['fit']['r2']:.6f}); the counts are {exact}. "
            f"Doubling the rank doubles the adapter and its optimizer state; the share of the model stays small "
            f"({100 * rows[str(ranks[-1])]['trainable_ratio']:.2f}% at r={ranks[-1]}).")


def answer_time(pol: dict) -> str:
    t = pol["time"]
    rows = pol["rows"]
    ranks = pol["ranks"]
    if not t:
        return "Only one rank was run, so time cannot be related to rank."
    lo, hi = rows[str(ranks[0])], rows[str(ranks[-1])]
    ratio = hi["training_time_seconds"]["mean"] / lo["training_time_seconds"]["mean"]
    fit = t["fit"]
    text = (f"Training took {lo['training_time_seconds']['mean']:.1f} s at r={ranks[0]} and "
            f"{hi['training_time_seconds']['mean']:.1f} s at r={ranks[-1]} ({ratio:.2f}x). Fit time = "
            f"{line_text(fit['intercept'], fit['slope'], 's')} (R² {fit['r2']:.3f})")
    if t["measured_overhead"] is not None:
        text += f": the LoRA cost at r={t['r_max']} is {t['measured_overhead']:+.1%} of the rank-independent part"
    if t["predicted_overhead"] is not None:
        text += (f", against {t['predicted_overhead']:+.1%} predicted from FLOPs "
                 "(6·r·Σ(d_in+d_out) per token for the adapters vs 4·N for the frozen matmuls)")
    text += ". "
    if t["measured_overhead"] is not None and t["measured_overhead"] < 0.05:
        text += "So rank barely affects training time here; the frozen base model dominates the cost."
    else:
        text += "So rank does cost time, roughly linearly, on top of a fixed cost set by the frozen base model."
    return text


def hypotheses_table(pol: dict) -> list[str]:
    lines = ["The original experiment expected: rank 8 minimal capacity, 16 a good balance, 32 the standard "
             "choice, 64 a plateau. Each claim judged from this sweep:", "",
             "| Rank | Original expectation | Verdict | Evidence |", "|---:|---|---|---|"]
    lines += [f"| {h['rank']} | {h['claim']} | **{h['verdict']}** | {h['evidence']} |" for h in pol["hypotheses"]]
    small, large = pol["pair"]
    cmp_ = pol["small_vs_large"]
    if cmp_:
        low_rank = {"equivalent": "SUPPORTED", "worse": "NOT SUPPORTED at this budget",
                    "better": "SUPPORTED (the small rank is even better)"}[cmp_["verdict"]]
        lines += ["", f"Low-rank hypothesis (\"if rank {small} works nearly as well as rank {large}, the adaptation "
                  f"is low-dimensional\"): **{low_rank}** on eval loss ({cmp_['verdict']}, {cmp_['rule']})."]
    return lines


def learned_section(pol: dict, full_ft: dict | None, sub: dict | None) -> list[str]:
    rows = pol["rows"]
    ranks = [r for r in pol["ranks"] if rows[str(r)].get("spectra")]
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
        lines.append(f"| {r} | " + cells(rows[str(r)]["spectra"]["overall"]))
    full_spec = full_ft.get("spectra") if full_ft else None
    if full_spec:
        lines.append("| full FT | " + cells(full_spec["overall"]))
    types = sorted(rows[str(ranks[0])]["spectra"]["by_type"])
    lines += ["", "Effective rank by module type:", "",
              "| Module | " + " | ".join(f"r={r}" for r in ranks) + (" | full FT |" if full_spec else " |"),
              "|---|" + "---:|" * (len(ranks) + bool(full_spec))]
    for t in types:
        vals = [f"{rows[str(r)]['spectra']['by_type'][t]['effective_rank']:.2f}" for r in ranks]
        if full_spec:
            vals.append(f"{full_spec['by_type'][t]['effective_rank']:.1f}")
        lines.append(f"| {t} | " + " | ".join(vals) + " |")
    top = rows[str(ranks[-1])]["spectra"]["overall"]
    lines += ["", f"At r={ranks[-1]} the update uses an effective rank of {top['effective_rank']:.1f} "
                  f"({top['effective_rank'] / ranks[-1]:.0%} of r), and {top['energy_rank_90']:.1f} directions hold "
                  f"90% of its energy: "
                  + ("the extra capacity is largely unused." if top["energy_rank_90"] < ranks[-1] / 4 else
                     "the adapter spreads its update over many of its directions.")]
    lines += [""] + subspace_lines(sub)
    return lines


SPACES = (("A", "A matrices (input directions; Hu et al.'s measure)"),
          ("delta_out", "ΔW output directions (left-singular vectors of B·A)"))


def subspace_lines(sub: dict | None) -> list[str]:
    if not sub:
        return ["Subspace similarity needs the saved adapters of two trials to compare (two ranks on one seed, "
                "or two seeds of one rank); none were available."]
    out = ["Subspace similarity φ (Hu et al. 2021 §7.2): overlap of the top-i and top-j singular directions of "
           "two adapters; 1 = same subspace, random ≈ max(i, j)/d. Means over layers. Hu et al. compare the A "
           "matrices; after a short run A is still near its random initialisation, so the output directions of "
           "ΔW are shown too."]
    for kind, label in (("small_vs_large", "smallest vs largest rank, same seed"),
                        ("seed_vs_seed", "two seeds, largest rank")):
        if kind not in sub:
            continue
        e = sub[kind]
        out += ["", f"**{label}** ({e['names'][0]} vs {e['names'][1]}):", "",
                "| Module | " + " | ".join(f"{s}: φ(1,1) | {s}: φ(r₁,r₂)" for s, _ in SPACES) + " | random φ(1,1) for A |",
                "|---|" + "---:|" * (2 * len(SPACES) + 1)]
        types = sorted(e["spaces"]["A"])
        for t in types:
            cells = [f"{e['spaces'][s][t]['top1']:.3f} | {e['spaces'][s][t]['full']:.3f}" for s, _ in SPACES]
            out.append(f"| {t} | " + " | ".join(cells) + f" | {e['spaces']['A'][t]['top1_random']:.4f} |")
        for space, name in SPACES:
            vals = e["spaces"][space].values()
            top1 = sum(d["top1"] for d in vals) / len(vals)
            rand = sum(d["top1_random"] for d in vals) / len(vals)
            if top1 > 0.5:
                verdict = "the strongest direction is strongly shared (Hu et al. call φ > 0.5 strong)."
            elif top1 > 10 * rand:
                verdict = "the strongest direction is shared above chance, but weakly (φ < 0.5)."
            else:
                verdict = "the strongest directions are not shared beyond chance."
            out += ["", f"- {name}: mean φ(1,1) = {top1:.3f} against {rand:.4f} for random directions: {verdict}"]
    return out


def related_links(sweep: dict) -> list[str]:
    """Links from the report to docs/concepts, relative to where the report was configured to go."""
    import os

    out_dir = sweep["config"]["sweep"]["output_dir"]
    docs = (("lora-rank.md", "LoRA rank, alpha and the scale γ"), ("qlora.md", "QLoRA: 4-bit base, LoRA adapters"),
            ("loss-curves.md", "Reading loss curves across ranks"))
    if os.path.isabs(out_dir):
        return [f"- `docs/concepts/{name}` in the lorarank repository: {title}" for name, title in docs]
    return [f"- [{title}]({os.path.relpath(os.path.join('docs', 'concepts', name), out_dir)})" for name, title in docs]


def caveats(sweep: dict, pol_name: str, pol: dict) -> list[str]:
    cfg = sweep["config"]
    seeds = max(len(pol["rows"][r]["seeds"]) for r in pol["rows"])
    data = sweep["data"]
    out = [f"- **Scaling policy `{pol_name}`:** " + POLICY_TEXT[pol_name].format(
        alpha=cfg["lora"]["alpha"], gammas=_gammas(pol["rows"]))]
    if seeds == 1:
        out.append(f"- **One seed per rank:** differences below about {100 * sweep['config']['report']['tolerance']:.0f}% "
                   "are treated as ties, but with one seed there is no noise estimate; rerun with `--seeds 3` for "
                   "confidence intervals.")
    else:
        out.append(f"- **{seeds} seeds per rank**, paired (same data order and initialisation stream across ranks); "
                   "± values are 95% confidence half-widths.")
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


def render(sweep: dict, baseline: dict | None, summary: dict, figures: list[str]) -> str:
    cfg = sweep["config"]
    lines = ["# LoRA Rank Comparison Results", ""]
    if cfg["report"].get("note"):
        lines += [f"> {cfg['report']['note']}", ""]
    inv = sweep.get("invocations", [])
    wall = sweep.get("sweep_wall_time_seconds")
    lines += [
        "Generated by `lorarank` from the JSON in this directory (`lorarank report <dir>` rebuilds it).",
        "",
        "## Setup",
        "",
        "| | |",
        "|---|---|",
        f"| Model | `{cfg['model']['name']}` ({cfg['model']['dtype']}) |",
        f"| Dataset | `{cfg['data']['dataset']}`: {sweep['data']['n_train']} train / {sweep['data']['n_eval']} eval "
        f"examples, {sweep['data']['prompt_format']} format, loss on response tokens only |",
        f"| LoRA | targets {', '.join(cfg['lora']['target_modules'])}; dropout {cfg['lora']['dropout']:g}; "
        f"alpha policies {', '.join(sweep['axes']['alpha_policies'])} (alpha {cfg['lora']['alpha']:g}) |",
        f"| Ranks / seeds / LRs | {sweep['axes']['ranks']} / {sweep['axes']['seeds']} / "
        f"{[float(f'{x:g}') for x in sweep['axes']['learning_rates']]} |",
        f"| Training | AdamW, {cfg['train']['lr_schedule']} schedule, warmup {cfg['train']['warmup_ratio']:g}, "
        f"batch {cfg['train']['batch_size']} × accumulation {cfg['train']['grad_accum']}, "
        + (f"{cfg['train']['max_steps']} steps" if cfg['train']['max_steps'] else f"{cfg['train']['epochs']:g} epoch(s)")
        + f", grad clip {cfg['train']['max_grad_norm']:g} |",
        f"| Device | {sweep.get('environment', {}).get('device', 'n/a')} |",
        f"| Sweep wall time | {wall:.0f} s over {len(inv)} invocation(s), including model load, data, "
        "evaluation and this report |" if wall else "| Sweep wall time | n/a |",
        "",
    ]
    for pol_name, pol in summary["policies"].items():
        suffix = f" (alpha policy `{pol_name}`)" if len(summary["policies"]) > 1 else ""
        lines += [f"## Results{suffix}", ""] + results_table(pol, baseline, summary.get("full_finetune")) + [""]
        lines += ["Loss = mean cross-entropy per response token (nats); ± = 95% CI over seeds; time = optimisation "
                  "only (evaluation excluded); tok/s counts every non-padding token trained on.", ""]
        fam = family_table(pol, baseline)
        if fam:
            lines += ["Exact-match accuracy per task family (greedy decoding of held-out prompts):", ""] + fam + [""]
        lines += [
            f"## Answers{suffix}", "",
            f"1. **Is there a point of diminishing returns?** {answer_diminishing(pol)}", "",
            f"2. **Does rank {pol['pair'][0]} do as well as rank {pol['pair'][1]}?** {answer_small_vs_large(pol)}", "",
            f"3. **How do trainable parameters scale with rank?** {answer_params(pol)}", "",
            f"4. **Is training time affected by rank?** {answer_time(pol)}", "",
            f"## Were hypotheses confirmed?{suffix}", "",
        ] + hypotheses_table(pol) + [
            "", f"## What the adapters learned{suffix}", "",
        ] + learned_section(pol, summary.get("full_finetune"), (summary.get("subspace") or {}).get(pol_name)) + [
            "", f"## Caveats{suffix}", "",
        ] + caveats(sweep, pol_name, pol) + [""]
    if summary["not_ok"]:
        lines += ["## Failed or diverged trials", "", "| Trial | Status | Error |", "|---|---|---|"]
        lines += [f"| {t['name']} | {t['status']} | {(t['error'] or '').replace('|', '/')[:200]} |"
                  for t in summary["not_ok"]] + [""]
    lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    lines += ["## Related", ""] + related_links(sweep) + [""]
    lines += ["## Files", "",
              "- `all_results.json`: every trial's `run_data.json`, keyed by rank (plus seed/LR/policy suffixes)",
              "- `results.csv`: one row per trial", "- `analysis.json`: the numbers behind the answers above",
              "- `rank_*/run_data.json`, `rank_*/adapter/` (PEFT format: `PeftModel.from_pretrained(base, path)`)",
              "- `sweep.json`: the config, data fingerprint and invocations; `baseline.json`: the base model",
              "- `subspace.json`: φ matrices between adapters (kept so the report rebuilds without the adapters)", ""]
    return "\n".join(lines)
