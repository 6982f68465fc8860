"""The fused CPU LoRA layer computes exactly what PEFT's own modules compute, masks included."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lorarank import fastpath, lora
from lorarank.config import ALL_PROJECTIONS
from lorarank.fastpath import fused

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
    torch.manual_seed(1)
    with torch.no_grad():  # B = 0 at init would hide every B-path error: give it values
        for name, prm in peft_model.named_parameters():
            if "lora_B" in name:
                prm.normal_(0, 0.1)
    return peft_model, torch.randint(0, vocab, (2, 19), generator=torch.Generator().manual_seed(2))


def forward_backward(peft_model, ids, seed: int = 5):
    peft_model.train()
    for prm in peft_model.parameters():
        prm.grad = None
    torch.manual_seed(seed)  # the dropout masks
    logits = peft_model(input_ids=ids).logits
    logits.pow(2).mean().backward()
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
    assert fastpath.fused_layers(peft_model) == 2 * 7  # attach fused every layer
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
