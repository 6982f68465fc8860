"""The fast path's levers: one frozen record of every setting, validated once."""

from __future__ import annotations

from dataclasses import dataclass

from lorarank.fastpath import attention, fused


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
    norm: bool = True
    """Llama-style RMSNorms as one autograd function (norm.py); False: transformers' modules."""
    contiguous_head: bool = True
    """The LM head's input copied contiguous when strided (head.py: generation's last-position
    logits); False: as transformers passes it."""

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
STOCK = Levers(fused=False, dropout="plain", attention="masked", norm=False, contiguous_head=False)
