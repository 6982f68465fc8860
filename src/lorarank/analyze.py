"""`lorarank analyze`: the sweep's report for LoRA adapters trained elsewhere (TRL, Axolotl, Unsloth, PEFT).

    adapters.find/read   adapter dirs and checkpoints -> checked Adapters (rank, α, rsLoRA, seed label)
    config               one lorarank Config: --base, --eval-data, the adapters' ranks / seeds / policies
    preflight            load the base, check every adapter against it, tokenize the eval set
      -- nothing is written before this point: bad input leaves the output directory as it was --
    baseline             the base model's row (measure.base_model), baseline.json
    per adapter          PeftModel.from_pretrained -> measure.py (the code a trial runs) -> run_data.json
    report               report.build_report, as for a sweep: `lorarank report DIR` rebuilds it

Each record uses the sweep's run_data.json schema and adds `source`: the adapter's path, the sha256
of its weights, the trainer and its version, and which numbers lorarank measured and which it read
from the trainer's trainer_state.json (the training curves and time).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lorarank import adapters, env, measure, store
from lorarank.adapters import Adapter
from lorarank.analysis.model import Analysis
from lorarank.config import Config, config_hash
from lorarank.data import suite
from lorarank.data.format import PreparedData
from lorarank.probes import Probes
from lorarank.errors import UserError

DEFAULT_OUTPUT = "outputs/analyze"
NO_SEED = 0  # the seed label of an adapter whose path names none (one adapter per rank)
# numbers lorarank computes itself, and those it copies from trainer_state.json
MEASURED = ["trainable_params", "total_params", "final_eval_loss", "accuracy", "general_loss", "spectra", "intruders"]
FROM_TRAINER = ["train_losses", "steps", "eval_losses", "eval_steps", "final_train_loss", "training_time_seconds",
                "learning_rate", "total_steps", "tokens_per_second"]


def measured_keys(with_eval: bool) -> list[str]:
    return MEASURED if with_eval else [k for k in MEASURED if k not in ("final_eval_loss", "accuracy")]


def from_trainer_keys(with_eval: bool) -> list[str]:
    return FROM_TRAINER if with_eval else FROM_TRAINER + ["final_eval_loss"]


@dataclass(frozen=True)
class Request:
    """What the user asked for on the command line."""
    paths: list[str]
    base: str | None = None
    eval_data: str | None = None
    general_text: str | None = None
    output_dir: str | None = None
    seed_pattern: str | None = None
    config: str | None = None  # a preset or YAML: evaluation settings (dtype, data.max_length, eval.*)
    overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Planned:
    adapter: Adapter
    curves: adapters.Curves
    name: str
    trial_config: dict
    trial_id: str


def analyze(req: Request) -> tuple[Path, Analysis, list[str]]:
    """(output dir, the analysis, names of the adapters analysed now); raises UserError before writing anything."""
    from lorarank.report import build_report

    found = [adapters.read(p, req.seed_pattern) for p in adapters.find(req.paths)]
    cfg = make_config(req, found)
    with_eval = req.eval_data is not None
    planned = plan(found, cfg, with_eval)
    out = Path(cfg.sweep.output_dir).expanduser()
    setup = preflight(cfg, found, out, with_eval)
    # -------- nothing written above this line
    with store.writing(out):
        out.mkdir(parents=True, exist_ok=True)
    store.write_json(out / store.SWEEP_FILE, sweep_file(out, cfg, found, setup))
    if setup.data is not None and not (out / store.BASELINE_FILE).is_file():  # else: same settings (checked)
        baseline = measure.base_model(setup.base, setup.tok, setup.data, cfg, setup.device, setup.probes)
        store.write_json(out / store.BASELINE_FILE, baseline)
    recorded = store.recorded_trials(out)
    done = []
    for p in planned:
        if p.trial_id in recorded:  # analysed before: a record is never rewritten
            continue
        name = store.reserve(out, p.trial_id, p.name)
        if name is None:  # the same weights at a second path, recorded a moment ago
            continue
        setup.base, run_data = measure_adapter(setup, cfg, p, name)
        _link_adapter(out / name / "adapter", p.adapter.path)  # before the record, which is written last
        store.write_record(out / name, run_data)
        env.log(f"{name}: eval loss {run_data['final_eval_loss']}, {run_data['trainable_params']:,} params "
                f"({p.adapter.path})")
        done.append(name)
    return out, build_report(out), done


# ---------------------------------------------------------------------------------------------- config


def base_name(req: Request, found: list[Adapter]) -> str:
    """--base, else the one base_model_name_or_path every adapter names."""
    named = sorted({a.base for a in found if a.base})
    if len(named) > 1:
        by = {b: next(str(a.path) for a in found if a.base == b) for b in named}
        raise UserError("adapters of different base models (" + "; ".join(f"{b}: {p}" for b, p in by.items())
                        + "): analyse each base's adapters in a command of its own")
    if req.base:
        return req.base
    if not named:
        raise UserError("the adapters do not name their base model (base_model_name_or_path): pass --base MODEL")
    return named[0]


def make_config(req: Request, found: list[Adapter]) -> Config:
    """The evaluation config: the user's preset and key=value overrides, then what the adapters say."""
    from lorarank.config import load_config

    o = dict(req.overrides)
    o["model.name"] = base_name(req, found)
    if req.eval_data == suite.NAME:  # the embedded suite: the same held-out split as `lorarank run`
        o["data.dataset"] = suite.NAME
    elif req.eval_data:  # a file or hub id: all of it is the eval set (and stands in for the unused train set)
        o["data.dataset"] = o["data.eval_dataset"] = req.eval_data
    if req.general_text:
        o["eval.general_text"] = req.general_text
    o["lora.target_modules"] = sorted({t for a in found for t in a.leaf_targets})
    policies = adapters.alpha_policies(found)
    o["lora.alpha"] = next((a.lora_alpha for a in found if policies[a.path] == "constant"), found[0].lora_alpha)
    o["sweep.ranks"] = sorted({a.rank for a in found})
    o["sweep.seeds"] = sorted({NO_SEED if a.seed is None else a.seed for a in found})
    o["sweep.alpha_policies"] = list(dict.fromkeys(policies[a.path] for a in found))
    lrs = sorted({c.peak_learning_rate for c in map(_curves, found) if c.peak_learning_rate})
    if lrs:
        o["sweep.learning_rates"] = lrs
    o["sweep.output_dir"] = req.output_dir or o.get("sweep.output_dir") or DEFAULT_OUTPUT
    return load_config(req.config, o)


