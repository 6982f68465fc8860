"""The fused RMSNorm (fastpath/norm.py) against transformers' own module: values, gradients, which
classes it takes over, and its fallbacks."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

from lorarank.fastpath import norm


def norm_and_input(cls, dtype, trains: bool, d: int = 96):
    """A norm with a non-trivial weight and an input whose rows have very different scales."""
    gen = torch.Generator().manual_seed(0)
    module = cls(d, eps=1e-6).to(dtype)
    with torch.no_grad():
        module.weight.copy_(torch.rand(d, generator=gen) + 0.5)
    module.weight.requires_grad_(trains)
    scales = torch.tensor([0.01, 1.0, 30.0]).repeat(4)[:, None]
    x = (torch.randn(2, 6, d, generator=gen) * scales.view(2, 6, 1)).to(dtype).requires_grad_(True)
    gy = torch.randn(2, 6, d, generator=gen).to(dtype)
    return module, x, gy


def forward_backward(module, x, gy):
    y = module(x)
    inputs = (x, module.weight) if module.weight.requires_grad else (x,)
    return (y, *torch.autograd.grad(y, inputs, gy))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("trains", [False, True], ids=["frozen", "trained"])
def test_fused_norm_equals_transformers_module(dtype, trains):
    """Same output bit for bit (the module's ops and roundings); the input gradient to fp32 rounding
    (1e-6 relative) or, in bf16, within one bf16 step; the weight's gradient when it trains."""
    module, x, gy = norm_and_input(LlamaRMSNorm, dtype, trains)
    stock = forward_backward(module, x, gy)
    holder = nn.Sequential(module)
    assert norm.use(holder, True) == 1 and type(module).__name__ == "FusedLlamaRMSNorm"
    fused = forward_backward(module, x, gy)
    assert torch.equal(fused[0], stock[0])
    rel = (fused[1] - stock[1]).abs().max() / stock[1].abs().max()
    assert rel < (1e-6 if dtype == torch.float32 else 2 ** -7)
    if trains:
        assert fused[2].dtype == dtype and torch.allclose(fused[2], stock[2], rtol=1e-6 if dtype == torch.float32 else 1e-2)
    norm.use(holder, False)
    assert type(module) is LlamaRMSNorm and torch.equal(module(x), stock[0])


def test_only_norms_with_llamas_forward_are_fused():
    """Qwen2's norm is Llama's code copied: fused. Gemma's scales by (1 + w): left alone."""
    assert norm.llama_rms_norm(LlamaRMSNorm) and norm.llama_rms_norm(Qwen2RMSNorm)
    assert not norm.llama_rms_norm(GemmaRMSNorm)
    model = nn.ModuleList([Qwen2RMSNorm(8), GemmaRMSNorm(8), LlamaRMSNorm(8), nn.LayerNorm(8)])
    assert norm.use(model, True) == 2 == norm.fused_norms(model)
    assert [type(m).__name__ for m in model] == ["FusedQwen2RMSNorm", "GemmaRMSNorm", "FusedLlamaRMSNorm", "LayerNorm"]
    assert norm.use(model, True) == 2  # idempotent: a fused class is never subclassed again
    assert type(model[0]).__mro__[1] is Qwen2RMSNorm
    assert norm.use(model, False) == 0 == norm.fused_norms(model)
    assert [type(m) for m in model] == [Qwen2RMSNorm, GemmaRMSNorm, LlamaRMSNorm, nn.LayerNorm]


def test_fused_norm_runs_the_module_forward_when_dtypes_differ():
    """An fp32 weight on a bf16 input (the module promotes to fp32): the class's own forward runs."""
    module, x, gy = norm_and_input(LlamaRMSNorm, torch.float32, False)
    x = x.detach().to(torch.bfloat16)
    expected = module(x)
    norm.use(nn.Sequential(module), True)
    got = module(x)
    assert got.dtype == expected.dtype == torch.float32 and torch.equal(got, expected)


@pytest.mark.parametrize("dtype, autocast_to", [(torch.bfloat16, torch.bfloat16), (torch.float32, torch.bfloat16),
                                                (torch.float16, torch.float16)])
def test_fused_norm_under_autocast_equals_the_module(dtype, autocast_to):
    """Autocast changes neither path (the statistics are fp32 already, the rest is elementwise): the
    same output and input gradient as the module under the same autocast."""
    module, x, gy = norm_and_input(LlamaRMSNorm, dtype, False)

    def run():
        with torch.autocast("cpu", dtype=autocast_to):
            y = module(x)
        return y, torch.autograd.grad(y, x, gy)[0]

    stock = run()
    norm.use(nn.Sequential(module), True)
    fused = run()
    assert fused[0].dtype == stock[0].dtype == dtype and torch.equal(fused[0], stock[0])
    assert (fused[1] - stock[1]).abs().max() <= (1e-6 if dtype == torch.float32 else 2 ** -7) * stock[1].abs().max()
