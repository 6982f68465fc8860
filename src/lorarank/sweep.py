"""A sweep: expand ranks x seeds x learning rates x alpha policies into trials and run them.

Everything except the swept axes is held equal: one tokenized dataset, one base model loaded once
per process, the same data order and initialisation seed for every rank of a seed. Trials whose
run_data.json already exists are skipped, so rerunning the same command resumes a sweep.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from lorarank import env, lora, store
from lorarank.config import Config, config_hash
from lorarank.data.format import PreparedData, prepare
from lorarank.errors import UserError
from lorarank.evaluate import task_accuracy
from lorarank.model import load_base, pick_device
from lorarank.train import eval_loss, packing_matches
from lorarank.trial import Trial, run_trial

# settings that change speed but not results; kept out of trial ids so they never split a sweep
_NOT_IN_ID = {("train", "num_threads"), ("train", "checkpoint_every"), ("train", "packing"), ("sweep", "output_dir"),
              ("sweep", "executor")}


def fixed_config(cfg: Config) -> dict:
    """Everything a trial's result depends on except the swept axes."""
    d = copy.deepcopy(cfg.to_dict())
    for section, key in _NOT_IN_ID:
        d[section].pop(key, None)
    for axis in ("ranks", "seeds", "learning_rates", "alpha_policies", "full_finetune_lrs"):
        d["sweep"].pop(axis)
    d.pop("sweep")
    d.pop("report")  # how results are presented never changes them
    return d


def trial_config(cfg: Config, rank: int, seed: int, lr: float, policy: str, method: str = "lora") -> dict:
    trial = {"rank": rank, "seed": seed, "learning_rate": lr, "alpha_policy": policy}
    if method != "lora":  # keeps the ids of LoRA trials what they were before this field existed
        trial["method"] = method
    return {**fixed_config(cfg), "trial": trial}


def expand(cfg: Config) -> list[tuple[Trial, dict]]:
    """All trials in a stable order (policy, lr, seed, rank). Directory names carry a suffix only
    for axes with more than one value, so a plain rank sweep writes rank_8/, rank_16/, ... as the
    original; trial ids hash the full config and are what resume matches on."""
    s = cfg.sweep
    out = []
    for policy, lr, seed, rank in itertools.product(s.alpha_policies, s.learning_rates, s.seeds, s.ranks):
        name = f"rank_{rank}"
        if len(s.seeds) > 1:
            name += f"_s{seed}"
        if len(s.learning_rates) > 1:
            name += f"_lr{lr:g}"
        if len(s.alpha_policies) > 1:
            name += f"_{policy}"
        tc = trial_config(cfg, rank, seed, lr, policy)
        out.append((Trial(rank, seed, lr, policy, name, config_hash(tc)), tc))
    for lr, seed in itertools.product(s.full_finetune_lrs, s.seeds):
        name = "full_ft" + (f"_s{seed}" if len(s.seeds) > 1 else "") + (f"_lr{lr:g}" if len(s.full_finetune_lrs) > 1 else "")
        tc = trial_config(cfg, 0, seed, lr, "", method="full")
        out.append((Trial(0, seed, lr, "", name, config_hash(tc), method="full"), tc))
    return out


def place(trials: list[tuple[Trial, dict]], recorded: dict[str, dict]) -> list[tuple[Trial, dict]]:
    """Directory of each trial: where it was recorded before (resume), else its plain name, unless
    another trial already holds that name (e.g. the same rank at a different learning rate from an
    earlier run): then the name gets the trial id, so no result is ever overwritten."""
    taken = {rd["_dir"]: tid for tid, rd in recorded.items()}
    out = []
    for trial, tc in trials:
        name = recorded[trial.trial_id]["_dir"] if trial.trial_id in recorded else trial.name
        if taken.get(name, trial.trial_id) != trial.trial_id:
            name = f"{trial.name}_{trial.trial_id[:8]}"
        taken[name] = trial.trial_id
        out.append((dataclasses.replace(trial, name=name), tc))
    return out


