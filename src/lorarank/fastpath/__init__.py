"""The CPU fast path: speed levers behind one switch, each the same maths as the stock path.

    lever      fast setting (FAST)                          stock setting (STOCK)
    fused      one autograd function per LoRA projection    PEFT's modules            (fused.py)
    dropout    positions drawn from geometric gaps          nn.Dropout                (dropout.py)
    backward   fused backward's thin products as r-row      (T x r) layouts, masked   (fused.py)
               results, dropout gradient by gather/scatter  copy; only when fused
    attention  one causal SDPA per packed example, split    transformers' SDPA over   (attention.py)
                                                            the masked square
    norm       RMSNorm as one autograd function             transformers' module      (norm.py)
    contiguous_head  the LM head's strided input copied     as transformers passes    (head.py)
               contiguous (generation's last position)      it

On a half-precision base (bf16 with fp32 adapters, model.py) two more choices apply, both no-ops in
fp32: the dtype of the fused layer's adapter products (`adapter_dtype`) and of per-example SDPA
(`attention_dtype`). Each is `base` (the base's dtype: no conversion of (tokens x d) tensors) or
`fp32`; `base` is FAST's and the stock path's choice. Which is faster depends on the CPU's bf16
units: `levers_for(device, dtype)` reads the measured table in defaults.py, and benchmarks/levers.py
measures every lever on the machine it runs on.

`enable(model, levers)` sets every lever (FAST when not given), `disable(model)` sets STOCK: the
baselines benchmarks/levers.py measures each lever against, e.g. `dataclasses.replace(FAST,
fused=False)`. The model may be a transformers model (only the attention lever applies) or a PEFT
model (all of them); switching is idempotent and reversible. A fused layer is a `FusedLinear`, the
subclass of PEFT's LoRA Linear in fused.py. The trial runner enables the table's levers once per
model in its setup and logs them (`describe`); run_data.json records them (`record`). Tests compare
every setting's values and gradients with PEFT's.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from lorarank.fastpath import attention, fused, head, norm
from lorarank.fastpath.defaults import BY_CAPABILITY, capability_class, levers_for, table_entry
from lorarank.fastpath.dropout import FastDropout
from lorarank.fastpath.fused import FusedLinear
from lorarank.fastpath.levers import FAST, STOCK, Levers

__all__ = ["BY_CAPABILITY", "FAST", "STOCK", "FastDropout", "FusedLinear", "Levers", "capability_class",
           "contiguous_head", "describe", "disable", "enable", "fused_layers", "fused_norms", "levers_for",
           "per_example_attention", "record", "table_entry"]


def enable(model, levers: Levers = FAST) -> None:
    """Set every lever of `model` to `levers`, whatever it was before."""
    _use_dropout(model, levers.dropout)
    fused.use(model, levers.fused, levers.backward, levers.adapter_dtype)
    attention.use(_causal_lm(model), levers.attention, levers.attention_dtype)
    norm.use(model, levers.norm)
    head.use(_causal_lm(model), levers.contiguous_head)


def disable(model) -> None:
    """Back to the stock path: PEFT's modules and nn.Dropout, transformers' SDPA and RMSNorm."""
    enable(model, STOCK)


def describe(levers: Levers) -> str:
    """One line naming what runs, for the log."""
    if levers == STOCK:
        return ("stock path (PEFT's modules, nn.Dropout, transformers' SDPA over the masked square and RMSNorm, "
                "LM-head input as passed)")
    dtype = {"base": "the base's dtype", "fp32": "fp32"}
    parts = [f"fused LoRA layer ({levers.backward} backward, adapter products in {dtype[levers.adapter_dtype]})"
             if levers.fused else "PEFT's LoRA modules",
             "geometric-gap dropout" if levers.dropout == "fast" else "nn.Dropout",
             "masked SDPA" if levers.attention == "masked"
             else f"per-example SDPA ({levers.attention}, in {dtype[levers.attention_dtype]})",
             "fused RMSNorm" if levers.norm else "transformers' RMSNorm",
             "contiguous LM-head input" if levers.contiguous_head else "LM-head input as passed"]
    return ", ".join(parts)


def record(levers: Levers, cpu: dict, dtype: torch.dtype) -> dict:
    """The levers a trial ran with, and whether they are the table's for this CPU and a base in
    `dtype`, for run_data.json."""
    return {"levers": dataclasses.asdict(levers), "capability_class": capability_class(cpu),
            "table_default": levers == table_entry(cpu, dtype)}


def per_example_attention(model) -> bool:
    """Does `model` attend per packed example (so the loss should pass it the segment lengths)?"""
    return attention.setting(_causal_lm(model)) in attention.IMPLEMENTATIONS


def fused_layers(model) -> int:
    """How many LoRA layers of `model` run the fused forward."""
    return fused.fused_layers(model)


def contiguous_head(model) -> bool:
    """Does `model`'s LM head get its input contiguous?"""
    return head.hooked(_causal_lm(model))


def fused_norms(model) -> int:
    """How many RMSNorms of `model` run the fused function."""
    return norm.fused_norms(model)


def _causal_lm(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _use_dropout(model, kind: str) -> None:
    """Swap each LoRA dropout with p > 0 for FastDropout (fast) or nn.Dropout (plain), same p and
    same train/eval mode."""
    for mod in model.modules():
        drops = getattr(mod, "lora_dropout", None)
        if not isinstance(drops, nn.ModuleDict):
            continue
        for name, drop in drops.items():
            is_fast = isinstance(drop, FastDropout)
            if (is_fast or isinstance(drop, nn.Dropout)) and drop.p > 0 and is_fast != (kind == "fast"):
                drops[name] = (FastDropout(drop.p) if kind == "fast" else nn.Dropout(drop.p)).train(drop.training)
