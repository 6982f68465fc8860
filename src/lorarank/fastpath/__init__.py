"""The CPU fast path: speed levers behind one switch, each the same maths as the stock path.

    lever      fast setting (FAST)                          stock setting (STOCK)
    fused      one autograd function per LoRA projection    PEFT's modules            (fused.py)
    dropout    positions drawn from geometric gaps          nn.Dropout                (dropout.py)
    backward   fused backward's thin products as r-row      (T x r) layouts, masked   (fused.py)
               results, dropout gradient by gather/scatter  copy; only when fused
    attention  one causal SDPA per packed example, split    transformers' SDPA over   (attention.py)
                                                            the masked square

On a half-precision base (bf16 with fp32 adapters, model.py) two more choices apply, both no-ops in
fp32: the dtype of the fused layer's adapter products (`adapter_dtype`) and of per-example SDPA
(`attention_dtype`). Each is `base` (the base's dtype: no conversion of (tokens x d) tensors) or
`fp32`; `base` is the default and the stock path's choice. Which is faster depends on the CPU's bf16
units, so benchmarks/levers.py measures both on the machine it runs on.

`enable(model)` sets FAST, `disable(model)` sets STOCK, and `enable(model, levers)` any other
combination: the baselines benchmarks/levers.py measures each lever against, e.g.
`dataclasses.replace(FAST, fused=False)`. The model may be a transformers model (only the attention
lever applies) or a PEFT model (all of them); switching is idempotent and reversible. lora.attach and
model.load_model enable it on CPU; tests compare every setting's values and gradients with PEFT's.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lorarank.fastpath import attention, fused
from lorarank.fastpath.dropout import FastDropout

__all__ = ["FAST", "STOCK", "FastDropout", "Levers", "disable", "enable", "fused_layers", "per_example_attention"]


@dataclass(frozen=True)
class Levers:
    fused: bool = True
    """One autograd function per plain-LoRA projection; False: PEFT's own modules."""
    dropout: str = "fast"
    """LoRA dropout: `fast` (FastDropout, geometric gaps) or `plain` (nn.Dropout, as PEFT builds it)."""
    backward: str = "laid_out"
    """The fused layer's backward: `laid_out` (thin products as r-row results) or `plain` (the layouts
    the maths is written in). Ignored when not fused."""
    attention: str = "split"
    """Packed rows: `split` (one SDPA per example via torch.split, grouped-query kv), `sliced` (one per
    example via slices, repeated kv heads) or `masked` (transformers' SDPA over the whole masked row)."""
    adapter_dtype: str = "base"
    """The fused layer's adapter products on a half-precision base: `base` (A and B cast to the base's
    dtype per call, as PEFT's modules under autocast) or `fp32` (x and the gradient converted, the thin
    products in fp32, as PEFT's modules without autocast). Ignored when not fused."""
    attention_dtype: str = "base"
    """Per-example SDPA on a half-precision base: `base` (in the base's dtype, as autocast runs it) or
    `fp32` (q, k and v converted to fp32, the output back). Ignored for `masked`."""

    def __post_init__(self):
        dtypes = tuple(fused.ADAPTER_DTYPES)
        problems = [f"{name}={value!r} (choose from {', '.join(allowed)})"
                    for name, value, allowed in (("dropout", self.dropout, ("fast", "plain")),
                                                 ("backward", self.backward, tuple(fused.LAYOUTS)),
                                                 ("attention", self.attention, (*attention.IMPLEMENTATIONS, "masked")),
                                                 ("adapter_dtype", self.adapter_dtype, dtypes),
                                                 ("attention_dtype", self.attention_dtype, tuple(attention.DTYPES)))
                    if value not in allowed]
        if self.fused and self.dropout == "plain":
            problems.append("fused=True with dropout='plain' (the fused layer draws FastDropout's positions)")
        if problems:
            raise ValueError(f"invalid fast-path levers: {'; '.join(problems)}")


FAST = Levers()
STOCK = Levers(fused=False, dropout="plain", attention="masked")


def enable(model, levers: Levers = FAST) -> None:
    """Set every lever of `model` to `levers`, whatever it was before."""
    _use_dropout(model, levers.dropout)
    fused.use(model, levers.fused, levers.backward, levers.adapter_dtype)
    attention.use(_causal_lm(model), levers.attention, levers.attention_dtype)


def disable(model) -> None:
    """Back to the stock path: PEFT's modules and nn.Dropout, transformers' SDPA."""
    enable(model, STOCK)


def per_example_attention(model) -> bool:
    """Does `model` attend per packed example (so the loss should pass it the segment lengths)?"""
    return attention.setting(_causal_lm(model)) in attention.IMPLEMENTATIONS


def fused_layers(model) -> int:
    """How many LoRA layers of `model` run the fused forward."""
    return fused.fused_layers(model)


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
