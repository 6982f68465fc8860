"""The fused CPU LoRA layer computes exactly what PEFT's own modules compute, masks included; on a
bf16 base with fp32 adapters, what PEFT's modules compute under autocast, to bf16 rounding."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lorarank import fastpath, lora
from lorarank.builtin_models import tiny_random_model
from lorarank.config import ALL_PROJECTIONS
from lorarank.fastpath import fused
from lorarank.model import autocast

# PEFT's own modules with the same dropout masks: the reference every fused setting must match
PEFT_MODULES = dataclasses.replace(fastpath.FAST, fused=False)


@pytest.fixture
def adapted(tiny_base):
    """A factory of adapted tiny models; each is detached again after the test (the base is shared)."""
    made = []

    def make(p: float, base=None):
        peft_model, ids = _adapted(base or tiny_base[0], len(tiny_base[1]), p)
        made.append(peft_model)
        return peft_model, ids

    yield make
    for peft_model in made:
        fastpath.disable(peft_model)
        lora.detach(peft_model)


def _adapted(model, vocab: int, p: float):
    peft_model = lora.attach(model, 4, lora.scaling_for(4, 8, "constant"), p, ALL_PROJECTIONS, 0)
    fastpath.enable(peft_model)
    torch.manual_seed(1)
    with torch.no_grad():  # B = 0 at init would hide every B-path error: give it values
        for name, prm in peft_model.named_parameters():
            if "lora_B" in name:
                prm.normal_(0, 0.1)
    return peft_model, torch.randint(0, vocab, (2, 19), generator=torch.Generator().manual_seed(2))


def forward_backward(peft_model, ids, seed: int = 5):
    """Logits and adapter gradients of one step, under the autocast model.py uses for the base's dtype
    (none for fp32)."""
    peft_model.train()
    for prm in peft_model.parameters():
        prm.grad = None
    torch.manual_seed(seed)  # the dropout masks
    with autocast(ids.device, peft_model.get_base_model().dtype):
        logits = peft_model(input_ids=ids).logits
    logits.float().pow(2).mean().backward()
    grads = {n: prm.grad.clone() for n, prm in peft_model.named_parameters() if prm.requires_grad}
    return logits.detach(), grads


def assert_same(a, b):
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-5)
    assert a[1].keys() == b[1].keys()
    for name in b[1]:
        torch.testing.assert_close(a[1][name], b[1][name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("backward", ["laid_out", "plain"])
def test_fused_matches_peft_values_and_gradients(adapted, p, backward):
    peft_model, ids = adapted(p)
    assert fastpath.fused_layers(peft_model) == 2 * 7  # enable fused every layer
    fastpath.enable(peft_model, dataclasses.replace(fastpath.FAST, backward=backward))
    ours = forward_backward(peft_model, ids)
    fastpath.enable(peft_model, PEFT_MODULES)
    assert fastpath.fused_layers(peft_model) == 0
    peft_own = forward_backward(peft_model, ids)
    assert len(peft_own[1]) == 2 * 2 * 7
    assert_same(ours, peft_own)
    if p:  # dropout is live: another seed draws other masks, and the gradients move
        _, g_other = forward_backward(peft_model, ids, seed=6)
        assert any(not torch.allclose(g_other[n], peft_own[1][n]) for n in peft_own[1])


def tiny_qwen2(vocab: int):
    """A 2-layer Qwen2: its q, k and v projections carry biases, which the fused layer adds to W x."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return Qwen2ForCausalLM(cfg).requires_grad_(False)


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_fused_matches_peft_on_a_base_with_biases(adapted, tiny_base, p):
    base = tiny_qwen2(len(tiny_base[1]))
    attn = base.model.layers[0].self_attn
    with torch.no_grad():  # random init leaves biases at zero: make them matter
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
            proj.bias.normal_(0, 0.5)
    assert attn.o_proj.bias is None and attn.q_proj.bias.abs().sum() > 0
    peft_model, ids = adapted(p, base)
    assert fastpath.fused_layers(peft_model) == 2 * 7
    ours = forward_backward(peft_model, ids)
    fastpath.enable(peft_model, PEFT_MODULES)
    assert_same(ours, forward_backward(peft_model, ids))


