"""One autograd function for a PEFT LoRA linear layer on CPU: base, dropout, A, B and γ together.

PEFT computes  y = W x + γ · B (A (dropout(x)))  as separate modules: every projection of every
layer allocates B's output, scales it by γ, adds it to W x, and autograd mirrors each of those
passes (and adds the two input gradients) in the backward. On a CPU these passes over (tokens x d)
tensors cost as much as the thin rank-r matmuls themselves. With xd = dropout(x) = (x ⊙ m)·k,
k = 1 / (1 − p) and m the keep mask:

    u  = xd Aᵀ                                        (T x r)
    y  = x Wᵀ + b,  then  y += γ · u Bᵀ               (one addmm into y, in place)

and the backward from gy = ∂L/∂y (W and b are frozen: no gradient for them):

    gu = γ · gy B            gB = γ · gyᵀ u            gA = guᵀ xd
    gx = gy W + k · (gu A) ⊙ m                        (masked product added into gx in place)

The masks are FastDropout's (same random stream), so the maths is PEFT's exactly; only the order of
floating-point additions changes. Without it a SmolLM2-135M rank-8 step takes 1.09x as long
(benchmarks/levers.py, interleaved steps).

Two backward layouts of the same maths: LAID_OUT and PLAIN. Which runs is the lever table's choice
per CPU (defaults.py): laid out where it was measured faster (fp32 products, in MKL), plain for a
bf16 base on AVX512-BF16, where it ran as fast or faster. A layer is fused only when it is plain
LoRA: one active adapter, not merged, no DoRA or other variant, no LoRA bias, a frozen nn.Linear
base of x's dtype, adapters in that dtype or fp32, and autocast off or to the base's dtype. Anything
else runs PEFT's own forward, so QLoRA runs are untouched.

Mixed precision (a bf16 base with fp32 adapters, model.py): W x runs in the base's dtype, and the
adapter products in the dtype ADAPTER_DTYPES names. `base`: A and B are cast to the base's dtype once
per call (r x d values; their gradients are cast back to fp32), so no (tokens x d) tensor is
converted, and the values are those of PEFT's modules under autocast, which cast A, B and x the same
way. `fp32`: x (dropped out) and the gradient gy are converted to fp32 and the thin products run in
fp32, as PEFT's modules compute without autocast; the update is rounded once into y and gx. On an
fp32 base both are the fp32 maths above, bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from peft.tuners.lora import Linear as LoraLinear
from torch import nn

from lorarank.fastpath.dropout import FastDropout


class LaidOut(torch.autograd.Function):
    """y = x Wᵀ + b + γ · (dropout(x) Aᵀ) Bᵀ for 2-D x, the adapter products in `compute`. `drop`
    holds the flat indices of x's dropped entries (None: no dropout) and k = 1 / (1 − p) scales the
    kept ones. A and B are cast to `compute` here rather than by the caller, so autograd records no
    conversion node per matrix (two per projection: 420 nodes a SmolLM2 step, each a dispatch and a
    gradient copy of its own); the backward converts their gradients back to the parameters' dtype."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, gamma: float, k: float, drop, compute: torch.dtype):
        ctx.param_dtype = lora_a.dtype
        lora_a, lora_b = lora_a.to(compute), lora_b.to(compute)  # the parameters themselves when already in it
        xd = x.to(compute)  # x itself unless the adapter runs in another dtype than the base
        if drop is not None:
            xd = xd * k  # a fresh tensor: zeroing it in place leaves x alone
            xd.view(-1).index_fill_(0, drop, 0.0)
        u = xd @ lora_a.t()  # (T, r)
        y = F.linear(x, weight, bias)
        add_product(y, u, lora_b.t(), gamma)
        ctx.gamma, ctx.k = gamma, k
        ctx.save_for_backward(xd, weight, lora_a, lora_b, u, drop)
        return y

    @staticmethod
    def backward(ctx, gy):
        return _backward(ctx, gy, laid_out_products, add_masked_by_restore)


class Plain(LaidOut):
    """The baseline backward: the thin products in the (T x r) and (d x r) layouts the maths is
    written in, and the dropout gradient through a masked T x d copy. Same forward, same values."""

    @staticmethod
    def backward(ctx, gy):
        return _backward(ctx, gy, plain_products, add_masked_by_copy)


def _backward(ctx, gy, thin_products, add_masked):
    """gu, gB, gA and gx of the module docstring; the layouts of the thin products and of the masked
    term are the two choices a backward makes."""
    xd, weight, lora_a, lora_b, u, drop = ctx.saved_tensors
    with torch.autocast(gy.device.type, enabled=False):  # the dtypes are the forward's, whoever calls backward
        gu, g_b = thin_products(gy.to(u.dtype), lora_b, u, ctx.gamma)
        g_a = gu.t() @ xd
        gx = None
        if ctx.needs_input_grad[0]:
            gx = gy @ weight
            if drop is None:
                add_product(gx, gu, lora_a, 1.0)
            else:
                add_masked(gx, gu, lora_a, drop, ctx.k)
    dtype = ctx.param_dtype  # the rounding autograd's conversion node would apply, without the node
    return gx, None, None, g_a.to(dtype), g_b.to(dtype), None, None, None, None


def add_product(out, m1, m2, alpha: float) -> None:
    """out += α · m1 m2 in place. With the adapter in fp32 on a half-precision base, the product is
    formed in fp32 and rounded once as it is added."""
    if m1.dtype == out.dtype:
        out.addmm_(m1, m2, alpha=alpha)
    else:
        out.add_(m1 @ m2, alpha=alpha)


