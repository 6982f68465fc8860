"""Build the analysis model (analysis/model.py) from run_data.json records, in one pass.

For each alpha policy: per rank, pick the learning rate with the lowest mean final eval loss (each
rank judged at its best LR), aggregate that LR's trials over seeds (mean ± 95% CI), then make every
comparison and verdict from them: the recommendation (fixed-sequence TOST), the answers, the
hypotheses, the trends, the capacity gaps. The trials behind each row are recorded in the row
(`RankRow.trials`), so nothing downstream filters trials again. Every object is built complete and
frozen: nothing is patched afterwards.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

from lorarank import cost
from lorarank.analysis import decision
from lorarank.analysis.answers import diminishing_returns, pair_answer
from lorarank.analysis.hypotheses import hypotheses
from lorarank.analysis.model import (Analysis, CapacityUse, Curve, LrChoice, NotOk, ParamsFit, PolicySummary, RankRow,
                                     SubspaceEntry, Thresholds, TimeFit, TrialRef)
from lorarank.analysis.sweep_info import Baseline, Setup
from lorarank.analysis.stats import Estimate, fit_line, mean_ci

# (policy, rows) -> the subspace-similarity entries of that policy's adapters (analysis/build.py)
SubspaceOf = Callable[[str, dict[int, RankRow]], dict[str, SubspaceEntry]]


def _by(items: list[dict], key: str) -> dict:
    out = defaultdict(list)
    for it in items:
        out[it[key]].append(it)
    return out


def choose_lr(trials: list[dict]) -> LrChoice:
    """Best learning rate by mean final eval loss, with every candidate's mean."""
    means = {lr: sum(t["final_eval_loss"] for t in ts) / len(ts) for lr, ts in _by(trials, "learning_rate").items()}
    return LrChoice(min(means, key=means.get), {f"{k:g}": v for k, v in sorted(means.items())})


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


def mean_curve(trials: list[dict], xkey: str, ykey: str) -> Curve:
    """Mean, min and max across seeds at each logged step present in every seed."""
    per_step = defaultdict(list)
    for t in trials:
        for x, y in zip(t[xkey], t[ykey]):
            per_step[x].append(y)
    xs = sorted(x for x, ys in per_step.items() if len(ys) == len(trials))
    return Curve(xs, [sum(per_step[x]) / len(per_step[x]) for x in xs], [min(per_step[x]) for x in xs],
                 [max(per_step[x]) for x in xs], len(trials))


def train_loss_tail(trial: dict, share: float) -> float | None:
    """Mean train loss over the last `share` of the logged windows (at least one). A logged window
    averages a few batches only, so the last one alone swings by more than the ranks differ."""
    losses = trial.get("train_losses") or []
    if not losses:
        return None
    k = max(1, round(share * len(losses)))
    return sum(losses[-k:]) / k


def _estimate(trials: list[dict], key: str) -> Estimate | None:
    vals = [t[key] for t in trials if t.get(key) is not None]
    return mean_ci(vals) if vals else None


def rank_row(trials: list[dict], lr: LrChoice, baseline: Baseline | None, thresholds: Thresholds) -> RankRow:
    """Mean ± CI over seeds of every per-trial metric, for one rank at its chosen LR."""
    trials = sorted(trials, key=lambda t: t["seed"])
    t0 = trials[0]
    accs = [t["accuracy"] for t in trials if t.get("accuracy")]
    per_family = None
    if accs:
        per_family = {f: sum(a["per_family"][f] for a in accs) / len(accs) for f in sorted(accs[0]["per_family"])}
    tails = [x for x in (train_loss_tail(t, thresholds.train_tail_share) for t in trials) if x is not None]
    evals = [t["final_eval_loss"] for t in trials]
    return RankRow(
        rank=t0["rank"], trials=[TrialRef(t["trial_id"], t["name"], t["seed"], t["rank"]) for t in trials],
        learning_rate=lr, trainable_params=t0["trainable_params"], total_params=t0["total_params"],
        trainable_ratio=t0["trainable_ratio"], effective_scale=t0["effective_scale"], lora_alpha=t0["lora_alpha"],
        adapter_bytes=t0.get("adapter_bytes"), final_eval_loss=mean_ci(evals),
        train_loss=mean_ci(tails) if tails else None, train_loss_range=(min(tails), max(tails)) if tails else None,
        eval_loss_range=(min(evals), max(evals)),
        training_time_seconds=_estimate(trials, "training_time_seconds"),
        tokens_per_second=_estimate(trials, "tokens_per_second"),
        peak_memory_bytes=_estimate(trials, "peak_memory_bytes"),
        accuracy=mean_ci([a["overall"] for a in accs]) if accs else None, per_family=per_family,
        spectra=spectra_row(trials), train_curve=mean_curve(trials, "steps", "train_losses"),
        eval_curve=mean_curve(trials, "eval_steps", "eval_losses"),
        state_bytes=cost.training_state_bytes(t0["trainable_params"]),
        **decision.row_extras(trials, baseline),
    )


def params_fit(rows: dict[int, RankRow], trials: list[dict]) -> ParamsFit:
    ranks = sorted(rows)
    fit = fit_line(ranks, [rows[r].trainable_params for r in ranks]) if len(ranks) > 1 else None
    per_rank = trials[0].get("params_per_rank")
    exact = per_rank is not None and all(t["trainable_params"] == t["rank"] * per_rank for t in trials)
    return ParamsFit(fit, per_rank, exact)


