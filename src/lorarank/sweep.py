"""A sweep: expand ranks x seeds x learning rates x alpha policies into trials and run them.

Everything except the swept axes is held equal: one tokenized dataset, one base model loaded once
per process, the same data order and initialisation seed for every rank of a seed. Trials recorded
as `ok` or `diverged` are skipped and `failed` ones retried, so rerunning the same command resumes a
sweep. Each trial is claimed before it runs (store.claim), so several processes started on one
output directory split the trials instead of training any twice. Finished records are never
rewritten: sweep-level numbers (invocations, total wall time) live in sweep.json.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from lorarank import store
from lorarank.analysis.model import Analysis
from lorarank.config import Config, config_hash
from lorarank.env import log, warn
from lorarank.errors import UserError
from lorarank.trial import Trial

# training settings that change speed but not results; kept out of trial ids so they never split a sweep
_SPEED_ONLY = ("num_threads", "checkpoint_every", "packing")


def fixed_config(cfg: Config) -> dict:
    """Everything a trial's result depends on except the swept axes. The sweep section (axes, output
    dir, executor and its resources) and the report section never change a trial's numbers."""
    d = copy.deepcopy(cfg.to_dict())
    for key in _SPEED_ONLY:
        d["train"].pop(key)
    d.pop("sweep")
    d.pop("report")
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
    analysis: Analysis | None = None  # of every trial recorded in the directory
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)  # claimed or finished by another process meanwhile
    wall_seconds: float = 0.0

    @property
    def failed(self) -> list[str]:
        return [t.name.removeprefix("rank_") for t in self.analysis.not_ok] if self.analysis else []


def check_data(cfg: Config) -> None:
    """Read and check every record before anything is written: bad data never leaves an empty
    output directory behind. (Tokenizing needs the model's tokenizer and happens in the runner.)"""
    from lorarank.data.records import load_sets

    load_sets(cfg.data)


