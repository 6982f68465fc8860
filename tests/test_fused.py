"""The fused CPU LoRA layer computes exactly what PEFT's own modules compute, masks included."""

from __future__ import annotations

import pytest
import torch

from lorarank import fused, lora
from lorarank.config import ALL_PROJECTIONS


def unfuse(peft_model) -> None:
    """Back to PEFT's own forward (the instance attribute shadows the class method)."""
    for mod in peft_model.modules():
        if hasattr(mod, "lora_A"):
            mod.__dict__.pop("forward", None)


@pytest.fixture
def adapted(tiny_base):
    """A factory of adapted tiny models; each is detached again after the test (the base is shared)."""
    made = []

    def make(p: float):
        peft_model, ids = _adapted(tiny_base, p)
        made.append(peft_model)
        return peft_model, ids

    yield make
    for peft_model in made:
        unfuse(peft_model)
        lora.detach(peft_model)


def _adapted(tiny_base, p: float):
    model, tok = tiny_base
    peft_model = lora.attach(model, 4, lora.scaling_for(4, 8, "constant"), p, ALL_PROJECTIONS, 0)
    torch.manual_seed(1)
    with torch.no_grad():  # B = 0 at init would hide every B-path error: give it values
        for name, prm in peft_model.named_parameters():
            if "lora_B" in name:
                prm.normal_(0, 0.1)
    return peft_model, torch.randint(0, len(tok), (2, 19), generator=torch.Generator().manual_seed(2))


def forward_backward(peft_model, ids, seed: int = 5):
    peft_model.train()
    for prm in peft_model.parameters():
        prm.grad = None
    torch.manual_seed(seed)  # the dropout masks
    logits = peft_model(input_ids=ids).logits
    logits.pow(2).mean().backward()
    grads = {n: prm.grad.clone() for n, prm in peft_model.named_parameters() if prm.requires_grad}
    return logits.detach(), grads


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_fused_matches_peft_values_and_gradients(adapted, p):
    peft_model, ids = adapted(p)
    assert sum("forward" in m.__dict__ for m in peft_model.modules()) == 2 * 7  # attach fused every layer
    out_fused, g_fused = forward_backward(peft_model, ids)
    unfuse(peft_model)
    out_peft, g_peft = forward_backward(peft_model, ids)
    torch.testing.assert_close(out_fused, out_peft, rtol=1e-5, atol=1e-5)
    assert g_fused.keys() == g_peft.keys() and len(g_fused) == 2 * 2 * 7
    for name in g_peft:
        torch.testing.assert_close(g_fused[name], g_peft[name], rtol=1e-4, atol=1e-6, msg=name)
    if p:  # dropout is live: another seed draws other masks, and the gradients move
        _, g_other = forward_backward(peft_model, ids, seed=6)
        assert any(not torch.allclose(g_other[n], g_peft[n]) for n in g_peft)


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
