"""Per-example attention for packed rows: the maths of the block-diagonal mask, and a safe fallback."""

from __future__ import annotations

import pytest
import torch

from lorarank import attention, lora
from lorarank.config import ALL_PROJECTIONS, DataConfig, ModelConfig
from lorarank.data.format import prepare
from lorarank.model import load_base
from lorarank.train import collate, collate_packed, completion_loss

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def adapted():
    base, tok = load_base(ModelConfig(name="tiny-random"), CPU)
    peft_model = lora.attach(base, 4, lora.scaling_for(4, 8, "constant"), 0.0, ALL_PROJECTIONS, 0)
    with torch.no_grad():  # B = 0 would send no gradient to A: give it values
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
    return peft_model, tok, prepare(DataConfig(suite_size=40), tok).train[:6]


def loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss, _ = completion_loss(model, batch)
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


def test_cpu_models_use_per_example_attention_with_the_same_maths(adapted):
    model, _, examples = adapted
    assert attention.active(model.get_base_model())
    packed = collate_packed(examples, CPU)
    assert packed["segments"] == tuple(len(e.input_ids) for e in examples)
    masked = {k: v for k, v in packed.items() if k != "segments"}  # transformers' masked square
    per_example, masked_square, padded = (loss_and_grads(model, b) for b in (packed, masked, collate(examples, 0, CPU)))
    for other in (masked_square, padded):
        torch.testing.assert_close(per_example[0], other[0], rtol=1e-5, atol=1e-5)
        for k in per_example[1]:
            torch.testing.assert_close(per_example[1][k], other[1][k], rtol=1e-4, atol=1e-6)
    # the segments are what keeps examples apart: one segment over the row lets them attend across
    across = dict(packed, segments=(packed["input_ids"].shape[1],))
    assert not torch.isclose(loss_and_grads(model, across)[0], per_example[0], rtol=1e-4)


def test_generation_with_a_cache_falls_back_to_sdpa(adapted):
    model, tok, examples = adapted
    prompt = torch.tensor([examples[0].input_ids[:examples[0].prompt_len]])
    model.eval()
    with torch.no_grad():
        ours = model.generate(input_ids=prompt, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
        model.get_base_model().set_attn_implementation("sdpa")
        try:
            stock = model.generate(input_ids=prompt, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
        finally:
            model.get_base_model().set_attn_implementation(attention.NAME)
    assert torch.equal(ours, stock) and ours.shape[1] == prompt.shape[1] + 6
