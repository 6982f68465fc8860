"""Attention for packed rows on CPU: one causal attention per example instead of one masked square.

A packed row holds n examples of lengths L₁…Lₙ (T = ΣLᵢ). transformers keeps them apart with a
block-diagonal causal mask over the whole T x T square, and SDPA's CPU kernel computes every block
of that square, masked or not: ~4·T²·d FLOPs per layer where the examples need only ~4·ΣLᵢ²·d. At
batch 8 on the instruct-suite that is 8x the work, and with 16 examples per eval row 16x. Here each
example's slice of q, k, v gets its own causal SDPA call: the same softmax over the same keys (the
mask allowed nothing else), so the same maths, in a fraction of the FLOPs. Without it a SmolLM2-135M
training step at batch 8 takes 1.12x as long (benchmarks/levers.py, interleaved steps).

It is registered as an attention implementation that falls back to transformers' own SDPA whenever
the call is not a plain packed forward: no segment lengths given (padded batches, generation with
a KV cache), attention dropout, sliding windows, soft-capping, biases or sinks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "lorarank_packed_sdpa"
_SPECIALS = ("sliding_window", "softcap", "position_bias", "s_aux")  # features the plain causal path lacks


def packed_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                is_causal: bool | None = None, segment_lengths: tuple[int, ...] | None = None, **kwargs):
    """query (1, H, T, D), key/value (1, H_kv, T, D) -> ((1, T, H, D), None), as transformers expects."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain = (segment_lengths and query.shape[0] == 1 and query.shape[2] == key.shape[2] == sum(segment_lengths)
             and not dropout and all(kwargs.get(k) is None for k in _SPECIALS))
    if not plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    # torch.split, not slicing: its backward is one cat of the per-example gradients, where each
    # slice's backward would zero-fill a full-length gradient. enable_gqa lets SDPA map query heads to
    # their shared kv heads instead of materialising repeated keys and values.
    gqa = getattr(module, "num_key_value_groups", 1) > 1
    outs = [F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, enable_gqa=gqa)
            for q, k, v in zip(*(t.split(segment_lengths, dim=2) for t in (query, key, value)))]
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous(), None


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, packed_sdpa)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)  # the mask the fallback needs


def use_packed_attention(model) -> bool:
    """Switch a model that runs transformers' SDPA to the per-example version; True if switched."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    register()
    model.set_attn_implementation(NAME)
    return True


def active(model) -> bool:
    return getattr(getattr(model, "config", None), "_attn_implementation", None) == NAME