def time_fit(trials: list[dict], thresholds: Thresholds) -> TimeFit | None:
    """time = a + b·r over all chosen trials; b·r_max / a is the measured relative LoRA overhead at
    r_max, compared with cost.lora_overhead at the share of tokens whose LM-head output training
    computed (completion tokens only)."""
    ranks = [t["rank"] for t in trials]
    if len(set(ranks)) < 2 or any(t.get("training_time_seconds") is None for t in trials):
        return None  # one rank, or adapters whose trainer logged no time (`lorarank analyze`)
    fit = fit_line(ranks, [t["training_time_seconds"] for t in trials])
    r_max = max(ranks)
    measured = fit.slope * r_max / fit.intercept if fit.intercept > 0 else None
    predicted = None
    t0 = trials[0]
    if t0.get("params_per_rank") and t0.get("matmul_params") and t0.get("tokens_trained"):
        predicted = cost.lora_overhead(cost.Shape.from_run_data(t0), r_max, cost.trained_head_share(t0))
    negligible = measured is not None and measured < thresholds.negligible_time_overhead
    return TimeFit(fit, r_max, measured, predicted, negligible)


def capacity_use(rows: dict[int, RankRow], thresholds: Thresholds) -> CapacityUse | None:
    with_spectra = [r for r in sorted(rows) if rows[r].spectra]
    if not with_spectra:
        return None
    top, r = rows[with_spectra[-1]].spectra["overall"], with_spectra[-1]
    return CapacityUse(r, top["effective_rank"], top["energy_rank_90"],
                       top["energy_rank_90"] < thresholds.unused_capacity_share * r)


def summarize_policy(policy: str, trials: list[dict], thresholds: Thresholds, baseline: Baseline | None,
                     argv: list[str] | None = None, subspace_of: SubspaceOf | None = None) -> PolicySummary:
    by_rank_all = _by(trials, "rank")
    ranks = sorted(by_rank_all)
    chosen: dict[int, list[dict]] = {}
    rows: dict[int, RankRow] = {}
    for r in ranks:
        lr = choose_lr(by_rank_all[r])
        chosen[r] = [t for t in by_rank_all[r] if t["learning_rate"] == lr.chosen]
        rows[r] = rank_row(chosen[r], lr, baseline, thresholds)
    eval_seeds = {r: {t["seed"]: t["final_eval_loss"] for t in ts} for r, ts in chosen.items()}
    on_loss, on_acc = decision.recommendations(chosen, baseline, thresholds, argv)
    flat = [t for ts in chosen.values() for t in ts]
    return PolicySummary(
        policy=policy, ranks=ranks, rows=rows, n_seeds=max(len(rows[r].trials) for r in ranks),
        per_seed_eval=eval_seeds, recommendation=on_loss, recommendation_accuracy=on_acc,
        returns=diminishing_returns(on_loss, ranks, eval_seeds),
        pair=pair_answer(chosen, eval_seeds, decision.accuracy_per_seed(chosen), on_loss, on_acc),
        params=params_fit(rows, flat), time=time_fit(flat, thresholds),
        hypotheses=hypotheses(on_loss, ranks, eval_seeds), capacity_use=capacity_use(rows, thresholds),
        forgetting_trend=decision.forgetting_trend(chosen, baseline), intruder_trend=decision.intruder_trend(chosen),
        intruders_vs_forgetting=decision.intruders_vs_forgetting(chosen, baseline), gaps=decision.gaps(chosen),
        rank_scaling=decision.rank_scaling(chosen),
        subspace=subspace_of(policy, rows) if subspace_of else {})


def full_finetune_row(trials: list[dict], baseline: Baseline | None, thresholds: Thresholds) -> RankRow | None:
    """The full fine-tuning reference: its best LR, aggregated over seeds like a rank."""
    if not trials:
        return None
    lr = choose_lr(trials)
    return rank_row([t for t in trials if t["learning_rate"] == lr.chosen], lr, baseline, thresholds)


def summarize(results: list[dict], thresholds: Thresholds, baseline: Baseline | None = None,
              setup: Setup | None = None, subspace_of: SubspaceOf | None = None) -> Analysis:
    """The analysis model of run_data records (any status).

    results: the records as run_data.json holds them; baseline: the base model (sweep_info.baseline_of);
    setup: the sweep's configuration (sweep_info.setup_of), needed to render a README; subspace_of: the
    subspace similarity of a policy's adapters (analysis/build.py reads them from disk)."""
    ok = [r for r in results if r.get("status") == "ok" and r.get("final_eval_loss") is not None]
    lora_ok = [r for r in ok if r.get("method", "lora") == "lora"]
    policies = list(dict.fromkeys(r["alpha_policy"] for r in results if r.get("method", "lora") == "lora"))
    argv = setup.argv if setup else None
    return Analysis(
        thresholds=thresholds, setup=setup, baseline=baseline,
        policies={p: summarize_policy(p, [r for r in lora_ok if r["alpha_policy"] == p], thresholds, baseline, argv,
                                      subspace_of)
                  for p in policies if any(r["alpha_policy"] == p for r in lora_ok)},
        full_finetune=full_finetune_row([r for r in ok if r.get("method") == "full"], baseline, thresholds),
        not_ok=[NotOk(r["name"], r["status"], r.get("error")) for r in results if r.get("status") != "ok"],
    )
