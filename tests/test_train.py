"""Training loop: LR schedule shapes, accumulation equals a big batch, determinism."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from lorarank import lora
from lorarank.config import ALL_PROJECTIONS, DataConfig, TrainConfig
from lorarank.data.format import prepare
from lorarank.train import lr_at, step_plan, total_steps, train


def test_schedules():
    cfg = TrainConfig(warmup_ratio=0.2, lr_schedule="cosine", min_lr_ratio=0.0)
    lrs = [lr_at(s, 10, 1.0, cfg) for s in range(10)]
    assert lrs[0] == pytest.approx(1 / 3) and lrs[1] == pytest.approx(2 / 3)  # warmup over 2 steps
    assert lrs[2] == pytest.approx(1.0)  # peak right after warmup
    assert lrs[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))  # half-way down the cosine
    lin = TrainConfig(warmup_ratio=0.0, lr_schedule="linear", min_lr_ratio=0.1)
    assert [lr_at(s, 4, 1.0, lin) for s in range(4)] == pytest.approx([1.0, 0.775, 0.55, 0.325])
    const = TrainConfig(warmup_ratio=0.0, lr_schedule="constant")
    assert {lr_at(s, 5, 3e-4, const) for s in range(5)} == {3e-4}


def test_step_plan_is_seeded_and_covers_epochs():
    cfg = TrainConfig(batch_size=2, grad_accum=2, epochs=2)
    n = 10
    steps = total_steps(cfg, n)
    assert steps == 5  # ceil(2 epochs * 10 / 4)
    plan = step_plan(n, cfg, seed=3, steps=steps)
    assert plan == step_plan(n, cfg, seed=3, steps=steps)
    assert plan != step_plan(n, cfg, seed=4, steps=steps)
    flat = [i for s in plan for i in s]
    assert sorted(flat[:10]) == list(range(10))  # the first epoch is a permutation
    assert all(len(s) == 4 for s in plan)


def _grads(model, data, cfg):
    peft_model = lora.attach(copy.deepcopy(model), 4, lora.scaling_for(4, 8, "constant"), 0.0, ALL_PROJECTIONS, 0)
    # capture each gradient when backward finishes accumulating it, before the optimizer step
    grads = {}
    for n, p in peft_model.named_parameters():
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(lambda t, n=n: grads.__setitem__(n, t.grad.clone()))
    # B starts at zero, so the gradient reaching A is zero; give B a value so both get gradients
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
    train(peft_model, data.train, data.eval, cfg, lr=0.0, seed=0, pad_id=0, device=torch.device("cpu"))
    return grads


def test_gradient_accumulation_equals_one_big_batch(tiny_base):
    """4 examples as 1x4 or as 2 micro-batches of 2 (different padding) give the same gradient:
    the loss is normalised by the token count of the whole step."""
    model, tok = tiny_base
    data = prepare(DataConfig(suite_size=40), tok)
    big = TrainConfig(batch_size=4, grad_accum=1, max_steps=1, max_grad_norm=1e9, log_every=1, eval_every=1)
    small = TrainConfig(batch_size=2, grad_accum=2, max_steps=1, max_grad_norm=1e9, log_every=1, eval_every=1)
    g_big, g_small = _grads(model, data, big), _grads(model, data, small)
    assert g_big.keys() == g_small.keys() and g_big
    for n in g_big:
        torch.testing.assert_close(g_big[n], g_small[n], atol=1e-6, rtol=1e-4)


def test_same_seed_same_losses(tiny_base):
    model, tok = tiny_base
    data = prepare(DataConfig(suite_size=40), tok)
    cfg = TrainConfig(batch_size=2, grad_accum=1, max_steps=4, log_every=1, eval_every=2)

    def run(seed):
        m = lora.attach(copy.deepcopy(model), 4, lora.scaling_for(4, 8, "constant"), 0.1, ALL_PROJECTIONS, seed)
        return train(m, data.train, data.eval, cfg, lr=1e-2, seed=seed, pad_id=0, device=torch.device("cpu"))

    a, b, c = run(1), run(1), run(2)
    assert a.train_losses == b.train_losses and a.eval_losses == b.eval_losses
    assert a.train_losses != c.train_losses
    assert a.eval_steps == [2, 4] and a.steps == [1, 2, 3, 4]
    assert all(math.isfinite(x) for x in a.train_losses + a.eval_losses)


def test_packed_batches_give_the_same_loss_and_gradients_as_padded(tiny_base):
    """One padding-free row with restarting position ids == a padded batch, loss and gradients."""
    from lorarank.train import collate, collate_packed, completion_loss, packing_matches

    model, tok = tiny_base
    data = prepare(DataConfig(suite_size=40), tok)
    batch = data.train[:5]
    cpu = torch.device("cpu")
    assert packing_matches(model, batch, 0, cpu)
    peft_model = lora.attach(copy.deepcopy(model), 4, lora.scaling_for(4, 8, "constant"), 0.0, ALL_PROJECTIONS, 0)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
    grads = []
    for b in (collate_packed(batch, cpu), collate(batch, 0, cpu)):
        loss, n = completion_loss(peft_model, b)
        (loss / n).backward()
        grads.append({k: p.grad.clone() for k, p in peft_model.named_parameters() if p.requires_grad})
        peft_model.zero_grad()
        assert n == sum(e.n_completion for e in batch)
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], atol=1e-6, rtol=1e-4)
    packed = collate_packed(batch, cpu)
    assert packed["input_ids"].shape == (1, sum(len(e.input_ids) for e in batch))  # no padding at all
