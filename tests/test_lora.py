"""LoRA: exact parameter counts, alpha policies, attach/detach leaves the base untouched."""

from __future__ import annotations

import math

import pytest
import torch

from lorarank import lora
from lorarank.config import ALL_PROJECTIONS
from lorarank.errors import UserError


@pytest.mark.parametrize("targets", [ALL_PROJECTIONS, ["q_proj", "v_proj"], ["down_proj"]])
def test_trainable_params_formula_matches_peft(tiny_base, targets):
    model, _ = tiny_base
    per_rank = lora.params_per_rank(model, targets)
    # tiny model: hidden 128, kv 64, intermediate 256, 2 layers
    by_name = {"q_proj": 128 + 128, "k_proj": 128 + 64, "v_proj": 128 + 64, "o_proj": 128 + 128,
               "gate_proj": 128 + 256, "up_proj": 128 + 256, "down_proj": 256 + 128}
    assert per_rank == 2 * sum(by_name[t] for t in targets)
    for r in (1, 2, 8, 32):
        peft_model = lora.attach(model, r, lora.scaling_for(r, 32, "constant"), 0.0, targets, 0)
        trainable, total = peft_model.get_nb_trainable_parameters()
        assert trainable == r * per_rank == lora.count_trainable(peft_model)[0]
        model = lora.detach(peft_model)


def test_detach_restores_the_base_exactly(tiny_base):
    model, _ = tiny_base
    x = torch.randint(0, 200, (2, 12))
    with torch.no_grad():
        before = model(x).logits.clone()
    peft_model = lora.attach(model, 4, lora.scaling_for(4, 32, "constant"), 0.0, ALL_PROJECTIONS, 0)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.fill_(0.05)  # a non-zero update so the adapter visibly changes the output
        changed = peft_model(x).logits
    assert (changed - before).abs().max() > 1e-3
    model = lora.detach(peft_model)
    with torch.no_grad():
        after = model(x).logits
    assert torch.equal(after, before)
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_alpha_policies():
    assert lora.scaling_for(8, 32, "constant").gamma == 4.0
    assert lora.scaling_for(64, 32, "constant").gamma == 0.5
    assert lora.scaling_for(8, 32, "proportional") == lora.Scaling(16.0, False, 2.0)
    assert lora.scaling_for(64, 32, "proportional").gamma == 2.0
    rs = lora.scaling_for(16, 32, "rslora")
    assert rs.use_rslora and rs.gamma == 8.0
    assert math.isclose(lora.scaling_for(64, 32, "rslora").gamma * math.sqrt(64), 32)


def test_peft_applies_the_recorded_scale(tiny_base):
    model, _ = tiny_base
    for policy in ("constant", "proportional", "rslora"):
        s = lora.scaling_for(16, 32, policy)
        peft_model = lora.attach(model, 16, s, 0.0, ["q_proj"], 0)
        layer = peft_model.base_model.model.model.layers[0].self_attn.q_proj
        assert math.isclose(layer.scaling["default"], s.gamma)
        model = lora.detach(peft_model)


def test_unknown_target_lists_available(tiny_base):
    model, _ = tiny_base
    with pytest.raises(UserError, match=r"unknown target module\(s\) qkv_proj: .*q_proj.*\(set lora.target_modules"):
        lora.params_per_rank(model, ["qkv_proj"])


def test_rank_above_layer_width_refused(tiny_base):
    model, _ = tiny_base
    lora.check_ranks(model, ALL_PROJECTIONS, [64])  # k/v are 128 -> 64: rank 64 is the limit
    with pytest.raises(UserError, match=r"exceed min\(d_in, d_out\) = 64"):
        lora.check_ranks(model, ALL_PROJECTIONS, [8, 65])
