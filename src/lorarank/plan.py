"""`lorarank plan`: what each rank costs, before any weights exist.

The architecture (config.json) is built on PyTorch's meta device: shapes without storage, so a 7B
model plans in a second on a laptop. PEFT attaches each rank's adapter to that skeleton, so the
counts are PEFT's own, and we check them against r · Σ(d_in + d_out). FLOPs and bytes come from
cost.py, the same model the report uses.

The LoRA FLOP overhead depends on f, the share of positions whose LM-head output the loop computes
(completion tokens only). When the tokenizer and the data are on this machine (the embedded model
and suite, local directories and files) f is counted over the exact examples the training steps of
the sweep's first seed see, as training counts them, so it equals the report's f for that seed's
trials. Otherwise (a hub id: plan stays offline; a directory with only config.json) the head is
charged on every position, and the output says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lorarank import builtin_models, cost, lora
from lorarank.config import Config
from lorarank.data import suite
from lorarank.errors import UserError
from lorarank.model import load_model_config

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def meta_model(cfg: Config):
    from transformers import AutoModelForCausalLM

    config = load_model_config(cfg.model)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=cfg.model.trust_remote_code)


def offline_reason(cfg: Config) -> str | None:
    """Why the tokenizer or the data cannot be read without the network; None when both can."""
    name = cfg.model.name
    if name not in (builtin_models.TINY_RANDOM, builtin_models.SMOLLM2):
        local = Path(name).expanduser()
        if not local.is_dir():
            return f"model {name} is a hub id and plan does not download its tokenizer"
        if not any((local / f).is_file() for f in TOKENIZER_FILES):
            return f"{name} has no tokenizer files"
    if cfg.data.dataset != suite.NAME and not Path(cfg.data.dataset).expanduser().exists():
        return f"dataset {cfg.data.dataset} is not a local file and plan does not download it"
    if cfg.data.eval_dataset and not Path(cfg.data.eval_dataset).expanduser().exists():
        return f"eval dataset {cfg.data.eval_dataset} is not a local file and plan does not download it"
    return None


def trained_token_mix(cfg: Config) -> tuple[int, int]:
    """token_mix of the training split, prepared from the config."""
    from lorarank.data.format import prepare
    from lorarank.model import load_tokenizer

    return token_mix(prepare(cfg.data, load_tokenizer(cfg.model)).train, cfg)


def token_mix(train: list, cfg: Config) -> tuple[int, int]:
    """(completion tokens, tokens) over the examples the training steps of the first seed see,
    counted as the training loop counts them (every real token; Example.n_completion)."""
    from lorarank.train import step_plan, total_steps

    steps = step_plan(len(train), cfg.train, cfg.sweep.seeds[0], total_steps(cfg.train, len(train)))
    seen = [train[i] for step in steps for i in step]
    return sum(e.n_completion for e in seen), sum(len(e.input_ids) for e in seen)


def head_share(cfg: Config) -> dict:
    """f and where it comes from: the prepared data when it is local, else the head on every position."""
    reason = offline_reason(cfg)
    if reason is None:
        try:
            completion, tokens = trained_token_mix(cfg)
        except UserError as exc:
            reason = str(exc)
        else:
            return {"head_share": cost.head_share(completion, tokens), "completion_tokens": completion,
                    "tokens": tokens, "source": f"LM head on completion positions: {completion:,} of the {tokens:,} "
                                                f"tokens the training steps of seed {cfg.sweep.seeds[0]} see"}
    return {"head_share": 1.0, "completion_tokens": None, "tokens": None,
            "source": f"LM head charged on every position ({reason})"}


def plan(cfg: Config) -> dict:
    model = meta_model(cfg)
    targets = cfg.lora.target_modules
    shape = cost.Shape.of(model, targets)  # raises a UserError for an unknown target
    lora.check_ranks(model, targets, cfg.sweep.ranks)
    mix = head_share(cfg)
    f = mix["head_share"]
    total_base = sum(p.numel() for p in model.parameters())
    policy = cfg.sweep.alpha_policies[0]
    rows = []
    for r in cfg.sweep.ranks:
        peft_model = lora.attach(model, r, lora.scaling_for(r, cfg.lora.alpha, policy), 0.0, targets, 0)
        trainable, total = peft_model.get_nb_trainable_parameters()
        model = lora.detach(peft_model)
        rows.append({
            "rank": r,
            "trainable_params": trainable,
            "formula_params": r * shape.params_per_rank,
            "matches_formula": trainable == r * shape.params_per_rank,
            "share_of_total": trainable / total,
            "adapter_bytes": cost.adapter_bytes(trainable),
            "optimizer_state_bytes": cost.optimizer_state_bytes(trainable),
            "gradient_bytes": cost.gradient_bytes(trainable),
            "training_state_bytes": cost.training_state_bytes(trainable),
            "effective_scale": lora.scaling_for(r, cfg.lora.alpha, policy).gamma,
            "train_flops_per_token": cost.train_flops_per_token(shape, r, f),
            "lora_flops_per_token": cost.lora_train_flops_per_token(shape, r),
            "flop_overhead": cost.lora_overhead(shape, r, f),
        })
    return {"model": cfg.model.name, "target_modules": targets, "params_per_rank": shape.params_per_rank,
            "base_params": total_base, "base_matmul_params": {"body": shape.body, "head": shape.head},
            "trained_tokens": mix, "alpha_policy": policy, "ranks": rows}


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def format_table(p: dict) -> str:
    lines = [f"model {p['model']}: {p['base_params']:,} base parameters; LoRA on {', '.join(p['target_modules'])}",
             f"trainable parameters = r x {p['params_per_rank']:,} (r x sum of d_in + d_out over adapted layers)",
             "",
             f"{'rank':>5} {'trainable':>13} {'share':>8} {'adapter':>11} {'AdamW state':>12} {'gamma':>7} {'FLOPs +':>8}"]
    for r in p["ranks"]:
        flag = "" if r["matches_formula"] else "  (differs from formula!)"
        lines.append(f"{r['rank']:>5} {r['trainable_params']:>13,} {r['share_of_total']:>7.2%} "
                     f"{_size(r['adapter_bytes']):>11} {_size(r['optimizer_state_bytes']):>12} "
                     f"{r['effective_scale']:>7.3g} {r['flop_overhead']:>7.1%}{flag}")
    lines.append(f"(gamma under alpha policy '{p['alpha_policy']}'; FLOPs + = adapter FLOPs per training token "
                 "relative to the frozen model's)")
    mix = p["trained_tokens"]
    lines.append(f"(f = {mix['head_share']:.3f}: {mix['source']})")
    return "\n".join(lines)


def to_json(p: dict) -> str:
    return json.dumps(p, indent=2)