def prepare_output_dir(cfg: Config) -> Path:
    """Create the output dir, check it is writable, and refuse to mix a different config into it."""
    out = Path(cfg.sweep.output_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()  # a unique probe: concurrent runs do not collide
    except OSError as exc:
        raise UserError(f"output dir {out} is not writable ({exc.strerror}): pass --output-dir to a writable directory") from None
    check_config(out, cfg)
    return out


def check_config(out: Path, cfg: Config) -> None:
    """Refuse a directory whose sweep.json was written for another fixed config. Checked when the run
    starts and again under the sweep lock before this run writes sweep.json (`_write_sweep_file`): of
    two processes started together with different configs, the second stops there, before training."""
    sweep_file = out / store.SWEEP_FILE
    if sweep_file.is_file():
        previous = store.read_checked(sweep_file)
        if previous.get("fingerprint") != config_hash(fixed_config(cfg)):
            old = previous.get("fixed_config", {})
            changed = _changed_keys(old, fixed_config(cfg))
            newer = [k for k in changed if _missing(old, k)]
            why = (f"written by an earlier lorarank, whose config had no {', '.join(newer)}" if newer else
                   f"changed: {', '.join(changed) or 'unknown'}")
            raise UserError(
                f"{out} holds a sweep with a different config ({why}); "
                "results of different configs are never mixed: pass a new --output-dir, or delete that directory"
            )


def _missing(doc: dict, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return True
        doc = doc[part]
    return False


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
    from lorarank.executors import EXECUTORS
    from lorarank.trackers import Trackers

    start = time.perf_counter()
    check_data(cfg)
    out = prepare_output_dir(cfg)
    recorded = store.recorded_trials(out, on_unreadable=_retrained)
    trials = place(expand(cfg), recorded)
    done = {tid for tid, rd in recorded.items() if rd.get("status") in store.FINAL_STATUSES}
    todo = [(t, tc) for t, tc in trials if t.trial_id not in done]
    outcome = SweepOutcome(out, skipped=[t.name for t, _ in trials if t.trial_id in done])
    log(f"sweep: {len(trials)} trials ({len(todo)} to run, {len(outcome.skipped)} already done) -> {out}")
    trackers = Trackers(cfg.report.report_to, out, cfg.report.tracking_uri)

    def on_setup(info: dict) -> None:
        d = info["data"]
        log(f"data: {d['n_train']} train / {d['n_eval']} eval examples, {d['prompt_format']} format, "
             f"{d['dropped_too_long']} dropped as longer than {cfg.data.max_length} tokens")
        _write_sweep_file(out, cfg, info)

    def on_result(trial: Trial, run_data: dict | None) -> None:
        if run_data is None:
            outcome.elsewhere.append(trial.name)
            log(f"{trial.name}: run by another lorarank process on this directory; skipped here")
            return
        outcome.trained.append(run_data["name"])
        tqdm.write(summary_line(run_data))
        trackers.log_trial(run_data)

    EXECUTORS[cfg.sweep.executor](cfg, out, todo, progress, on_setup, on_result)
    outcome.wall_seconds = time.perf_counter() - start
    outcome.analysis = aggregate(out, outcome.wall_seconds, bool(outcome.trained))
    return outcome


def _retrained(exc: store.UnreadableFile, kept: bool) -> None:
    if kept:  # names its trial as finished: never moved, so the report stops on it
        warn(f"{exc.what}; it names a finished trial, so it is left as it is and the report will stop on it: "
             "move that trial's directory out of the sweep directory and rerun to train it again")
    else:
        warn(f"{exc.what}; not a finished trial: the trial it belongs to is trained again, and the file kept "
             f"under that directory's {store.ATTEMPTS_DIR}/")


def summary_line(r: dict) -> str:
    acc = f", accuracy {r['accuracy']['overall']:.1%}" if r.get("accuracy") else ""
    if r["status"] != "ok":
        return f"[lorarank] {r['name']}: {r['status'].upper()} - {r['error']}"
    scale = f"gamma {r['effective_scale']:.3g}" if r.get("effective_scale") is not None else "full fine-tuning"
    return (f"[lorarank] {r['name']}: {r['trainable_params']:,} trainable params, {scale}, "
            f"train loss {r['final_train_loss']:.4f}, eval loss {r['final_eval_loss']:.4f}{acc}, "
            f"{r['training_time_seconds']:.1f} s ({r['tokens_per_second']:.0f} tok/s)")


def _write_sweep_file(out: Path, cfg: Config, info: dict) -> None:
    """sweep.json: the fixed config, its fingerprint, the union of axes run in this directory.
    Read-modify-write under the sweep's lock: concurrent processes each add their axes."""
    with store.locked(out / store.LOCK_DIR / "sweep.lock"):
        check_config(out, cfg)
        _update_sweep_file(out, cfg, info)


def _update_sweep_file(out: Path, cfg: Config, info: dict) -> None:
    path = out / store.SWEEP_FILE
    previous = store.read_checked(path) if path.is_file() else {}
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
        "data": info["data"],
        "environment": info["environment"],
        "invocations": previous.get("invocations", []),
    })


def aggregate(out: Path, wall_seconds: float, trained_any: bool) -> Analysis:
    """Record this invocation's wall time in sweep.json (never in the trials' records), then write
    all_results.json, results.csv and the report."""
    from lorarank.report import build_report

    with store.locked(out / store.LOCK_DIR / "sweep.lock"):
        sweep = store.read_checked(out / store.SWEEP_FILE)
        if trained_any:
            sweep["invocations"] = sweep.get("invocations", []) + [
                {"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_seconds": wall_seconds, "pid": os.getpid()}]
            sweep["sweep_wall_time_seconds"] = sum(i["wall_seconds"] for i in sweep["invocations"])
            store.write_json(out / store.SWEEP_FILE, sweep)
        return build_report(out)
