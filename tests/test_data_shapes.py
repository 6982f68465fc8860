"""Record shapes: detection, data.format, a separate eval set, and a one-line error for every bad shape."""

from __future__ import annotations

import copy

import pytest

from conftest import write_records
from lorarank.config import DataConfig, load_config
from lorarank.data.format import chat_pieces, prepare
from lorarank.data.records import load_eval, load_train
from lorarank.data.shapes import ACCEPTED, REQUIRED, detect
from lorarank.errors import UserError

CHAT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}


def turn(role: str, content) -> dict:
    return {"role": role, "content": content}


@pytest.mark.parametrize("record, fmt", [
    (CHAT, "conversational"),
    ({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}, "sharegpt"),
    ({"prompt": "2+2=", "completion": "4"}, "prompt-completion"),
    ({"instruction": "Add", "input": "", "output": "5"}, "alpaca"),
    ({"text": "Hello"}, "text"),
    # extra columns: the most structured shape wins (tatsu-lab/alpaca, ultrachat_200k)
    ({"instruction": "Add", "input": "", "output": "5", "text": "### Instruction: Add ..."}, "alpaca"),
    ({**CHAT, "prompt": "Hi", "prompt_id": "ab12"}, "conversational"),
    ({"input": "x"}, None),
])
def test_detection_by_keys(record, fmt):
    assert detect(record) == fmt


def test_config_format_names_are_the_shapes():
    assert load_config(overrides={"data.format": "sharegpt"}).data.format == "sharegpt"
    with pytest.raises(UserError, match="data.format 'chatml' is unknown: use auto or one of " + ", ".join(REQUIRED)):
        load_config(overrides={"data.format": "chatml"})


def test_data_format_forces_a_shape(tmp_path):
    rows = [{"prompt": f"p{i}", "completion": f"c{i}", "text": f"p{i} c{i}"} for i in range(4)]
    path = write_records(tmp_path / "d.jsonl", rows, jsonl=True)
    assert load_train(DataConfig(dataset=str(path))).format == "prompt-completion"
    forced = load_train(DataConfig(dataset=str(path), format="text"))
    assert forced.format == "text" and forced.records[0]["text"] == "p0 c0"