def laid_out_products(gy, lora_b, u, gamma):
    """gu = γ · gy B (T, r) and gB = γ · gyᵀ u (d_out, r), written as (r x T) and (r x d_out) results
    and transposed back as views: MKL runs a rank-r-rows-times-long-inner-dimension product 2x faster
    than the (T x r) or (d x r) layout of the same maths on these shapes (T ~ 200, r = 8)."""
    return (lora_b.t() @ gy.t()).t().mul_(gamma), (u.t() @ gy).t().mul_(gamma)


def plain_products(gy, lora_b, u, gamma):
    return (gy @ lora_b).mul_(gamma), (gy.t() @ u).mul_(gamma)


def add_masked_by_restore(gx, gu, lora_a, drop, k: float) -> None:
    """gx += k · (gu A) ⊙ m: add k · gu A everywhere, then put back gy W at the dropped entries (one
    gather and one scatter of ~p·T·d values instead of a masked T x d copy). index_select and
    index_copy_ rather than flat[drop] and flat[drop] = ...: the same values, without advanced
    indexing's checks (2x and 1.3x faster at a step's shapes on CPU)."""
    flat = gx.view(-1)
    base_at_dropped = flat.index_select(0, drop)
    add_product(gx, gu, lora_a, k)
    flat.index_copy_(0, drop, base_at_dropped)


def add_masked_by_copy(gx, gu, lora_a, drop, k: float) -> None:
    g_xd = gu @ lora_a
    g_xd.view(-1).index_fill_(0, drop, 0.0)
    gx.add_(g_xd, alpha=k)


LAYOUTS = {"laid_out": LaidOut, "plain": Plain}
ADAPTER_DTYPES = {"base": None, "fp32": torch.float32}  # None: the base's dtype


def fusable(layer, x: torch.Tensor) -> bool:
    """Plain LoRA on a frozen nn.Linear of x's dtype, adapters in that dtype or fp32, no autocast or
    autocast to that dtype: the only cases the fused function computes."""
    adapters = layer.active_adapters
    if layer.disable_adapters or layer.merged or len(adapters) != 1 or layer.lora_A.keys() != {adapters[0]}:
        return False
    name = adapters[0]
    base = layer.get_base_layer()
    return (
        name not in getattr(layer, "lora_variant", {})
        and not layer.use_dora.get(name, False)
        and type(base) is nn.Linear
        and not base.weight.requires_grad
        and layer.lora_B[name].bias is None
        and x.dtype == base.weight.dtype
        and layer.lora_A[name].weight.dtype == layer.lora_B[name].weight.dtype in (x.dtype, torch.float32)
        and (not torch.is_autocast_enabled(x.device.type) or torch.get_autocast_dtype(x.device.type) == x.dtype)
    )


class FusedLinear(LoraLinear):
    """PEFT's LoRA Linear whose forward is one autograd function (LaidOut or Plain) when the layer
    is plain LoRA (`fusable`), and PEFT's own forward otherwise. Same parameters, names, saved
    adapters and unloading as PEFT's class: `use` switches a layer's class between the two, so a
    model's fused layers are the instances of this class."""

    function: type[LaidOut] = LaidOut
    """The backward layout (LAYOUTS); `use` sets it per layer."""
    adapter_dtype: str = "base"
    """ADAPTER_DTYPES: the dtype of the adapter products on a half-precision base."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if args or kwargs or not fusable(self, x):
            return super().forward(x, *args, **kwargs)
        name = self.active_adapters[0]
        base, dropout = self.get_base_layer(), self.lora_dropout[name]
        x2 = x.reshape(-1, x.shape[-1]).contiguous()  # (T, d_in): flat indices address it directly
        drop, k = None, 1.0
        if self.training and getattr(dropout, "p", 0.0) > 0:
            drop, k = dropout.drop_positions(x2.numel(), x2.device), dropout.scale
        compute = ADAPTER_DTYPES[self.adapter_dtype] or x.dtype
        with torch.autocast(x.device.type, enabled=False):  # every dtype is chosen here, not by autocast
            y = self.function.apply(x2, base.weight, base.bias, self.lora_A[name].weight, self.lora_B[name].weight,
                                    self.scaling[name], k, drop, compute)
        return y.view(*x.shape[:-1], y.shape[-1])


def lora_layers(model) -> list[nn.Module]:
    """PEFT's LoRA Linear layers of `model`, fused or not (plain LoRA Linear only, no subclasses
    such as the quantized ones)."""
    return [m for m in model.modules() if type(m) in (LoraLinear, FusedLinear)]


def use(model, on: bool, layout: str = "laid_out", adapter_dtype: str = "base") -> None:
    """Make every PEFT LoRA Linear whose dropout is FastDropout (or none) a FusedLinear with the
    backward `layout` and the adapter products in `adapter_dtype` (on), or PEFT's class again (off)."""
    for layer in lora_layers(model):
        fast = on and all(isinstance(d, (FastDropout, nn.Identity)) for d in layer.lora_dropout.values())
        layer.__class__ = FusedLinear if fast else LoraLinear
        if fast:
            layer.function, layer.adapter_dtype = LAYOUTS[layout], adapter_dtype
        else:
            layer.__dict__.pop("function", None)
            layer.__dict__.pop("adapter_dtype", None)


def fused_layers(model) -> int:
    """How many LoRA layers run the fused forward now."""
    return sum(isinstance(layer, FusedLinear) for layer in lora_layers(model))
