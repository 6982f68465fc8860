"""RMSNorm as one autograd function: the norm of a Llama-family layer in a handful of passes.

transformers' RMSNorm (Llama's, copied into Qwen2, Mistral, Phi-3 and others) computes

    n = x₃₂ · r,   r = 1 / √(mean(x₃₂²) + ε)     (x₃₂: x in fp32, one r per row)
    y = w ⊙ round(n)                               (round: back to x's dtype)

as eight tensor ops, and autograd mirrors each in the backward: about twenty passes over a (tokens x
d) tensor, a dtype conversion in each direction among them, for every norm (two per layer and a
final one). Written out, the gradient from gy = ∂L/∂y is

    g  = w ⊙ gy                                    (in gy's dtype, then fp32, as autograd rounds it)
    gx = r · (g − n · mean(g ⊙ n))                 (the Jacobian of x ↦ x·r applied to g, per row)
    gw = Σ_rows gy ⊙ round(n)                      (only when w trains: full fine-tuning)

which this function computes from x and r alone (n is recomputed, not saved): forward and backward
together take a third to a half of the eager module's time on a bf16 base (a (300 x 576) SmolLM2
activation on a 2-core AVX512-BF16 CPU: ~210 µs against ~450-680 µs), and a default-trial step runs
1.04x faster (benchmarks/levers.py); on an fp32 base, with no conversions to save, no difference. The
forward is the module's rounding for rounding, bit for bit; the backward differs from autograd's only
in the order of the fp32 additions.

Which norms are fused: instances of a class whose `forward` is Llama's, token for token
(`inspect.getsource`), on a weight of x's dtype. Gemma's (1 + w) or OLMo-2's norms differ in their
source and keep their own forward.
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch import nn


class RMSNormFunction(torch.autograd.Function):
    """y = w ⊙ round(x₃₂ / √(mean(x₃₂²) + ε)) over the last dimension, for x and w of one dtype."""

    @staticmethod
    def forward(ctx, x, weight, eps: float):
        x32 = x.to(torch.float32, copy=True)  # a fresh fp32 tensor, even for fp32 x: scaled in place below
        r = inverse_rms(x32, eps)
        y = x32.mul_(r).to(x.dtype).mul_(weight)  # round(n), then w ⊙: the module's two roundings in a half dtype
        ctx.save_for_backward(x, weight, r)
        return y

    @staticmethod
    def backward(ctx, gy):
        x, weight, r = ctx.saved_tensors
        n = x.to(torch.float32, copy=True).mul_(r)
        g = (gy * weight).to(torch.float32)  # w ⊙ gy rounded in gy's dtype, as autograd's MulBackward gives it
        g_w = None
        if ctx.needs_input_grad[1]:
            g_w = (gy * n.to(x.dtype)).reshape(-1, x.shape[-1]).sum(0)
        dot = (g * n).mean(-1, keepdim=True)  # mean(g ⊙ n) per row
        g_x = g.sub_(n.mul_(dot)).mul_(r)
        return g_x.to(x.dtype), g_w, None


def inverse_rms(x32: torch.Tensor, eps: float) -> torch.Tensor:
    """r = 1 / √(mean(x²) + ε) per row, in fp32, by the module's own ops (so the same bits; ‖x‖² / d
    from vector_norm would skip the x² temporary but round differently, for ~3 µs a call)."""
    return x32.pow(2).mean(-1, keepdim=True).add_(eps).rsqrt_()


@functools.cache
def _source(forward) -> str:
    try:
        return inspect.getsource(forward)
    except (OSError, TypeError):  # built without sources: no class qualifies
        return ""


def llama_rms_norm(cls: type) -> bool:
    """Does `cls` compute transformers' Llama RMSNorm (its forward's source is Llama's)?"""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    reference = LlamaRMSNorm.forward
    return cls.forward is reference or (_source(cls.forward) == _source(reference) != "")


def fused_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """The forward of a fused norm: RMSNormFunction when the weight is in x's dtype, the class's own
    forward otherwise. Autocast changes neither (the statistics are fp32 already, and the rest is
    elementwise, which CPU autocast leaves alone): same output under autocast to bf16 and fp16."""
    if self.weight.dtype != hidden_states.dtype or not hidden_states.is_floating_point():
        return super(type(self), self).forward(hidden_states)
    return RMSNormFunction.apply(hidden_states, self.weight, self.variance_epsilon)


@functools.cache
def fused_class(cls: type) -> type:
    """The subclass of a Llama-style RMSNorm class whose forward is RMSNormFunction."""
    return type(f"Fused{cls.__name__}", (cls,), {"forward": fused_forward, "__doc__": f"{cls.__name__}, fused."})


def use(model: nn.Module, on: bool) -> int:
    """Make every Llama-style RMSNorm of `model` fused (on) or its own class again (off); returns how
    many norms are fused now."""
    fused = 0
    for mod in model.modules():
        cls = type(mod)
        original = cls.__mro__[1] if is_fused(cls) else cls
        if not (isinstance(getattr(mod, "weight", None), torch.Tensor) and hasattr(mod, "variance_epsilon")
                and llama_rms_norm(original)):
            continue
        mod.__class__ = fused_class(original) if on else original
        fused += on
    return fused


def fused_norms(model: nn.Module) -> int:
    """How many norms of `model` run RMSNormFunction now."""
    return sum(is_fused(type(m)) for m in model.modules())


def is_fused(cls: type) -> bool:
    """Is `cls` one of fused_class's subclasses?"""
    return getattr(cls, "forward", None) is fused_forward