BAD = {  # name: (records, pattern the one-line error must match)
    "neither format": ([{"question": "Hi", "answer": "Hello"}],
                       r"record 0 matches no record shape \(found keys: question, answer\); accepted record shapes"),
    "half a shape": ([{"instruction": "Add"}], "record 0 has no 'output' field, which the alpaca shape needs"),
    "mixed formats": ([CHAT, CHAT, {"text": "Hi"}],
                      r"record 2 is text but \S+ record 0 is conversational: a dataset holds one format"),
    "forced format mismatch": ([CHAT, {"text": "Hi"}], r"record 1 is text but data.format=conversational"),
    "empty messages": ([{"messages": []}], "record 0 has an empty 'messages' list: give at least one user"),
    "messages not a list": ([{"messages": "Hi"}], "record 0 field 'messages' is a str, not a list of turns"),
    "turn not an object": ([{"messages": ["Hi"]}], r"record 0 messages\[0\] is not an object with 'role' and 'content'"),
    "unknown role": ([{"messages": [turn("user", "Hi"), turn("bot", "Hello")]}],
                     r"record 0 messages\[1\] has the unknown role 'bot': use one of system, user, assistant"),
    "unknown sharegpt role": ([{"conversations": [{"from": "human", "value": "Hi"}, {"from": "tool", "value": "{}"}]}],
                              r"conversations\[1\] has the unknown from 'tool': use one of system, human, user, gpt"),
    "no assistant turn": ([{"messages": [turn("system", "Be brief."), turn("user", "Hi")]}],
                          "record 0 has no assistant turn in 'messages'"),
    "assistant first": ([{"conversations": [{"from": "gpt", "value": "Hi"}, {"from": "human", "value": "Hello"},
                                            {"from": "gpt", "value": "Bye"}]}],
                        "record 0 starts with an assistant turn in 'conversations': start each conversation with a user"),
    "content not a string": ([CHAT, {"messages": [turn("user", [{"type": "text", "text": "Hi"}]), turn("assistant", "x")]}],
                             r"record 1 messages\[0\] content is a list, not a string"),
    "content null": ([{"messages": [turn("user", "Hi"), turn("assistant", None)]}],
                     r"messages\[1\] content is a NoneType, not a string"),
    "prompt string, completion list": ([{"prompt": "Hi", "completion": [turn("assistant", "Hello")]}],
                                       "record 0 has a str prompt and a list completion: give both as strings or both"),
    "user turn in completion": ([{"prompt": [turn("user", "Hi")], "completion": [turn("user", "Hello")]}],
                                r"completion\[0\] has role 'user': a completion holds assistant turns only"),
    "mixed prompt-completion forms": ([{"prompt": "a", "completion": "b"},
                                       {"prompt": [turn("user", "a")], "completion": [turn("assistant", "b")]}],
                                      "record 1 gives prompt and completion as message lists but .* as strings"),
    "text not a string": ([{"text": ["Hi"]}], "record 0 field 'text' is a list, not a string"),
    "record not an object": ([["Hi", "Hello"]], "record 0 is a list, not an object: accepted record shapes"),
    "empty text": ([{"text": ""}, {"text": "  "}], "has 0 usable record.*blank text"),
    "blank answers": ([{"messages": [turn("user", "Hi"), turn("assistant", " ")]}] * 3, "has 0 usable record"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_shape_is_one_line_naming_the_record(case, tmp_path):
    records, pattern = BAD[case]
    path = write_records(tmp_path / "bad.jsonl", records, jsonl=True)
    fmt = "conversational" if case == "forced format mismatch" else "auto"
    with pytest.raises(UserError, match=pattern) as info:
        load_train(DataConfig(dataset=str(path), format=fmt))
    assert "\n" not in str(info.value)


def test_shape_errors_list_the_accepted_shapes():
    for key in ("messages", "conversations", "prompt", "completion", "instruction", "output", "text"):
        assert f'"{key}"' in ACCEPTED


def test_blank_records_are_dropped_not_fatal(tmp_path):
    rows = [CHAT, {"messages": [turn("user", "Hi"), turn("assistant", "")]}, CHAT]
    path = write_records(tmp_path / "d.jsonl", rows, jsonl=True)
    assert len(load_train(DataConfig(dataset=str(path))).records) == 2


def test_eval_dataset_replaces_the_held_out_split(tiny_base, tmp_path):
    _, tok = tiny_base
    train = write_records(tmp_path / "train.jsonl", [CHAT] * 6, jsonl=True)
    evals = write_records(tmp_path / "eval.json", [CHAT] * 3)
    data = prepare(DataConfig(dataset=str(train), eval_dataset=str(evals)), tok)
    assert (len(data.train), len(data.eval)) == (6, 3)  # nothing carved out of the training file
    assert (data.eval_source, data.record_format, data.trained_on) == (str(evals), "conversational",
                                                                        "every assistant turn")
    held_out = prepare(DataConfig(dataset=str(train)), tok)
    assert (len(held_out.train), len(held_out.eval)) == (5, 1)
    assert held_out.eval_source == f"held out from {train}: 1 of 6 records (data.eval_fraction=0.1, split_seed 42)"


def test_eval_dataset_of_another_format_is_refused(tiny_base, tmp_path):
    _, tok = tiny_base
    train = write_records(tmp_path / "train.jsonl", [CHAT] * 4, jsonl=True)
    evals = write_records(tmp_path / "eval.jsonl", [{"text": "Hi"}] * 2, jsonl=True)
    with pytest.raises(UserError, match=r"eval.jsonl holds text records but .*train.jsonl holds conversational"):
        prepare(DataConfig(dataset=str(train), eval_dataset=str(evals)), tok)


def test_exact_match_scores_user_data_as_one_family(tiny_base, tmp_path):
    _, tok = tiny_base
    rows = [{"prompt": f"{i}+1=", "completion": str(i + 1)} for i in range(10)]
    path = write_records(tmp_path / "d.json", rows)
    assert not prepare(DataConfig(dataset=str(path)), tok).verifiable
    data = prepare(DataConfig(dataset=str(path), exact_match=True), tok)
    assert data.verifiable and data.families == ["all"]
    assert {e.reference for e in data.eval} <= {str(i + 1) for i in range(10)}
    text = write_records(tmp_path / "t.json", [{"text": "a b"}] * 3)
    with pytest.raises(UserError, match="data.exact_match needs a reference answer, and the text records"):
        load_train(DataConfig(dataset=str(text), exact_match=True))
    with pytest.raises(UserError, match="data.exact_match needs reference answers"):
        load_config(overrides={"data.exact_match": True, "data.format": "text"})


def test_conversations_need_a_chat_template(tiny_base, tmp_path):
    _, tok = tiny_base
    path = write_records(tmp_path / "d.jsonl", [CHAT] * 4, jsonl=True)
    with pytest.raises(UserError, match="conversations are rendered with the tokenizer's chat template, but "
                                        "data.prompt_format=alpaca"):
        prepare(DataConfig(dataset=str(path), prompt_format="alpaca"), tok)
    bare = copy.copy(tok)
    bare.chat_template = None
    with pytest.raises(UserError, match="but this tokenizer has no chat template"):
        prepare(DataConfig(dataset=str(path)), bare)


def test_template_that_rejects_or_rewrites_turns_is_named(tiny_base):
    """Templates may raise on a turn order, or drop earlier answers (reasoning models strip past
    thinking): both leave the trained tokens unlocatable and get a one-line error."""
    _, tok = tiny_base
    strict = copy.copy(tok)
    strict.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' and not loop.first %}"
                            "{{ raise_exception('system turn must come first') }}{% endif %}{{ m['content'] }}|"
                            "{% endfor %}")
    turns = [turn("user", "Hi"), turn("system", "late"), turn("assistant", "Hello")]
    with pytest.raises(UserError, match=r"^record 3: the chat template rejects this conversation \(system turn must"):
        chat_pieces(turns, [2], strict, "record 3")
    forgetful = copy.copy(tok)  # renders only the last assistant answer, as templates that strip history do
    forgetful.chat_template = ("{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}"
                               "{{ m['content'] }}|{% endif %}{% endfor %}")
    chat = [turn("user", "a"), turn("assistant", "b"), turn("user", "c"), turn("assistant", "d")]
    with pytest.raises(UserError, match="renders turn 1 differently once later turns follow"):
        chat_pieces(chat, [1, 3], forgetful, "record 0")
    assert chat_pieces(chat, [1, 3], tok) == [
        ("<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n", False), ("b<|im_end|>\n", True),
        ("<|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n", False), ("d<|im_end|>\n", True), ("", False)]


def test_hub_ids_offline_are_one_line(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine without network: fail fast, no retries
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match=r"^cannot load dataset 'no-such-org/chats' \(split train\) from the "
                                        r"Hugging Face hub .*check the id, the split and your network") as info:
        load_train(DataConfig(dataset="no-such-org/chats"))
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match=r"cannot load dataset 'no-such-org/chats' \(split test\[:50\]\)"):
        load_eval(DataConfig(dataset="x.jsonl", eval_dataset="no-such-org/chats", eval_split="test[:50]"))