def test_fused_layers_fall_back_to_peft_when_not_plain_lora(adapted):
    peft_model, ids = adapted(0.0)
    layer = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(3, layer.in_features)
    assert fused.fusable(layer, x)
    assert not fused.fusable(layer, x.double())  # dtype mismatch
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fused.fusable(layer, x)
    peft_model.eval()
    with torch.no_grad():
        adapted_out = peft_model(input_ids=ids).logits
        with peft_model.disable_adapter():  # PEFT's path: the base alone
            assert not fused.fusable(layer, x)
            base_out = peft_model(input_ids=ids).logits
        peft_model.merge_adapter()  # PEFT's path: W + γBA in the base weight
        assert not fused.fusable(layer, x)
        merged_out = peft_model(input_ids=ids).logits
        peft_model.unmerge_adapter()
    assert not torch.allclose(adapted_out, base_out, atol=1e-4)
    torch.testing.assert_close(merged_out, adapted_out, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------- bf16 base


@pytest.fixture(scope="module")
def bf16_bases(tiny_base):
    """The tiny model with bf16 weights, and the same (rounded) weights in fp32: the exact reference."""
    vocab = len(tiny_base[1])
    return tiny_random_model(vocab, torch.bfloat16), tiny_random_model(vocab, torch.bfloat16).float()


def assert_bf16_close(a, b):
    """Equal to bf16 rounding: 2⁻⁷ of each value (one bf16 step at the values here), or of the
    tensor's largest magnitude for values near zero."""
    torch.testing.assert_close(a.float(), b.float(), rtol=2 ** -7, atol=2 ** -7 * b.float().abs().max().item())


def one_layer_step(peft_model, layer, x, w, seed: int = 5):
    """y = layer(x) under bf16 autocast and the gradients of Σ w ⊙ y: y, ∂/∂x, ∂/∂A, ∂/∂B."""
    x = x.clone().requires_grad_(True)
    for prm in peft_model.parameters():
        prm.grad = None
    torch.manual_seed(seed)
    with autocast(x.device, torch.bfloat16):
        y = layer(x)
    (y.float() * w).sum().backward()
    return y.detach(), x.grad, layer.lora_A["default"].weight.grad, layer.lora_B["default"].weight.grad


@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("backward", ["laid_out", "plain"])
@pytest.mark.parametrize("adapter_dtype", ["base", "fp32"])
def test_fused_bf16_layer_matches_peft_under_autocast(adapted, bf16_bases, p, backward, adapter_dtype):
    """One LoRA projection of a bf16 base, fp32 adapters: y and the input gradient (bf16), A's and
    B's gradients (fp32) equal PEFT's modules under autocast to bf16 rounding."""
    peft_model, _ = adapted(p, bf16_bases[0])
    layer = peft_model.get_base_model().model.layers[0].mlp.down_proj  # 256 -> 128
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 19, layer.in_features, generator=gen).bfloat16()
    w = torch.randn(2, 19, layer.out_features, generator=gen)
    peft_model.train()
    fastpath.enable(peft_model, dataclasses.replace(fastpath.FAST, backward=backward, adapter_dtype=adapter_dtype))
    assert fused.fusable(layer, x) and fastpath.fused_layers(peft_model) == 2 * 7
    with autocast(x.device, torch.bfloat16):
        assert fused.fusable(layer, x)
    ours = one_layer_step(peft_model, layer, x, w)
    fastpath.enable(peft_model, PEFT_MODULES)
    peft_own = one_layer_step(peft_model, layer, x, w)
    assert [t.dtype for t in ours] == [t.dtype for t in peft_own] == [torch.bfloat16] * 2 + [torch.float32] * 2
    for a, b in zip(ours, peft_own):
        assert_bf16_close(a, b)
    if p:  # other masks move A's gradient by more than the tolerance
        other = one_layer_step(peft_model, layer, x, w, seed=6)[2]
        with pytest.raises(AssertionError):
            assert_bf16_close(other, peft_own[2])


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: prm for n, prm in model.named_parameters() if prm.requires_grad}


def relative_errors(a, b) -> tuple[float, float]:
    """‖a − b‖ / ‖b‖ of the logits, and the largest over the adapter gradients."""
    def rel(x, y):
        return ((x.float() - y.float()).norm() / y.float().norm()).item()

    return rel(a[0], b[0]), max(rel(a[1][n], b[1][n]) for n in b[1])


@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("backward", ["laid_out", "plain"])
@pytest.mark.parametrize("adapter_dtype", ["base", "fp32"])
def test_fused_bf16_model_matches_peft_bf16_path(adapted, bf16_bases, p, backward, adapter_dtype):
    """The whole tiny model on a bf16 base under autocast. Through two layers the rounding of two
    bf16 computations of the same maths drifts apart as far as either drifts from fp32 (~1% of the
    logits, up to 3% of a gradient here), so the check is on norms: the fused path within 2% (logits)
    and 4% (every gradient) of PEFT's bf16 path, and less than twice as far as PEFT's bf16 path from
    the fp32 computation of the same weights. A wrong scale, mask or layout errs by tens of percent."""
    bf16, fp32 = bf16_bases
    peft_model, ids = adapted(p, bf16)
    assert all(prm.dtype == torch.float32 for prm in trainable(peft_model).values())  # PEFT keeps adapters fp32
    reference, _ = adapted(p, fp32)
    reference.load_state_dict(trainable(peft_model), strict=False)  # the same adapter values
    fastpath.enable(reference, PEFT_MODULES)
    exact = forward_backward(reference, ids)
    fastpath.enable(peft_model, dataclasses.replace(fastpath.FAST, backward=backward, adapter_dtype=adapter_dtype))
    ours = forward_backward(peft_model, ids)
    fastpath.enable(peft_model, PEFT_MODULES)
    peft_bf16 = forward_backward(peft_model, ids)
    logits, grads = relative_errors(ours, peft_bf16)
    assert logits < 0.02 and grads < 0.04
    for ours_err, peft_err in zip(relative_errors(ours, exact), relative_errors(peft_bf16, exact)):
        assert ours_err < 2 * peft_err
