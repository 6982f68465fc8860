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
from lorarank.model import autocast, load_base
from lorarank.train import collate, collate_packed, completion_loss, packing_matches

from conftest import TINY_CONFIG

CPU = torch.device("cpu")


def adapted_tiny(dtype: str = "float32"):
    """(tiny-random with a rank-4 adapter whose B is not zero, tokenizer, six training examples)."""
    base, tok = load_base(ModelConfig(name="tiny-random", dtype=dtype), CPU)
    peft_model = lora.attach(base, 4, lora.scaling_for(4, 8, "constant"), 0.0, ALL_PROJECTIONS, 0)
    fastpath.enable(peft_model)
    with torch.no_grad():  # B = 0 would send no gradient to A: give it values
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
    return peft_model, tok, prepare(DataConfig(suite_size=40), tok).train[:6]


@pytest.fixture(scope="module")
def adapted():
    made = adapted_tiny()
    yield made
    fastpath.enable(made[0])


def loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss, _ = completion_loss(model, batch)
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


def test_every_attention_setting_has_the_same_maths(adapted):
    model, _, examples = adapted
    assert fastpath.per_example_attention(model)  # enable switched it on
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


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])  # the check must see mixing in either precision
def test_a_model_that_mixes_packed_examples_is_trained_with_padding(monkeypatch, dtype):
    import lorarank.runner as runner_mod

    cfg = load_config(TINY_CONFIG, {"model.dtype": dtype})
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


# ---------------------------------------------------------------------------------------------- bf16 base


@pytest.mark.parametrize("dtype", ["base", "fp32"])
def test_per_example_sdpa_runs_in_the_dtype_chosen(adapted, dtype):
    """bf16 q, k, v under bf16 autocast: `base` is bf16 SDPA per example, `fp32` is fp32 SDPA per
    example rounded to bf16 once."""
    module = adapted[0].get_base_model().model.layers[0].self_attn  # 4 query heads sharing 2 kv heads
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, h, 8, 32, generator=gen).bfloat16() for h in (4, 2, 2))
    table = attention.IN_FP32 if attention.DTYPES[dtype] else attention.IMPLEMENTATIONS
    with autocast(CPU, torch.bfloat16):
        out = table["split"][1](module, q, k, v, None, scaling=0.2, segment_lengths=(3, 5))[0]
    compute = torch.float32 if dtype == "fp32" else torch.bfloat16
    expected = torch.cat([F.scaled_dot_product_attention(*(t[:, :, s:s + n].to(compute) for t in (q, k, v)),
                                                         is_causal=True, scale=0.2, enable_gqa=True)
                          for s, n in ((0, 3), (3, 5))], dim=2).transpose(1, 2).bfloat16()
    assert out.dtype == torch.bfloat16 and torch.equal(out, expected)


@pytest.mark.parametrize("dtype", ["base", "fp32"])
def test_attention_settings_agree_on_a_bf16_base(dtype):
    """The tiny model on a bf16 base, under autocast as training runs it: per-example attention
    (split, sliced; SDPA in bf16 or fp32) against the masked square and a padded batch, to bf16
    rounding: the loss within 2e-4 (measured 5e-6; attention across the examples moves it by 1e-3)
    and each adapter gradient within 2% in norm (measured 0.6%)."""
    model, tok, examples = adapted_tiny("bfloat16")
    packed = collate_packed(examples, CPU)
    results = {}
    for kind in ("split", "sliced", "masked"):
        fastpath.enable(model, dataclasses.replace(fastpath.FAST, attention=kind, attention_dtype=dtype))
        results[kind] = loss_and_grads(model, packed)
    fastpath.enable(model)
    results["padded"] = loss_and_grads(model, collate(examples, tok.pad_token_id, CPU))
    reference = results.pop("masked")
    for loss, grads in results.values():
        assert loss.dtype == torch.float32 and abs(loss / reference[0] - 1) < 2e-4
        for name, g in grads.items():
            assert g.dtype == torch.float32 and (g - reference[1][name]).norm() < 0.02 * reference[1][name].norm()
    across = dict(packed, segments=(packed["input_ids"].shape[1],))
    assert abs(loss_and_grads(model, across)[0] / reference[0] - 1) > 5e-4
