"""The chunked LM head + cross-entropy (train.LinearCrossEntropy) equals the full-logit path: values
and gradients to 1e-6 relative in fp32, within bf16 rounding on a bf16 head under autocast."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lorarank import train
from lorarank.builtin_models import tiny_random_model
from lorarank.data.format import Example
from lorarank.train import LinearCrossEntropy, collate_packed, completion_loss

CPU = torch.device("cpu")


def inputs(dtype: torch.dtype, rows: int = 150, hidden: int = 64, vocab: int = 1000):
    """(h, W, targets): logits of a few units, as a trained head gives."""
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(rows, hidden, generator=gen).to(dtype).requires_grad_(True)
    w = (torch.randn(vocab, hidden, generator=gen) * 0.3).to(dtype).requires_grad_(True)
    return h, w, torch.randint(0, vocab, (rows,), generator=gen)


def full_path(h, w, targets, scale: float):
    """The loss as a stock trainer computes it: the head under autocast, every logit kept, fp32 CE."""
    with torch.autocast("cpu", dtype=h.dtype, enabled=h.dtype != torch.float32):
        loss = F.cross_entropy(F.linear(h, w).float(), targets, reduction="sum")
    (loss * scale).backward()
    return loss.detach(), h.grad, w.grad


def chunked(h, w, targets, scale: float):
    loss = LinearCrossEntropy.apply(h, w, targets, True)
    (loss * scale).backward()
    return loss.detach(), h.grad, w.grad


def relative(a, b) -> float:
    """Norm-wise relative error ‖a − b‖ / ‖b‖ (fp32 sums in another order differ by a few ulp per
    element: the largest single difference over the largest value sits at 1e-6 with one thread)."""
    return (torch.linalg.vector_norm(a.float() - b.float()) / torch.linalg.vector_norm(b.float())).item()


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.bfloat16, 2 ** -7)])  # bf16: one step at the top value
def test_chunked_loss_equals_the_full_logit_path(monkeypatch, dtype, tol):
    monkeypatch.setattr(train, "CHUNK_ROWS", 64)  # 150 rows: three chunks, the last one partial
    scale = 1 / 37  # the loop divides by the step's token count: the incoming gradient is not 1
    ours, ref = chunked(*inputs(dtype), scale), full_path(*inputs(dtype), scale)
    assert ours[0].dtype == torch.float32 and ours[1].dtype == ours[2].dtype == dtype
    assert relative(ours[0], ref[0]) < 1e-6  # the fp32 log-sum-exp of the same logits
    assert relative(ours[1], ref[1]) < tol and relative(ours[2], ref[2]) < tol
    wrong = full_path(*inputs(dtype), scale * 1.03)  # a 3% error in the scale is caught
    assert relative(ours[1], wrong[1]) > 3 * tol


def test_chunked_loss_without_gradients_keeps_none():
    h, w, t = inputs(torch.float32)
    with torch.no_grad():
        loss = LinearCrossEntropy.apply(h, w, t, torch.is_grad_enabled())
    ref = F.cross_entropy(F.linear(h, w), t, reduction="sum")
    assert not loss.requires_grad and torch.allclose(loss, ref, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_completion_loss_takes_the_chunked_path_with_the_same_values(tiny_base, dtype):
    """Through the model: the chunked loss and gradients equal a head run in full on the same hidden
    states (the tiny model's head is an nn.Linear tied to the embedding, as SmolLM2's)."""
    model = tiny_random_model(len(tiny_base[1]), dtype).requires_grad_(False)
    model.lm_head.weight.requires_grad_(False)
    ids = torch.randint(3, 200, (30,), generator=torch.Generator().manual_seed(1)).tolist()
    batch = collate_packed([Example(ids[:14], 6, ""), Example(ids[14:], 9, "")], CPU)
    model.model.embed_tokens.weight.requires_grad_(True)  # a gradient to compare, through h
    loss, n = completion_loss(model, batch)
    loss.backward()
    ours = loss.detach(), model.model.embed_tokens.weight.grad.clone()
    model.model.embed_tokens.weight.grad = None
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        hidden = model.model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).last_hidden_state
        logits = model.lm_head(hidden[:, :-1][batch["pred"]])
    ref = F.cross_entropy(logits.float(), batch["input_ids"][:, 1:][batch["pred"]], reduction="sum")
    ref.backward()
    model.model.embed_tokens.weight.requires_grad_(False)
    assert n == int(batch["pred"].sum()) == 8 + 7 and loss.dtype == torch.float32
    tol = 1e-6 if dtype == torch.float32 else 2 ** -7
    assert relative(ours[0], ref.detach()) < tol
    assert relative(ours[1], model.model.embed_tokens.weight.grad) < (1e-5 if dtype == torch.float32 else 2 ** -7)