def _curves(a: Adapter) -> adapters.Curves:
    return adapters.curves(a.state)


def fixed_config(cfg: Config) -> dict:
    """What every record of this directory shares: model, eval data and probes (sweep.fixed_config).
    The training and LoRA settings are each adapter's own, recorded in its trial section."""
    from lorarank.sweep import fixed_config as sweep_fixed

    d = sweep_fixed(cfg)
    d.pop("train")
    d.pop("lora")  # per adapter (its trial section): adapters with other targets may share a directory
    return d


def plan(found: list[Adapter], cfg: Config, with_eval: bool) -> list[Planned]:
    """A record name and trial id per adapter; refuses two adapters that only the seed label could tell
    apart but do not (same rank, policy and learning rate without distinct seed labels)."""
    seeds = len(cfg.sweep.seeds) > 1
    policies = len(cfg.sweep.alpha_policies) > 1
    out, seen = [], {}
    policy_of = adapters.alpha_policies(found)
    for a in found:
        c = _curves(a)
        lr = c.peak_learning_rate or 0.0  # 0.0: the trainer logged none
        seed = NO_SEED if a.seed is None else a.seed
        key = (a.rank, policy_of[a.path], lr, seed)
        if key in seen:
            raise UserError(f"{seen[key]} and {a.path} are both rank {a.rank} with seed label {seed}: pass "
                            r"--seed-pattern with a group that tells them apart, e.g. 'seed(\d+)'")
        seen[key] = a.path
        name = f"rank_{a.rank}" + (f"_s{seed}" if seeds else "") + (f"_{policy_of[a.path]}" if policies else "")
        if len(cfg.sweep.learning_rates) > 1:
            name += f"_lr{lr:g}"
        trial = {"rank": a.rank, "seed": seed, "learning_rate": lr, "alpha_policy": policy_of[a.path],
                 "lora_alpha": a.lora_alpha, "use_rslora": a.use_rslora, "target_modules": a.leaf_targets,
                 "modules_to_save": a.modules_to_save, "weights_sha256": a.weights_sha256}
        tc = {**fixed_config(cfg), "trial": trial}
        out.append(Planned(a, c, name, tc, config_hash(tc)))
    if not with_eval:
        missing = [str(p.adapter.path) for p in out if not p.curves.eval_losses]
        if missing:
            raise UserError(f"no eval loss for {missing[0]}: its trainer logged none (no eval_loss in "
                            "trainer_state.json); pass --eval-data with the eval set, e.g. --eval-data eval.jsonl")
    return out


# ---------------------------------------------------------------------------------------------- preflight


@dataclass
class Setup:  # what preflight loaded, shared by every adapter
    base: Any  # the base model; replaced when an adapter's unload leaves it changed (modules_to_save)
    tok: Any
    data: PreparedData | None  # None without --eval-data
    probes: Probes
    device: torch.device


