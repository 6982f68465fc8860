"""One trial: attach a fresh adapter to the shared base, train, evaluate, save, detach.

Everything a trial produces goes into its directory, and `run_data.json` is written last, once,
atomically: a trial with that file is recorded; without it, it is redone on the next run. A failed
attempt is moved to `failed_attempts/<n>/` before its retry (store.archive_failed_attempt).
"""

from __future__ import annotations

import copy
import os
import platform
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lorarank import env, fastpath, lora, measure, store
from lorarank.analysis import spectra
from lorarank.config import Config
from lorarank.data.format import PreparedData
from lorarank.model import compute_dtype
from lorarank.probes import Probes
from lorarank.train import Checkpointer, TrainResult, train


@dataclass(frozen=True)
class Trial:
    rank: int  # 0 for the full fine-tuning reference
    seed: int
    learning_rate: float
    alpha_policy: str
    name: str  # directory name, e.g. rank_8 or rank_8_s43
    trial_id: str  # hash of the trial's full config
    method: str = "lora"  # lora | full (every base weight trainable: the reference row)


def run_trial(base, tokenizer, data: PreparedData, cfg: Config, trial: Trial, trial_config: dict,
              out_dir: Path, device: torch.device, probes: Probes, levers: fastpath.Levers,
              progress=None) -> tuple[Any, dict]:
    """Returns (base model, untouched, with the adapter removed; run_data). Never raises for a
    trial-level failure (bad numerics, out-of-memory, a bug in one config): the trial is `failed`.
    `levers`: the fast path the model trains with (the runner's, from fastpath.levers_for)."""
    trial_dir = out_dir / trial.name
    with store.writing(trial_dir):
        trial_dir.mkdir(parents=True, exist_ok=True)
    store.archive_failed_attempt(trial_dir, trial.trial_id)
    full = trial.method == "full"
    scaling = None if full else lora.scaling_for(trial.rank, cfg.lora.alpha, trial.alpha_policy)
    env.reset_peak_memory(device)
    shape = {"params_per_rank": lora.params_per_rank(base, cfg.lora.target_modules),
             "matmul_params": lora.matmul_params(base)}
    if full:  # train a copy: the shared base must stay frozen and unchanged for the other trials
        # fp32 weights and AdamW state even on a bf16 base: pure bf16 updates would round small steps away
        model = copy.deepcopy(base).float().requires_grad_(True)
        trainable, total = lora.count_trainable(model)
    else:
        model = lora.attach(base, trial.rank, scaling, cfg.lora.dropout, cfg.lora.target_modules, trial.seed)
        trainable, total = model.get_nb_trainable_parameters()  # PEFT's own count, as the original
    fastpath.enable(model, levers)  # the fused LoRA layers and their dropout (the attention is the base's)
    a_init = None if full else spectra.lora_a_weights(model)
    result, extras, error_tb = TrainResult(), {"accuracy": None, "spectra": None, "adapter_bytes": None}, None
    try:
        ckpt = Checkpointer(trial_dir / "checkpoint.pt", trial.trial_id, cfg.train.checkpoint_every)
        result = train(model, data.train, data.eval, cfg.train, trial.learning_rate, trial.seed,
                       tokenizer.pad_token_id, device, on_step=progress, checkpoint=ckpt)
        if result.status == "ok":
            extras = after_training(model, base, tokenizer, data, cfg, trial_dir, device, full, a_init, probes)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - isolate the trial, keep the sweep going
        result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
        error_tb = traceback.format_exc()
    finally:
        # the precision the trial computed in: the base's, or the full fine-tuning copy's (fp32 weights)
        precision = compute_dtype(model) if full else None
        if not full:
            base = lora.detach(model)
        del model
    if error_tb:
        store.write_text(trial_dir / store.ERROR_FILE, error_tb)
    run_data = build_run_data(trial, trial_config, scaling, trainable, total, result, data, device,
                              precision or compute_dtype(base))
    run_data.update(shape)
    run_data["fastpath"] = fastpath.record(levers, env.cpu_capability(), compute_dtype(base))
    run_data.update(extras)
    store.write_record(trial_dir, run_data)
    return base, run_data


def after_training(model, base, tokenizer, data: PreparedData, cfg: Config, trial_dir: Path,
                   device: torch.device, full: bool, a_init: dict | None, probes: Probes) -> dict:
    """What measure.py measures on every trained model, how far A moved, and the saved adapter."""
    out = {"accuracy": None, "spectra": None, "adapter_bytes": None}  # the record's key order, as before
    clock = measure.Clock()
    out.update(measure.behaviour(model, tokenizer, data, cfg, device, probes, clock))
    if full:
        out.update(measure.full_update(base, model, cfg.lora.target_modules, probes, clock))
    else:
        out.update(measure.adapter_update(model, probes, clock))
        out["a_relative_change"] = spectra.relative_change(a_init, spectra.lora_a_weights(model))
        with clock.phase("adapter_save"):
            out["adapter_bytes"] = save_adapter(model, trial_dir / "adapter")
    out["measure_seconds"] = clock.seconds  # after training, by part (the evaluations during it: eval_time_seconds)
    return out


def save_adapter(model, target: Path) -> int:
    """PEFT format (adapter_config.json + adapter_model.safetensors), renamed into place."""
    with store.writing(target):
        tmp = Path(tempfile.mkdtemp(prefix=".adapter-", dir=target.parent))
        try:
            model.save_pretrained(tmp)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return sum(f.stat().st_size for f in target.iterdir() if f.is_file())


def build_run_data(trial: Trial, trial_config: dict, scaling: lora.Scaling | None, trainable: int, total: int,
                   res: TrainResult, data: PreparedData, device: torch.device, precision: torch.dtype) -> dict:
    """The self-describing record of one trial: the original experiment's keys, then lorarank's
    (README "Outputs" lists the files; the keys are named for what they hold)."""
    final_eval = res.eval_losses[-1] if res.eval_losses and res.status == "ok" else None
    return {
        # the original experiment's keys
        "rank": trial.rank,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_ratio": trainable / total,
        "train_losses": res.train_losses,
        "eval_losses": res.eval_losses,
        "steps": res.steps,
        "eval_steps": res.eval_steps,
        "final_train_loss": res.train_losses[-1] if res.train_losses and res.status == "ok" else None,
        "final_eval_loss": final_eval,
        "training_time_seconds": res.training_time_seconds,
        # lorarank's additions
        "trial_id": trial.trial_id,
        "name": trial.name,
        "method": trial.method,
        "seed": trial.seed,
        "learning_rate": trial.learning_rate,
        "lora_alpha": scaling.lora_alpha if scaling else None,
        "alpha_policy": trial.alpha_policy,
        "use_rslora": scaling.use_rslora if scaling else None,
        "effective_scale": scaling.gamma if scaling else None,
        "status": res.status,
        "error": res.error,
        "total_steps": res.total_steps,
        "eval_time_seconds": res.eval_time_seconds,
        "tokens_trained": res.tokens_trained,
        "completion_tokens_trained": res.completion_tokens_trained,
        "tokens_per_second": res.tokens_trained / res.training_time_seconds if res.training_time_seconds else None,
        "peak_memory_bytes": env.peak_memory(device),
        "data": {"fingerprint": data.fingerprint, "n_train": len(data.train), "n_eval": len(data.eval),
                 "prompt_format": data.prompt_format, "dropped_too_long": data.dropped_too_long,
                 "record_format": data.record_format, "eval_source": data.eval_source},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": env.describe(device, precision),
        "writer": {"pid": os.getpid(), "host": platform.node()},  # the one process that trained it
        "config": trial_config,
    }
