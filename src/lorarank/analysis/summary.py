"""From saved run_data.json records to the numbers that answer the four questions.

For each alpha policy: per rank, pick the learning rate with the lowest mean final eval loss (each
rank judged at its best LR), then aggregate over seeds (mean ± 95% CI), find the knee, compare the
smallest and largest ranks, fit parameters and time against rank, summarise what the adapters
learned (spectra), and judge the original experiment's hypotheses.
"""

from __future__ import annotations

from collections import defaultdict

from lorarank.analysis.stats import compare, compare_accuracy, fit_line, find_knee, mean_ci


def _by(items, key):
    out = defaultdict(list)
    for it in items:
        out[it[key]].append(it)
    return out


def choose_lr(trials: list[dict]) -> tuple[float, dict[float, float]]:
    """Best learning rate by mean final eval loss, and every candidate's mean."""
    means = {lr: sum(t["final_eval_loss"] for t in ts) / len(ts) for lr, ts in _by(trials, "learning_rate").items()}
    return min(means, key=means.get), means


SPECTRAL_KEYS = ("effective_rank", "stable_rank", "energy_rank_90", "frobenius", "amplification")


def _avg(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def spectra_row(trials: list[dict]) -> dict | None:
    """Adapter spectra of one rank, averaged over seeds: overall, per module type, per layer."""
    specs = [t["spectra"] for t in trials if t.get("spectra")]
    if not specs:
        return None
    types = sorted(specs[0]["by_type"])
    layers = sorted(specs[0]["by_layer"], key=int)
    n_sv = min(len(s["by_type"][t]["normalized_spectrum"]) for s in specs for t in types)
    return {
        "overall": {k: _avg([s["overall"][k] for s in specs]) for k in SPECTRAL_KEYS},
        "by_type": {t: {k: _avg([s["by_type"][t][k] for s in specs]) for k in SPECTRAL_KEYS} for t in types},
        "by_layer": {i: {k: _avg([s["by_layer"][i][k] for s in specs]) for k in ("effective_rank", "frobenius")}
                     for i in layers},
        "normalized_spectrum": [_avg([s["by_type"][t]["normalized_spectrum"][k] for s in specs for t in types])
                                for k in range(n_sv)],
    }


def rank_row(trials: list[dict]) -> dict:
    """Mean ± CI over seeds of every per-trial metric, for one rank at its chosen LR."""
    def est(key):
        vals = [t[key] for t in trials if t.get(key) is not None]
        return mean_ci(vals).to_dict() if vals else None

    row = {
        "seeds": sorted(t["seed"] for t in trials),
        "trainable_params": trials[0]["trainable_params"],
        "total_params": trials[0]["total_params"],
        "trainable_ratio": trials[0]["trainable_ratio"],
        "effective_scale": trials[0]["effective_scale"],
        "lora_alpha": trials[0]["lora_alpha"],
        "adapter_bytes": trials[0].get("adapter_bytes"),
        "final_eval_loss": est("final_eval_loss"),
        "final_train_loss": est("final_train_loss"),
        "training_time_seconds": est("training_time_seconds"),
        "tokens_per_second": est("tokens_per_second"),
        "peak_memory_bytes": est("peak_memory_bytes"),
        "accuracy": None,
        "per_family": None,
    }
    accs = [t["accuracy"] for t in trials if t.get("accuracy")]
    if accs:
        row["accuracy"] = mean_ci([a["overall"] for a in accs]).to_dict()
        fams = sorted(accs[0]["per_family"])
        row["per_family"] = {f: sum(a["per_family"][f] for a in accs) / len(accs) for f in fams}
    row["spectra"] = spectra_row(trials)
    return row


def per_seed(trials_by_rank: dict[int, list[dict]], key: str) -> dict[int, dict[int, float]]:
    return {r: {t["seed"]: t[key] for t in ts if t.get(key) is not None} for r, ts in trials_by_rank.items()}


def pick_pair(ranks: list[int]) -> tuple[int, int]:
    """The original asks "does rank 8 do as well as rank 64?": use those when swept, else min and max."""
    return (8, 64) if 8 in ranks and 64 in ranks else (min(ranks), max(ranks))


def params_fit(rows: dict[int, dict], trials: list[dict]) -> dict:
    ranks = sorted(rows)
    fit = fit_line(ranks, [rows[r]["trainable_params"] for r in ranks]) if len(ranks) > 1 else None
    per_rank = trials[0].get("params_per_rank")
    exact = per_rank is not None and all(t["trainable_params"] == t["rank"] * per_rank for t in trials)
    return {"fit": fit.to_dict() if fit else None, "per_rank_formula": per_rank, "exact": exact}


def time_fit(trials: list[dict]) -> dict | None:
    """time = a + b·r over all trials; b·r_max / a is the measured relative LoRA overhead at r_max,
    to compare with the FLOP prediction 6·r·Σ(d_in+d_out) / (4·N_body + 4·N_head·f), where f is the
    share of tokens whose LM-head output is computed (completion tokens only)."""
    ranks = [t["rank"] for t in trials]
    if len(set(ranks)) < 2:
        return None
    fit = fit_line(ranks, [t["training_time_seconds"] for t in trials])
    r_max = max(ranks)
    measured = fit.slope * r_max / fit.intercept if fit.intercept > 0 else None
    predicted = None
    t0 = trials[0]
    if t0.get("params_per_rank") and t0.get("matmul_params") and t0.get("tokens_trained"):
        f = t0["completion_tokens_trained"] / t0["tokens_trained"]
        base = 4 * t0["matmul_params"]["body"] + 4 * t0["matmul_params"]["head"] * f
        predicted = 6 * r_max * t0["params_per_rank"] / base
    return {"fit": fit.to_dict(), "r_max": r_max, "measured_overhead": measured, "predicted_overhead": predicted}


def _within(pol: dict, r: int) -> bool | None:
    check = (pol["knee"] or {}).get("checks", {}).get(str(r))
    return None if check is None else check["within_noise"]


def _loss(pol: dict, r: int) -> float:
    return pol["rows"][str(r)]["final_eval_loss"]["mean"]


def hypotheses(pol: dict, baseline: dict | None, tolerance: float) -> list[dict]:
    """The original experiment's expectations, each judged from this sweep's numbers.

    "Within noise" is the knee rule: paired 95% CI across seeds, or the tolerance with one seed."""
    ranks, knee = pol["ranks"], pol["knee"]
    best = knee["best"] if knee else None
    out = []

    def row(rank, claim, verdict, evidence):
        out.append({"rank": rank, "claim": claim, "verdict": verdict, "evidence": evidence})

    def missing(rank, claim, need):
        row(rank, claim, "INCONCLUSIVE", f"rank {need} was not part of this sweep")

    claim8 = "minimal adaptation, may underfit complex tasks"
    if 8 not in ranks or best is None:
        missing(8, claim8, 8)
    else:
        gap = _loss(pol, 8) - _loss(pol, best)
        ev = f"eval loss {_loss(pol, 8):.4f} vs {_loss(pol, best):.4f} at the best rank {best} ({gap:+.4f})"
        worse = not _within(pol, 8)
        row(8, claim8, "CONFIRMED" if worse else "REFUTED",
            ev + ("; measurably worse than the best rank" if worse else "; within noise of the best rank"))

    claim16 = "good balance for simple tasks"
    if 16 not in ranks or best is None:
        missing(16, claim16, 16)
    elif baseline:
        share = (baseline["eval_loss"] - _loss(pol, 16)) / (baseline["eval_loss"] - _loss(pol, best))
        row(16, claim16, "CONFIRMED" if share >= 0.9 or _within(pol, 16) else "REFUTED",
            f"rank 16 achieves {share:.0%} of the best rank's eval-loss improvement over the base model "
            f"with {pol['rows']['16']['trainable_params'] / pol['rows'][str(best)]['trainable_params']:.0%} of its "
            "parameters (balance = at least 90%)")
    else:
        row(16, claim16, "CONFIRMED" if _within(pol, 16) else "REFUTED",
            "within noise of the best rank" if _within(pol, 16) else "measurably worse than the best rank")

    claim32 = "standard choice, good for most tasks"
    if 32 not in ranks or best is None:
        missing(32, claim32, 32)
    else:
        ok = _within(pol, 32)
        row(32, claim32, "CONFIRMED" if ok else "REFUTED",
            f"eval loss {_loss(pol, 32):.4f}, " + ("within noise of the best rank" if ok else
                                                    f"measurably worse than rank {best} ({_loss(pol, best):.4f})"))

    claim64 = "maximum capacity, may not improve much over 32"
    if 64 not in ranks or 32 not in ranks:
        missing(64, claim64, 64 if 64 not in ranks else 32)
    else:
        from lorarank.analysis.stats import compare

        seeds = {r: {s: v for s, v in pol["per_seed_eval"][str(r)].items()} for r in (32, 64)}
        cmp_ = compare(seeds[64], seeds[32], tolerance)
        d = cmp_["difference"]["mean"]
        verdict = {"better": "REFUTED", "equivalent": "CONFIRMED", "worse": "CONFIRMED"}[cmp_["verdict"]]
        row(64, claim64, verdict, f"rank 64 − rank 32 eval loss = {d:+.4f} ({cmp_['relative']:+.1%}): "
            f"{'a clear improvement' if verdict == 'REFUTED' else 'no measurable improvement'} ({cmp_['rule']})")
    return out


def summarize_policy(trials: list[dict], tolerance: float, baseline: dict | None = None) -> dict:
    by_rank_all = _by(trials, "rank")
    ranks = sorted(by_rank_all)
    chosen: dict[int, list[dict]] = {}
    lrs = {}
    for r in ranks:
        lr, means = choose_lr(by_rank_all[r])
        lrs[r] = {"chosen": lr, "candidates": {f"{k:g}": v for k, v in sorted(means.items())}}
        chosen[r] = [t for t in by_rank_all[r] if t["learning_rate"] == lr]
    rows = {r: {**rank_row(chosen[r]), "learning_rate": lrs[r]} for r in ranks}
    small, large = pick_pair(ranks)
    eval_seeds = per_seed(chosen, "final_eval_loss")
    out = {
        "ranks": ranks,
        "rows": {str(r): rows[r] for r in ranks},
        "knee": find_knee(ranks, eval_seeds, tolerance) if len(ranks) > 1 else None,
        "pair": [small, large],
        "small_vs_large": compare(eval_seeds[small], eval_seeds[large], tolerance) if small != large else None,
        "small_vs_large_accuracy": None,
        "params": params_fit(rows, [t for ts in chosen.values() for t in ts]),
        "time": time_fit([t for ts in chosen.values() for t in ts]),
        "per_seed_eval": {str(r): {str(k): v for k, v in eval_seeds[r].items()} for r in ranks},
    }
    with_acc = {r: [t for t in chosen[r] if t.get("accuracy")] for r in (small, large)}
    if small != large and with_acc[small] and with_acc[large]:
        out["small_vs_large_accuracy"] = compare_accuracy(with_acc[small], with_acc[large], tolerance)
    out["hypotheses"] = hypotheses(out, baseline, tolerance)
    return out


def full_finetune_row(trials: list[dict]) -> dict | None:
    """The full fine-tuning reference: its best LR, aggregated over seeds like a rank."""
    if not trials:
        return None
    lr, means = choose_lr(trials)
    row = rank_row([t for t in trials if t["learning_rate"] == lr])
    row["learning_rate"] = {"chosen": lr, "candidates": {f"{k:g}": v for k, v in sorted(means.items())}}
    return row


def summarize(results: list[dict], tolerance: float, baseline: dict | None = None,
              subspace: dict | None = None) -> dict:
    ok = [r for r in results if r.get("status") == "ok" and r.get("final_eval_loss") is not None]
    lora_ok = [r for r in ok if r.get("method", "lora") == "lora"]
    policies = list(dict.fromkeys(r["alpha_policy"] for r in results if r.get("method", "lora") == "lora"))
    return {
        "tolerance": tolerance,
        "policies": {p: summarize_policy([r for r in lora_ok if r["alpha_policy"] == p], tolerance, baseline)
                     for p in policies if any(r["alpha_policy"] == p for r in lora_ok)},
        "full_finetune": full_finetune_row([r for r in ok if r.get("method") == "full"]),
        "subspace": subspace,
        "not_ok": [{"name": r["name"], "status": r["status"], "error": r.get("error")} for r in results
                   if r.get("status") != "ok"],
    }
