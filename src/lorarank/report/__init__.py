"""Rebuild every aggregate output of a sweep directory from its JSON files alone.

Reads sweep.json, baseline.json and rank_*/run_data.json; writes all_results.json, results.csv,
analysis.json, rank_comparison.png and README.md. No model, no data, no training needed.
"""

from __future__ import annotations

from pathlib import Path

from lorarank import store
from lorarank.analysis.subspace import sweep_similarity
from lorarank.analysis.summary import summarize
from lorarank.errors import UserError
from lorarank.report import markdown, plots

SUBSPACE_FILE = "subspace.json"
CSV_KEYS = ["name", "method", "rank", "seed", "learning_rate", "alpha_policy", "lora_alpha", "effective_scale", "status",
            "trainable_params", "total_params", "final_train_loss", "final_eval_loss", "training_time_seconds",
            "tokens_per_second", "tokens_trained", "peak_memory_bytes", "adapter_bytes", "trial_id"]


def load_results(out: Path) -> tuple[dict, dict | None, list[dict]]:
    """(sweep.json, baseline.json or None, run_data of this sweep's trials sorted by policy, lr, seed, rank)."""
    sweep_file = out / store.SWEEP_FILE
    if not sweep_file.is_file():
        raise UserError(f"{out} is not a lorarank sweep directory (no {store.SWEEP_FILE}): "
                        "pass the --output-dir of a finished `lorarank run`")
    sweep = store.read_json(sweep_file)
    base_file = out / store.BASELINE_FILE
    baseline = store.read_json(base_file) if base_file.is_file() else None
    runs = []
    for f in sorted(out.glob(f"*/{store.RUN_DATA}")):
        rd = store.read_json(f)
        fixed = {k: v for k, v in rd.get("config", {}).items() if k != "trial"}
        if fixed == sweep["fixed_config"]:  # never mix results of another config into the report
            runs.append(rd)
    if not runs:
        raise UserError(f"{out} has no finished trials yet: run `lorarank run` with --output-dir {out}")
    policies = {p: i for i, p in enumerate(sweep["axes"]["alpha_policies"])}
    runs.sort(key=lambda r: (r.get("method", "lora") != "lora", policies.get(r["alpha_policy"], 99),
                             r["learning_rate"], r["seed"], r["rank"]))
    return sweep, baseline, runs


def all_results_key(run: dict) -> str:
    return run["name"].removeprefix("rank_")


def chosen_trials(summary_policy: dict, runs: list[dict], policy: str) -> dict[int, list[dict]]:
    """The trials behind each rank's row: its chosen learning rate, every seed."""
    out = {}
    for r, row in summary_policy["rows"].items():
        lr = row["learning_rate"]["chosen"]
        out[int(r)] = [t for t in runs if t["status"] == "ok" and t.get("method", "lora") == "lora"
                       and t["rank"] == int(r) and t["alpha_policy"] == policy and t["learning_rate"] == lr]
    return out


def build_report(out: Path | str) -> dict[str, dict]:
    out = Path(out)
    sweep, baseline, runs = load_results(out)
    tolerance = sweep["config"]["report"]["tolerance"]
    summary = summarize(runs, tolerance, baseline)
    # subspace similarity needs the saved adapters; its JSON keeps it for later rebuilds without them
    sub_file = out / SUBSPACE_FILE
    previous = store.read_json(sub_file) if sub_file.is_file() else None
    summary["subspace"] = sweep_similarity(out, summary, runs, previous)
    if summary["subspace"]:
        store.write_json(sub_file, summary["subspace"])
    all_results = {all_results_key(r): r for r in runs}
    store.write_json(out / store.ALL_RESULTS, all_results)
    store.write_csv(out / store.RESULTS_CSV, [{k: r.get(k) for k in CSV_KEYS} for r in runs])
    store.write_json(out / "analysis.json", summary)
    figures = []
    for i, (policy, pol) in enumerate(summary["policies"].items()):
        suffix = "" if i == 0 else f"_{policy}"
        chosen = chosen_trials(pol, runs, policy)
        for name, fig in (
            (f"rank_comparison{suffix}.png", plots.rank_comparison(pol, chosen, baseline, policy)),
            (f"adapter_analysis{suffix}.png", plots.adapter_analysis(pol, summary["full_finetune"], policy)),
            (f"subspace_similarity{suffix}.png",
             plots.subspace_similarity((summary["subspace"] or {}).get(policy), policy)),
            (f"cost{suffix}.png", plots.cost(pol, policy)),
        ):
            if fig is not None:
                plots.save(fig, out / name)
                figures.append(name)
    store.write_text(out / "README.md", markdown.render(sweep, baseline, summary, figures))
    return all_results
