"""The CPU fast path: speed levers behind one switch, each the same maths as the stock path.

    lever      fast setting (FAST)                          stock setting (STOCK)
    fused      one autograd function per LoRA projection    PEFT's modules            (fused.py)
    dropout    positions drawn from geometric gaps          nn.Dropout                (dropout.py)
    backward   fused backward's thin products as r-row      (T x r) layouts, masked   (fused.py)
               results, dropout gradient by gather/scatter  copy; only when fused
    attention  one causal SDPA per packed example, split    transformers' SDPA over   (attention.py)
                                                            the masked square

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

    def __post_init__(self):
        problems = [f"{name}={value!r} (choose from {', '.join(allowed)})"
                    for name, value, allowed in (("dropout", self.dropout, ("fast", "plain")),
                                                 ("backward", self.backward, tuple(fused.LAYOUTS)),
                                                 ("attention", self.attention, (*attention.IMPLEMENTATIONS, "masked")))
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
    fused.use(model, levers.fused, levers.backward)
    attention.use(_causal_lm(model), levers.attention)


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