def preflight(cfg: Config, found: list[Adapter], out: Path, with_eval: bool) -> Setup:
    """Everything that can refuse the input, in the order that fails fastest; writes nothing."""
    from lorarank.data.format import prepare
    from lorarank.data.records import load_sets
    from lorarank.model import load_base, pick_device
    from lorarank.runner import packing_works

    check_output_dir(out, cfg)
    if with_eval:
        load_sets(cfg.data)
    device = pick_device()
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    base, tok = load_base(cfg.model, device)
    for a in found:
        adapters.check_base(a, base)
    data = prepare(cfg.data, tok) if with_eval else None
    if data is not None:
        cfg.train.packing = packing_works(cfg, base, data, tok, device)
    return Setup(base, tok, data, Probes.setup(cfg.eval, tok), device)


def check_output_dir(out: Path, cfg: Config) -> None:
    """A new directory, or one this command wrote for the same base, eval set and settings (more
    adapters may be added to it); never a `lorarank run` sweep or another analysis."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--output-dir {out} is a file: pass a directory")
    sweep_file = out / store.SWEEP_FILE
    if not sweep_file.is_file():
        return
    previous = store.read_checked(sweep_file)  # unreadable: one line naming it and what to do
    if previous["fingerprint"] == config_hash(fixed_config(cfg)) and previous.get("analyzed"):
        return
    what = ("adapters analysed with another base, eval set or settings" if previous.get("analyzed") else
            "a `lorarank run` sweep")
    raise UserError(f"{out} holds {what}; results are never mixed: pass a new --output-dir")


# ---------------------------------------------------------------------------------------------- writing


def sweep_file(out: Path, cfg: Config, found: list[Adapter], setup: Setup) -> dict:
    """sweep.json of an analysis: the sweep's keys (so `lorarank report` reads it) plus `analyzed`,
    which the report's setup and caveats render: trainers, pairing and what was read vs measured."""
    path = out / store.SWEEP_FILE
    previous = store.read_checked(path) if path.is_file() else {}
    d = setup.data
    data = None if d is None else {
        "fingerprint": d.fingerprint, "n_records": d.n_records, "n_train": 0, "n_eval": len(d.eval),
        "prompt_format": d.prompt_format, "dropped_too_long": d.dropped_too_long, "families": d.families,
        "record_format": d.record_format, "trained_on": d.trained_on, "eval_source": d.eval_source}
    old = previous.get("analyzed", {}).get("adapters", [])
    new = [adapter_summary(a) for a in found]
    listed = old + [a for a in new if a["weights_sha256"] not in {o["weights_sha256"] for o in old}]
    axes = {k: sorted(set(previous.get("axes", {}).get(k, [])) | set(getattr(cfg.sweep, k)))
            for k in ("ranks", "seeds", "learning_rates")}
    axes["alpha_policies"] = list(dict.fromkeys(previous.get("axes", {}).get("alpha_policies", [])
                                                + cfg.sweep.alpha_policies))
    axes["full_finetune_lrs"] = []
    config = cfg.to_dict()
    config["sweep"]["learning_rates"] = axes["learning_rates"]
    return {
        "fingerprint": config_hash(fixed_config(cfg)), "fixed_config": fixed_config(cfg), "config": config,
        "axes": axes, "data": data, "general_text": setup.probes.describe(),
        "environment": env.describe(setup.device, _dtype(setup.base)),
        "invocations": previous.get("invocations", []) + [{"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                             "argv": sys.argv[1:]}],
        "analyzed": {
            "adapters": listed,
            "trainers": _trainers(listed),
            "seed_labels": "seed pattern" if any(a["seed"] is not None for a in listed) else "none",
            "eval_set": d is not None,
            "measured": measured_keys(d is not None), "from_trainer": from_trainer_keys(d is not None),
            "modules_to_save": sorted({m for a in listed for m in a["modules_to_save"]}),
        },
    }


def adapter_summary(a: Adapter) -> dict:
    return {"adapter_path": str(a.path.resolve()), "weights_sha256": a.weights_sha256, "rank": a.rank,
            "lora_alpha": a.lora_alpha, "use_rslora": a.use_rslora, "seed": a.seed, "trainer": a.trainer,
            "base_model_name_or_path": a.base, "modules_to_save": a.modules_to_save,
            "trainer_state": str(a.state_path.resolve()) if a.state_path else None}


def _trainers(listed: list[dict]) -> list[dict]:
    """Each source trainer and version once, with how many adapters it wrote."""
    counts: dict[tuple, int] = {}
    for a in listed:
        key = (a["trainer"]["name"], a["trainer"]["version"], a["trainer"]["versions"].get("PEFT"))
        counts[key] = counts.get(key, 0) + 1
    return [{"name": n, "version": v, "peft": p, "adapters": c} for (n, v, p), c in counts.items()]


def _dtype(model) -> torch.dtype:
    from lorarank.model import compute_dtype

    return compute_dtype(model)


def measure_adapter(setup: Setup, cfg: Config, p: Planned, name: str) -> tuple[object, dict]:
    """Load one adapter onto the shared base, measure it as a trial is measured, unload it.
    Returns (the base, unchanged; the record)."""
    from peft import PeftModel

    from lorarank import lora

    t0 = time.perf_counter()
    shape = {"params_per_rank": lora.params_per_rank(setup.base, p.adapter.leaf_targets),
             "matmul_params": lora.matmul_params(setup.base)}  # of the plain base, as a trial records them
    model = PeftModel.from_pretrained(setup.base, str(p.adapter.path), is_trainable=True)  # PEFT counts trainables
    try:
        model.eval()
        trainable, total = model.get_nb_trainable_parameters()
        clock = measure.Clock()
        measured = measure.behaviour(model, setup.tok, setup.data, cfg, setup.device, setup.probes, clock)
        measured.update(measure.adapter_update(model, setup.probes, clock))
        if setup.data is not None:
            with clock.phase("eval_loss"):
                measured["final_eval_loss"] = measure.loss_on_eval(model, setup.data, cfg, setup.tok.pad_token_id,
                                                                   setup.device)
        measured["measure_seconds"] = clock.seconds
    finally:
        base = lora.detach(model)
    if p.adapter.modules_to_save:  # unload() keeps the adapter's copies of these modules: reload a clean base
        from lorarank.model import load_base

        del base
        base = load_base(cfg.model, setup.device)[0]
    seconds = time.perf_counter() - t0
    return base, record(p, name, cfg, setup, trainable, total, measured, shape, seconds)


def record(p: Planned, name: str, cfg: Config, setup: Setup, trainable: int, total: int, measured: dict,
           shape: dict, seconds: float) -> dict:
    """run_data.json of one analysed adapter, in the sweep's schema (trial.build_run_data)."""
    a, c, trial = p.adapter, p.curves, p.trial_config["trial"]
    final_eval = measured.pop("final_eval_loss", None)
    from_trainer_eval = final_eval is None
    if from_trainer_eval:
        final_eval = c.eval_losses[-1]
    d = setup.data
    return {
        "rank": a.rank,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_ratio": trainable / total,
        "train_losses": c.train_losses,
        "eval_losses": c.eval_losses,
        "steps": c.steps,
        "eval_steps": c.eval_steps,
        "final_train_loss": c.train_losses[-1] if c.train_losses else None,
        "final_eval_loss": final_eval,
        "training_time_seconds": c.train_runtime,
        "trial_id": p.trial_id,
        "name": name,
        "method": "lora",
        "seed": trial["seed"],
        "learning_rate": trial["learning_rate"],
        "lora_alpha": a.lora_alpha,
        "alpha_policy": trial["alpha_policy"],
        "use_rslora": a.use_rslora,
        "effective_scale": a.gamma,
        "status": "ok",
        "error": None,
        "total_steps": c.global_step,
        "eval_time_seconds": seconds,
        # the trainer's count goes to `source`: lorarank's FLOP model (cost.py) assumes its own loop, which
        # computes the LM head on completion tokens only, so it is not applied to other trainers' runs
        "tokens_trained": None,
        "completion_tokens_trained": None,
        "tokens_per_second": c.tokens_trained / c.train_runtime if c.tokens_trained and c.train_runtime else None,
        "peak_memory_bytes": None,
        "data": None if d is None else {
            "fingerprint": d.fingerprint, "n_train": 0, "n_eval": len(d.eval), "prompt_format": d.prompt_format,
            "dropped_too_long": d.dropped_too_long, "record_format": d.record_format, "eval_source": d.eval_source},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": env.describe(setup.device, _dtype(setup.base)),
        "writer": {"pid": os.getpid(), "host": platform.node()},
        "config": p.trial_config,
        **shape,
        **measured,
        "adapter_bytes": (a.path / adapters.WEIGHTS).stat().st_size,
        "source": {
            **adapter_summary(a),
            "measured": measured_keys(not from_trainer_eval),
            "from_trainer": from_trainer_keys(not from_trainer_eval),
            "tokens_logged": c.tokens_trained,
            "lora_parts_only": bool(a.modules_to_save),  # spectra and intruders cover the LoRA layers alone
        },
    }


def _link_adapter(link: Path, target: Path) -> None:
    """<name>/adapter -> the adapter's own directory: subspace similarity reads the weights where a
    sweep keeps them (analysis/subspace.py); no copy of the weights is made."""
    with store.writing(link):
        if not link.is_symlink():
            link.symlink_to(target.resolve(), target_is_directory=True)
