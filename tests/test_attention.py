"""Per-example attention for packed rows: the maths of the block-diagonal mask, and safe fallbacks."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from lorarank import fastpath, lora
from lorarank.config import ALL_PROJECTIONS, DataConfig, ModelConfig, load_config
from lorarank.data.format import prepare
from lorarank.fastpath import attention
from lorarank.model import load_base
from lorarank.train import collate, collate_packed, completion_loss, packing_matches

from conftest import TINY_CONFIG

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def adapted():
    base, tok = load_base(ModelConfig(name="tiny-random"), CPU)
    peft_model = lora.attach(base, 4, lora.scaling_for(4, 8, "constant"), 0.0, ALL_PROJECTIONS, 0)
    with torch.no_grad():  # B = 0 would send no gradient to A: give it values
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
    yield peft_model, tok, prepare(DataConfig(suite_size=40), tok).train[:6]
    fastpath.enable(peft_model)


def loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss, _ = completion_loss(model, batch)
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


def test_every_attention_setting_has_the_same_maths(adapted):
    model, _, examples = adapted
    assert fastpath.per_example_attention(model)  # load_base and attach switched it on
    packed = collate_packed(examples, CPU)
    assert packed["segments"] == tuple(len(e.input_ids) for e in examples)
    results = {}
    for kind in ("split", "sliced", "masked"):
        fastpath.enable(model, dataclasses.replace(fastpath.FAST, attention=kind))
        assert fastpath.per_example_attention(model) == (kind != "masked")
        results[kind] = loss_and_grads(model, packed)
    fastpath.enable(model)
    results["padded"] = loss_and_grads(model, collate(examples, 0, CPU))
    for kind in ("sliced", "masked", "padded"):
        torch.testing.assert_close(results["split"][0], results[kind][0], rtol=1e-5, atol=1e-5)
        for k in results["split"][1]:
            torch.testing.assert_close(results["split"][1][k], results[kind][1][k], rtol=1e-4, atol=1e-6)
    # the segments are what keeps examples apart: one segment over the row lets them attend across
    across = dict(packed, segments=(packed["input_ids"].shape[1],))
    assert not torch.isclose(loss_and_grads(model, across)[0], results["split"][0], rtol=1e-4)


@pytest.mark.parametrize("kind", ["split", "sliced"])
@pytest.mark.parametrize("special", [{"softcap": 30.0}, {"sliding_window": 4}, {"dropout": 0.2},
                                     {"segment_lengths": None}])
def test_calls_that_are_not_plain_packed_forwards_fall_back_to_sdpa(adapted, kind, special):
    """With segments (3, 5) and no mask, the per-example path attends within each segment while
    transformers' SDPA attends causally over all 8 positions: equal results show the fallback ran."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    model, _, _ = adapted
    module = model.get_base_model().model.layers[0].self_attn  # 4 query heads sharing 2 kv heads
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, h, 8, 32, generator=gen) for h in (4, 2, 2))
    call = {"segment_lengths": (3, 5), **special}
    ours = attention.IMPLEMENTATIONS[kind][1]

    def run(fn, **kwargs):
        torch.manual_seed(3)  # attention dropout draws from the global stream
        return fn(module, q, k, v, None, scaling=0.2, is_causal=True, **kwargs)[0]

    if "softcap" in special:  # transformers' SDPA refuses soft-capping: so must we, rather than ignore it
        with pytest.raises(ValueError, match="softcap"):
            run(ours, **call)
        return
    expected = run(sdpa_attention_forward, **{k: v for k, v in call.items() if k != "segment_lengths"})
    torch.testing.assert_close(run(ours, **call), expected)
    if special.get("segment_lengths", ()) is not None:  # the same call without the special feature differs
        assert not torch.allclose(run(ours, segment_lengths=(3, 5)), expected, atol=1e-4)


def test_generation_with_a_cache_falls_back_to_sdpa(adapted):
    model, tok, examples = adapted
    prompt = torch.tensor([examples[0].input_ids[:examples[0].prompt_len]])
    model.eval()
    with torch.no_grad():
        ours = model.generate(input_ids=prompt, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
        fastpath.disable(model)
        try:
            stock = model.generate(input_ids=prompt, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
        finally:
            fastpath.enable(model)
    assert torch.equal(ours, stock) and ours.shape[1] == prompt.shape[1] + 6


def whole_row_causal(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """Attention as a model with its own causal attention computes it: causal over the whole row,
    blind to where packed examples start (right padding stays harmless: pads come last)."""
    groups = module.num_key_value_groups
    out = F.scaled_dot_product_attention(query, key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1),
                                         is_causal=True, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def load_mixing_base(cfg: ModelConfig, device: torch.device):
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    model, tok = load_base(cfg, device)
    AttentionInterface.register("whole_row_causal", whole_row_causal)
    ALL_MASK_ATTENTION_FUNCTIONS.register("whole_row_causal", sdpa_mask)
    model.set_attn_implementation("whole_row_causal")
    return model, tok


def test_a_model_that_mixes_packed_examples_is_trained_with_padding(monkeypatch):
    import lorarank.runner as runner_mod

    cfg = load_config(TINY_CONFIG)
    mixing, tok = load_mixing_base(cfg.model, CPU)
    fastpath.enable(mixing)  # leaves an attention implementation it does not know alone
    assert not fastpath.per_example_attention(mixing)
    examples = prepare(cfg.data, tok).eval[:4]
    assert not packing_matches(mixing, examples, tok.pad_token_id, CPU)
    assert packing_matches(load_base(cfg.model, CPU)[0], examples, tok.pad_token_id, CPU)
    assert runner_mod.TrialRunner(cfg).cfg.train.packing
    monkeypatch.setattr(runner_mod, "load_base", load_mixing_base)
    runner = runner_mod.TrialRunner(cfg)
    assert not runner.cfg.train.packing and cfg.train.packing  # the runner's copy only
