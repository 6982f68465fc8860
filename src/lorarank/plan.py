"""`lorarank plan`: what each rank costs, before any weights exist.

The architecture (config.json) is built on PyTorch's meta device: shapes without storage, so a 7B
model plans in a second on a laptop. PEFT attaches each rank's adapter to that skeleton, so the
counts are PEFT's own, and we check them against r · Σ(d_in + d_out).
"""

from __future__ import annotations

import json

import torch

from lorarank import lora
from lorarank.config import Config
from lorarank.model import load_model_config

# PEFT keeps adapter weights in float32 even on a bf16/fp16 or 4-bit base (autocast_adapter_dtype),
# so adapters, their gradients and both AdamW moments cost 4 bytes per trainable parameter each.
FP32 = 4


def meta_model(cfg: Config):
    from transformers import AutoModelForCausalLM

    config = load_model_config(cfg.model)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=cfg.model.trust_remote_code)


def plan(cfg: Config) -> dict:
    model = meta_model(cfg)
    targets = cfg.lora.target_modules
    per_rank = lora.params_per_rank(model, targets)  # raises a UserError for an unknown target
    lora.check_ranks(model, targets, cfg.sweep.ranks)
    mm = lora.matmul_params(model)
    total_base = sum(p.numel() for p in model.parameters())
    rows = []
    for r in cfg.sweep.ranks:
        policy = cfg.sweep.alpha_policies[0]
        peft_model = lora.attach(model, r, lora.scaling_for(r, cfg.lora.alpha, policy), 0.0, targets, 0)
        trainable, total = peft_model.get_nb_trainable_parameters()
        model = lora.detach(peft_model)
        rows.append({
            "rank": r,
            "trainable_params": trainable,
            "formula_params": r * per_rank,
            "matches_formula": trainable == r * per_rank,
            "share_of_total": trainable / total,
            "adapter_bytes": trainable * FP32,
            "optimizer_state_bytes": trainable * 2 * FP32,  # AdamW: first and second moments
            "gradient_bytes": trainable * FP32,
            "effective_scale": lora.scaling_for(r, cfg.lora.alpha, policy).gamma,
            # per training token: adapters 6·r·Σ(d_in+d_out) vs frozen matmuls 4·N (head on every token here)
            "lora_flops_per_token": 6 * r * per_rank,
            "flop_overhead": 6 * r * per_rank / (4 * (mm["body"] + mm["head"])),
        })
    return {"model": cfg.model.name, "target_modules": targets, "params_per_rank": per_rank,
            "base_params": total_base, "base_matmul_params": mm, "alpha_policy": cfg.sweep.alpha_policies[0],
            "ranks": rows}


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
    return "\n".join(lines)


def to_json(p: dict) -> str:
    return json.dumps(p, indent=2)
