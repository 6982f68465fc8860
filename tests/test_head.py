"""The LM head's contiguous input (fastpath/head.py): the same logits, and the same greedy answers."""

from __future__ import annotations

import pytest
import torch

from lorarank import fastpath
from lorarank.fastpath import head


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_hooked_head_gets_strided_input_contiguous_with_the_same_logits(tiny_base, dtype):
    model, _ = tiny_base
    lm_head = model.get_output_embeddings()
    weight = lm_head.weight.detach().to(dtype)
    hidden = torch.randn(3, 5, weight.shape[1], generator=torch.Generator().manual_seed(0)).to(dtype)
    last = hidden[:, -1:, :]  # generation's view: strided
    assert not last.is_contiguous()
    (passed,) = head.contiguous_input(lm_head, (last,))
    assert passed.is_contiguous() and torch.equal(passed, last)
    assert head.contiguous_input(lm_head, (passed,)) is None  # a contiguous input passes untouched
    expected = torch.nn.functional.linear(last.contiguous(), weight)
    # the strided input may take another kernel, whose additions in another order round differently:
    # to fp32's 1e-5 in fp32, to one unit of the dtype's last place in bf16 (bit for bit on some CPUs)
    tol = max(1e-5, torch.finfo(dtype).eps)
    assert torch.allclose(torch.nn.functional.linear(last, weight), expected, rtol=tol, atol=tol)


def test_greedy_answers_are_the_same_with_and_without_the_hook(tiny_base):
    from lorarank.evaluate import generate_answers

    model, tok = tiny_base
    prompts = [tok.encode("2 + 2 ="), tok.encode("the capital of France is a long prompt")]
    answers = {}
    try:
        for on in (False, True):
            head.use(model, on)
            assert fastpath.contiguous_head(model) == on
            answers[on] = generate_answers(model, tok, prompts, max_new_tokens=6, batch_size=2, device=torch.device("cpu"))
    finally:
        fastpath.enable(model)
    assert answers[True] == answers[False] and all(isinstance(a, str) for a in answers[True])
