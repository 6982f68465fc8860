"""What the loss is on, token by token, for every record shape, on SmolLM2's real chat template.

Each test decodes every token and pairs it with its loss-mask bit (1 = trained). The rule: only
assistant tokens and the template's end of turn (`<|im_end|>` and the newline SmolLM2 writes after
it) are trained; prompts, system and user turns, and role headers never are.
Also here: the Alpaca path of the default config gives the token ids it gave before trained spans
existed (hashes recorded from that code)."""

from __future__ import annotations

import hashlib
import json

import pytest

from lorarank.config import DataConfig, ModelConfig, load_config
from lorarank.data.format import encode, prepare
from lorarank.data.shapes import check_all

pytest.importorskip("gguf")

SYSTEM = {"role": "system", "content": "Be brief."}
THREE_TURNS = [SYSTEM, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
               {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
               {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Bye!"}]
HEAD = [("<|im_start|>", 0), ("system", 0), ("\n", 0), ("Be", 0), (" brief", 0), (".", 0), ("<|im_end|>", 0), ("\n", 0)]
USER_HI = [("<|im_start|>", 0), ("user", 0), ("\n", 0), ("Hi", 0), ("<|im_end|>", 0), ("\n", 0)]
ASSISTANT = [("<|im_start|>", 0), ("ass", 0), ("istant", 0), ("\n", 0)]  # the generation prompt
USER_2_PLUS_2 = [("<|im_start|>", 0), ("user", 0), ("\n", 0), ("2", 0), ("+", 0), ("2", 0), ("?", 0),
                 ("<|im_end|>", 0), ("\n", 0)]


@pytest.fixture(scope="module")
def tok():
    from lorarank.model import load_tokenizer

    return load_tokenizer(ModelConfig(name="smollm2-135m"))


def example(tok, record: dict, fmt: str = "chat", system_prompt: str = ""):
    _, (rec,) = check_all([record], "test")
    return encode(rec, tok, fmt, system_prompt)


def shown(tok, ex) -> list[tuple[str, int]]:
    """Every token decoded, with its loss-mask bit."""
    return [(tok.decode([t]), int(m)) for t, m in zip(ex.input_ids, ex.loss_mask)]


def test_three_turn_chat_with_system_trains_every_assistant_turn_only(tok):
    ex = example(tok, {"messages": THREE_TURNS})
    assert shown(tok, ex) == (
        HEAD + USER_HI + ASSISTANT + [("Hello", 1), ("<|im_end|>", 1), ("\n", 1)]
        + USER_2_PLUS_2 + ASSISTANT + [("4", 1), ("<|im_end|>", 1), ("\n", 1)]
        + [("<|im_start|>", 0), ("user", 0), ("\n", 0), ("By", 0), ("e", 0), ("<|im_end|>", 0), ("\n", 0)]
        + ASSISTANT + [("By", 1), ("e", 1), ("!", 1), ("<|im_end|>", 1), ("\n", 1)])
    assert ex.n_completion == 11
    # accuracy decoding: the prompt is everything before the last assistant answer
    assert tok.decode(ex.input_ids[:ex.prompt_len]).endswith("Bye<|im_end|>\n<|im_start|>assistant\n")
    assert ex.reference == "Bye!"


def test_sharegpt_trains_exactly_what_the_same_conversation_trains(tok):
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    sharegpt = {"conversations": [{"from": names[m["role"]], "value": m["content"]} for m in THREE_TURNS]}
    a, b = example(tok, sharegpt), example(tok, {"messages": THREE_TURNS})
    assert (a.input_ids, a.trained, a.prompt_len) == (b.input_ids, b.trained, b.prompt_len)


def test_chat_without_system_turn_gets_the_template_default_or_data_system_prompt(tok):
    chat = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    default = shown(tok, example(tok, chat))
    assert "".join(t for t, _ in default).startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert [bit for _, bit in default[:-3]] == [0] * (len(default) - 3)
    assert default[-3:] == [("Hello", 1), ("<|im_end|>", 1), ("\n", 1)]
    assert shown(tok, example(tok, chat, system_prompt="Be brief.")) == (
        HEAD + USER_HI + ASSISTANT + [("Hello", 1), ("<|im_end|>", 1), ("\n", 1)])


def test_prompt_completion_strings_train_the_completion_and_eos(tok):
    ex = example(tok, {"prompt": "Sort: 3 1 2\nAnswer:", "completion": " 1 2 3"}, fmt="plain")
    assert shown(tok, ex) == [
        ("Sort", 0), (":", 0), (" ", 0), ("3", 0), (" ", 0), ("1", 0), (" ", 0), ("2", 0), ("\n", 0), ("Answer", 0),
        (":", 0), (" ", 1), ("1", 1), (" ", 1), ("2", 1), (" ", 1), ("3", 1), ("<|im_end|>", 1)]  # EOS = <|im_end|>
    assert ex.reference == " 1 2 3"


def test_prompt_completion_messages_train_the_completion_not_the_prompts_assistant_turn(tok):
    record = {"prompt": THREE_TURNS[:4], "completion": [{"role": "assistant", "content": "4"}]}
    assert shown(tok, example(tok, record)) == (
        HEAD + USER_HI + ASSISTANT + [("Hello", 0), ("<|im_end|>", 0), ("\n", 0)]
        + USER_2_PLUS_2 + ASSISTANT + [("4", 1), ("<|im_end|>", 1), ("\n", 1)])


def test_alpaca_record_is_the_single_turn_chat(tok):
    alpaca = example(tok, {"instruction": "Add", "input": "2 and 3", "output": "5"}, system_prompt="Be brief.")
    assert shown(tok, alpaca) == HEAD + [
        ("<|im_start|>", 0), ("user", 0), ("\n", 0), ("Add", 0), ("\n", 0), ("\n", 0), ("Input", 0), (":", 0),
        (" ", 0), ("2", 0), (" and", 0), (" ", 0), ("3", 0), ("<|im_end|>", 0), ("\n", 0)] + ASSISTANT + [
        ("5", 1), ("<|im_end|>", 1), ("\n", 1)]
    chat = example(tok, {"messages": [{"role": "user", "content": "Add\n\nInput: 2 and 3"},
                                      {"role": "assistant", "content": "5"}]}, system_prompt="Be brief.")
    assert (chat.input_ids, chat.trained) == (alpaca.input_ids, alpaca.trained)


def test_text_trains_every_token_after_the_first(tok):
    ex = example(tok, {"text": "Q: Hi\nA: Hello"}, fmt="plain")
    assert shown(tok, ex) == [("Q", 0), (":", 1), (" Hi", 1), ("\n", 1), ("A", 1), (":", 1), (" Hello", 1),
                              ("<|im_end|>", 1)]  # nothing precedes "Q" (no BOS), so nothing predicts it
    assert ex.reference == ""


def test_default_config_token_ids_are_unchanged(tok):
    """Hashes recorded from the code before trained spans existed: the default sweep's 480
    instruct-suite examples (the data fingerprint is part of baseline keys)."""
    data = prepare(load_config("cpu-default").data, tok)
    assert data.fingerprint == "9ac7566c1763"
    assert _ids_hash(data) == "12a66c2e5f0640a92c975c79b568cb8e2724507300e7c5ef4ff6623eb24cc5a2"
    assert all(e.trained == ((e.prompt_len, len(e.input_ids)),) for e in data.train + data.eval)


@pytest.mark.parametrize("prompt_format, fingerprint, ids_hash", [
    ("chat", "4f21e905721f", "eba209affc3961a65be5e2b998fcdc87c9a85bb5487833d36b7f3c1bc57f5fcf"),
    ("alpaca", "ec216d64f643", "f73fbb223f34dd0c5ba980edea4a0773c5ac9bd9cd25ee4161e76252e6e4d124"),
])
def test_alpaca_file_token_ids_are_unchanged(tok, tmp_path, prompt_format, fingerprint, ids_hash):
    records = [{"instruction": f"Say {i}", "input": f"ctx {i}" if i % 2 else "", "output": f"number {i}"}
               for i in range(30)]
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(records))
    data = prepare(DataConfig(dataset=str(path), prompt_format=prompt_format), tok)
    assert (data.fingerprint, _ids_hash(data)) == (fingerprint, ids_hash)


def _ids_hash(data) -> str:
    blob = json.dumps([[e.input_ids, e.prompt_len] for e in data.train + data.eval])
    return hashlib.sha256(blob.encode()).hexdigest()
