"""Data: record checks, deterministic split, chat/Alpaca formatting, prompt tokens masked from the loss.

Token-level masks of every record shape on SmolLM2's template: tests/test_data_formats.py."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_CONFIG, write_records
from lorarank.config import DataConfig, load_config
from lorarank.data.format import Example, alpaca_chat, chat_pieces, encode, prepare
from lorarank.data.records import load_records, split_records
from lorarank.errors import UserError
from lorarank.train import collate, collate_packed, completion_loss

RECS = [{"instruction": f"Say {i}", "input": "", "output": f"number {i}"} for i in range(20)]


def test_chat_prompt_is_masked_and_completion_kept(tiny_base):
    _, tok = tiny_base
    rec = {"instruction": "Add", "input": "2 and 3", "output": "5"}
    chat = alpaca_chat(rec)
    (prompt, _), (completion, trained), (tail, _) = chat_pieces(chat["messages"], chat["trained"], tok)
    assert trained and tail == ""
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "Add\n\nInput: 2 and 3" in prompt  # the original's user message
    assert completion == "5<|im_end|>\n"
    ex = encode(rec, tok, "chat")
    assert tok.decode(ex.input_ids[ex.prompt_len:]) == completion
    assert tok.decode(ex.input_ids[:ex.prompt_len]) == prompt


def test_alpaca_format_appends_eos(tiny_base):
    _, tok = tiny_base
    rec = {"instruction": "Add", "input": "", "output": "5"}
    ex = encode(rec, tok, "alpaca")
    prompt = tok.decode(ex.input_ids[:ex.prompt_len])
    assert prompt.endswith("### Response:\n") and "### Input" not in prompt
    assert ex.input_ids[-1] == tok.eos_token_id
    assert ex.n_completion == 2  # "5" + EOS (one byte-level token each)


def test_pred_mask_selects_exactly_the_completion_targets():
    a = Example([10, 11, 12, 13, 14], prompt_len=3, reference="")
    b = Example([20, 21, 22], prompt_len=1, reference="")
    batch = collate([a, b], pad_id=0, device=torch.device("cpu"))
    ids, pred = batch["input_ids"], batch["pred"]
    targets = ids[:, 1:][pred].tolist()
    assert targets == [13, 14, 21, 22]  # completions only, never the prompt or the padding
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]


def test_trained_spans_select_their_targets_packed_and_padded(tiny_base):
    """Two trained spans (two assistant turns): the loss is on exactly their tokens, whether the
    batch is packed into one row or padded, and equals the cross-entropy summed by hand."""
    model, _ = tiny_base
    multi = Example(list(range(30, 42)), prompt_len=9, reference="", trained=((3, 5), (9, 12)))
    plain = Example([50, 51, 52, 53], prompt_len=1, reference="")  # as built for plain-text loss
    assert multi.loss_mask == [False] * 3 + [True] * 2 + [False] * 4 + [True] * 3
    assert (multi.n_completion, plain.n_completion, plain.trained) == (5, 3, ((1, 4),))
    cpu = torch.device("cpu")
    packed, padded = collate_packed([multi, plain], cpu), collate([multi, plain], pad_id=0, device=cpu)
    assert packed["input_ids"][:, 1:][packed["pred"]].tolist() == [33, 34, 39, 40, 41, 51, 52, 53]
    assert padded["input_ids"][:, 1:][padded["pred"]].tolist() == [33, 34, 39, 40, 41, 51, 52, 53]
    with torch.no_grad():
        loss_packed, n = completion_loss(model, packed)
        loss_padded, _ = completion_loss(model, padded)
        logits = model(torch.tensor([multi.input_ids])).logits[0]
        loss_plain, _ = completion_loss(model, collate([plain], pad_id=0, device=cpu))
    by_hand = torch.nn.functional.cross_entropy(logits[[2, 3, 8, 9, 10]], torch.tensor([33, 34, 39, 40, 41]),
                                                reduction="sum")
    assert n == 8
    assert torch.allclose(loss_packed, loss_padded, atol=1e-4)
    assert torch.allclose(loss_packed, by_hand + loss_plain, atol=1e-4)


def test_tiny_config_token_ids_are_unchanged(tiny_base):
    """Fingerprint recorded from the code before trained spans existed (SmolLM2's: test_data_formats.py)."""
    _, tok = tiny_base
    assert prepare(load_config(TINY_CONFIG).data, tok).fingerprint == "777441e1ffa3"


def test_prompt_tokens_do_not_change_the_loss_gradient_target(tiny_base):
    """Changing only prompt-token labels cannot change the loss: the loss is a function of
    completion targets, and the count equals the completion length."""
    model, _ = tiny_base
    ex = Example(list(range(5, 25)), prompt_len=12, reference="")
    batch = collate([ex], pad_id=0, device=torch.device("cpu"))
    with torch.no_grad():
        loss, n = completion_loss(model, batch)
        logits = model(batch["input_ids"]).logits[0]
    assert n == 8
    manual = torch.nn.functional.cross_entropy(logits[11:19], torch.tensor(ex.input_ids[12:20]), reduction="sum")
    assert torch.allclose(loss, manual, atol=1e-4)


def test_split_is_deterministic_and_disjoint():
    t1, e1 = split_records(RECS, 0.2, seed=1)
    t2, e2 = split_records(RECS, 0.2, seed=1)
    t3, e3 = split_records(RECS, 0.2, seed=2)
    assert (t1, e1) == (t2, e2)
    assert e1 != e3
    assert len(e1) == 4 and len(t1) == 16
    assert not {r["instruction"] for r in t1} & {r["instruction"] for r in e1}


def test_load_json_and_jsonl(tmp_path):
    for jsonl in (False, True):
        path = write_records(tmp_path / ("d.jsonl" if jsonl else "d.json"), RECS, jsonl)
        recs = load_records(DataConfig(dataset=str(path), num_examples=5))
        assert len(recs) == 5 and recs[0]["output"] == "number 0"


def test_too_long_examples_are_dropped_and_counted(tiny_base, tmp_path):
    _, tok = tiny_base
    recs = RECS + [{"instruction": "x" * 400, "input": "", "output": "y"}]
    path = write_records(tmp_path / "d.json", recs)
    data = prepare(DataConfig(dataset=str(path), max_length=120), tok)
    assert data.dropped_too_long == 1
    assert len(data.train) + len(data.eval) == 20
    with pytest.raises(UserError, match=r"longer than data.max_length=10 tokens.*raise data.max_length"):
        prepare(DataConfig(dataset=str(path), max_length=10), tok)


@pytest.mark.parametrize("content, match", [
    ("[1, 2]", "record 0 is a int, not an object"),
    ('[{"instruction": "a"}]', "has no 'output' field"),
    ('[{"instruction": "a", "output": 5}]', "field 'output' is a int, not a string"),
    ('{"instruction": "a"}', "must hold a JSON list of records"),
    ("not json", "is not valid JSON"),
    ('[{"instruction": " ", "output": "x"}, {"instruction": "a", "output": ""}]', "0 usable record"),
])
def test_bad_records(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError, match=match):
        load_records(DataConfig(dataset=str(path)))


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(UserError, match="data file not found"):
        load_records(DataConfig(dataset=str(tmp_path / "nope.json")))
    with pytest.raises(UserError, match="not found: give a .json/.jsonl file"):
        load_records(DataConfig(dataset="alpaca"))