@dataclass
class SweepOutcome:
    out_dir: Path
    results: dict[str, dict]  # all_results.json: key -> run_data
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0

    @property
    def failed(self) -> list[str]:
        return [k for k, r in self.results.items() if r.get("status") != "ok"]


def prepare_output_dir(cfg: Config) -> Path:
    """Create the output dir, check it is writable, and refuse to mix a different config into it."""
    out = Path(cfg.sweep.output_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"output dir {out} is not writable ({exc.strerror}): pass --output-dir to a writable directory") from None
    sweep_file = out / store.SWEEP_FILE
    if sweep_file.is_file():
        previous = store.read_json(sweep_file)
        if previous.get("fingerprint") != config_hash(fixed_config(cfg)):
            changed = _changed_keys(previous.get("fixed_config", {}), fixed_config(cfg))
            raise UserError(
                f"{out} holds a sweep with a different config (changed: {', '.join(changed) or 'unknown'}); "
                "results of different configs are never mixed: pass a new --output-dir, or delete that directory"
            )
    return out


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed_keys(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


def run_sweep(cfg: Config, progress: bool = True) -> SweepOutcome:
    start = time.perf_counter()
    out = prepare_output_dir(cfg)
    recorded = store.recorded_trials(out)
    trials = place(expand(cfg), recorded)
    done = {tid for tid, rd in recorded.items() if rd.get("status") in store.FINAL_STATUSES}
    todo = [(t, tc) for t, tc in trials if t.trial_id not in done]
    device = pick_device()
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    outcome = SweepOutcome(out, {}, skipped=[t.name for t, _ in trials if t.trial_id in done])
    _log(f"sweep: {len(trials)} trials ({len(todo)} to run, {len(outcome.skipped)} already done) -> {out}")
    base, tok = load_base(cfg.model, device)
    lora.check_ranks(base, cfg.lora.target_modules, cfg.sweep.ranks)
    data = prepare(cfg.data, tok)
    _log(f"data: {len(data.train)} train / {len(data.eval)} eval examples, {data.prompt_format} format, "
         f"{data.dropped_too_long} dropped as longer than {cfg.data.max_length} tokens")
    if cfg.train.packing and not packing_matches(base, data.eval[:4], tok.pad_token_id, device):
        _log("this model mixes packed examples in attention: padding batches instead (slower, same results)")
        cfg.train.packing = False
    _write_sweep_file(out, cfg, data, trials, device)
    ensure_baseline(out, base, tok, data, cfg, device)
    bar = tqdm(total=len(todo), desc="sweep", unit="trial", disable=not progress, position=0)
    for trial, tc in todo:
        step_bar = tqdm(total=None, desc=trial.name, unit="step", leave=False, disable=not progress, position=1)
        base, run_data = run_trial(base, tok, data, cfg, trial, tc, out, device,
                                   progress=lambda s, loss: _tick(step_bar, loss))
        step_bar.close()
        outcome.trained.append(trial.name)
        bar.update(1)
        tqdm.write(summary_line(run_data))
    bar.close()
    outcome.wall_seconds = time.perf_counter() - start
    outcome.results = aggregate(out, outcome.wall_seconds, bool(todo))
    return outcome


def _tick(bar, loss: float) -> None:
    bar.update(1)
    bar.set_postfix(loss=f"{loss:.4f}")


def _log(msg: str) -> None:
    tqdm.write(f"[lorarank] {msg}")


def summary_line(r: dict) -> str:
    acc = f", accuracy {r['accuracy']['overall']:.1%}" if r.get("accuracy") else ""
    if r["status"] != "ok":
        return f"[lorarank] {r['name']}: {r['status'].upper()} - {r['error']}"
    scale = f"gamma {r['effective_scale']:.3g}" if r.get("effective_scale") is not None else "full fine-tuning"
    return (f"[lorarank] {r['name']}: {r['trainable_params']:,} trainable params, {scale}, "
            f"train loss {r['final_train_loss']:.4f}, eval loss {r['final_eval_loss']:.4f}{acc}, "
            f"{r['training_time_seconds']:.1f} s ({r['tokens_per_second']:.0f} tok/s)")


def _write_sweep_file(out: Path, cfg: Config, data: PreparedData, trials: list[tuple[Trial, dict]],
                      device: torch.device) -> None:
    """sweep.json: the fixed config, its fingerprint, the union of axes run in this directory."""
    path = out / store.SWEEP_FILE
    previous = store.read_json(path) if path.is_file() else {}
    axes = previous.get("axes", {})
    for axis in ("ranks", "seeds", "learning_rates", "alpha_policies", "full_finetune_lrs"):
        merged = list(axes.get(axis, [])) + [v for v in getattr(cfg.sweep, axis) if v not in axes.get(axis, [])]
        axes[axis] = sorted(merged) if axis != "alpha_policies" else merged
    store.write_json(path, {
        **previous,
        "fingerprint": config_hash(fixed_config(cfg)),
        "fixed_config": fixed_config(cfg),
        "config": cfg.to_dict(),
        "axes": axes,
        "data": {"fingerprint": data.fingerprint, "n_records": data.n_records, "n_train": len(data.train),
                 "n_eval": len(data.eval), "prompt_format": data.prompt_format,
                 "dropped_too_long": data.dropped_too_long, "families": data.families},
        "environment": env.describe(device),
        "invocations": previous.get("invocations", []),
    })


def ensure_baseline(out: Path, base, tok, data: PreparedData, cfg: Config, device: torch.device) -> dict:
    """The base model's eval loss (and task accuracy), once per sweep: the "rank 0" reference row."""
    path = out / store.BASELINE_FILE
    key = config_hash({"model": cfg.model.__dict__, "data": data.fingerprint, "acc": cfg.data.accuracy_examples,
                       "new_tokens": cfg.data.max_new_tokens})
    if path.is_file():
        previous = store.read_json(path)
        if previous.get("key") == key:
            return previous
    t0 = time.perf_counter()
    baseline = {"key": key, "rank": 0, "eval_loss": eval_loss(base, data.eval, cfg.train.batch_size * 2,
                                                               tok.pad_token_id, device, cfg.train.packing)}
    baseline["accuracy"] = (task_accuracy(base, tok, data.eval[: cfg.data.accuracy_examples], cfg.data.max_new_tokens,
                                          cfg.train.batch_size * 4, device)
                            if data.verifiable and cfg.data.accuracy_examples else None)
    baseline["seconds"] = time.perf_counter() - t0
    store.write_json(path, baseline)
    acc = f", accuracy {baseline['accuracy']['overall']:.1%}" if baseline["accuracy"] else ""
    _log(f"base model (rank 0): eval loss {baseline['eval_loss']:.4f}{acc}")
    return baseline


def aggregate(out: Path, wall_seconds: float, trained_any: bool) -> dict[str, dict]:
    """Record this invocation's wall time, then write all_results.json, results.csv and the report."""
    from lorarank.report import build_report

    sweep = store.read_json(out / store.SWEEP_FILE)
    if trained_any:
        sweep["invocations"] = sweep.get("invocations", []) + [
            {"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_seconds": wall_seconds, "pid": os.getpid()}]
        sweep["sweep_wall_time_seconds"] = sum(i["wall_seconds"] for i in sweep["invocations"])
        store.write_json(out / store.SWEEP_FILE, sweep)
        for f in out.glob(f"*/{store.RUN_DATA}"):  # every run_data.json carries the sweep's total cost too
            rd = store.read_json(f)
            if rd.get("sweep_wall_time_seconds") != sweep["sweep_wall_time_seconds"]:
                rd["sweep_wall_time_seconds"] = sweep["sweep_wall_time_seconds"]
                store.write_json(f, rd)
    return build_report(out)
