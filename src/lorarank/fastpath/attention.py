"""Attention for packed rows on CPU: one causal attention per example instead of one masked square.

A packed row holds n examples of lengths L₁…Lₙ (T = ΣLᵢ). transformers keeps them apart with a
block-diagonal causal mask over the whole T x T square, and SDPA's CPU kernel computes every block
of that square, masked or not: ~4·T²·d FLOPs per layer where the examples need only ~4·ΣLᵢ²·d. At
batch 8 on the instruct-suite that is 8x the work, and with 16 examples per eval row 16x. Here each
example's slice of q, k, v gets its own causal SDPA call: the same softmax over the same keys (the
mask allowed nothing else), so the same maths, in a fraction of the FLOPs. Without it a SmolLM2-135M
training step at batch 8 takes 1.14x as long (benchmarks/levers.py, interleaved steps).

Three settings of the same maths: `split` (the default), `sliced` (the baseline split is measured
against) and `masked` (transformers' own SDPA over the masked square). The per-example versions are
registered as attention implementations that fall back to transformers' own SDPA whenever the call is
not a plain packed forward: no segment lengths given (padded batches, generation with a KV cache),
attention dropout, sliding windows, soft-capping, biases or sinks.

On a half-precision base each setting also comes in fp32 (DTYPES): q, k and v converted to fp32 for
SDPA, the output converted back, autocast off inside. SDPA accumulates its softmax in fp32 either
way; the choice is only which kernel is faster on the CPU at hand.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

SDPA = "sdpa"  # transformers' own implementation: the masked square
_SPECIALS = ("sliding_window", "softcap", "position_bias", "s_aux")  # features the plain causal path lacks


def split(module, query, key, value, scaling, segment_lengths) -> list[torch.Tensor]:
    """torch.split, not slicing: its backward is one cat of the per-example gradients, where each
    slice's backward would zero-fill a full-length gradient. enable_gqa lets SDPA map query heads to
    their shared kv heads instead of materialising repeated keys and values."""
    gqa = getattr(module, "num_key_value_groups", 1) > 1
    return [F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, enable_gqa=gqa)
            for q, k, v in zip(*(t.split(segment_lengths, dim=2) for t in (query, key, value)))]


def sliced(module, query, key, value, scaling, segment_lengths) -> list[torch.Tensor]:
    """The baseline: a slice per example (each slice's backward zero-fills a full-length gradient)
    and the kv heads repeated for grouped-query attention."""
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    starts = [sum(segment_lengths[:i]) for i in range(len(segment_lengths))]
    return [F.scaled_dot_product_attention(query[:, :, s:s + n], key[:, :, s:s + n], value[:, :, s:s + n],
                                           is_causal=True, scale=scaling)
            for s, n in zip(starts, segment_lengths)]


def per_example(attend, dtype: torch.dtype | None = None):
    """An attention implementation (transformers' signature) that runs `attend` on plain packed
    forwards, in `dtype` (None: the inputs' own), and transformers' SDPA on everything else.
    query (1, H, T, D), key/value (1, H_kv, T, D) -> ((1, T, H, D), None), as transformers expects."""

    def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                  is_causal: bool | None = None, segment_lengths: tuple[int, ...] | None = None, **kwargs):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        plain = (segment_lengths and query.shape[0] == 1 and query.shape[2] == key.shape[2] == sum(segment_lengths)
                 and not dropout and all(kwargs.get(k) is None for k in _SPECIALS))
        if not plain:
            return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                          scaling=scaling, is_causal=is_causal, **kwargs)
        with torch.autocast(query.device.type, enabled=False) if dtype else contextlib.nullcontext():
            outs = attend(module, *(t.to(dtype or t.dtype) for t in (query, key, value)), scaling, segment_lengths)
        out = torch.cat(outs, dim=2).transpose(1, 2)  # (1, T, H, D), laid out as (1, H, T, D)
        # one copy for layout and dtype together; `to` returns a same-dtype tensor as it is, so contiguous() then
        return out.to(query.dtype, memory_format=torch.contiguous_format).contiguous(), None

    return attention


ATTEND = {"split": ("lorarank_packed_sdpa", split), "sliced": ("lorarank_sliced_sdpa", sliced)}
DTYPES = {"base": None, "fp32": torch.float32}  # None: the dtype of the base's activations
IMPLEMENTATIONS = {kind: (name, per_example(attend)) for kind, (name, attend) in ATTEND.items()}
IN_FP32 = {kind: (f"{name}_fp32", per_example(attend, torch.float32)) for kind, (name, attend) in ATTEND.items()}
NAMES = {name: kind for table in (IMPLEMENTATIONS, IN_FP32) for kind, (name, _) in table.items()}


def _implementation(model) -> str | None:
    return getattr(getattr(model, "config", None), "_attn_implementation", None)


def use(model, kind: str, dtype: str = "base") -> None:
    """Switch a model that runs transformers' SDPA (or one of ours) to `kind`: split, sliced or masked
    (SDPA itself), per-example SDPA in `dtype` (DTYPES). Other implementations (eager, flash, remote
    code) are left alone."""
    if _implementation(model) not in (SDPA, *NAMES):
        return
    if kind == "masked":
        model.set_attn_implementation(SDPA)
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    name, function = (IN_FP32 if DTYPES[dtype] else IMPLEMENTATIONS)[kind]
    AttentionInterface.register(name, function)
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, sdpa_mask)  # the mask the fallback needs
    model.set_attn_implementation(name)


def setting(model) -> str | None:
    """split, sliced or masked as `use` set it; None for a model whose attention is not SDPA."""
    impl = _implementation(model)
    return "masked" if impl == SDPA else NAMES.get(impl)
