"""The record shapes lorarank reads: how each is recognised, checked and normalised.

| format            | record                                                             | trained on            |
|-------------------|--------------------------------------------------------------------|-----------------------|
| conversational    | {"messages": [{"role": "system"/"user"/"assistant", "content"}]}   | every assistant turn  |
| sharegpt          | {"conversations": [{"from": "system"/"human"/"gpt", "value"}]}     | every gpt turn        |
| prompt-completion | {"prompt", "completion"}: two strings, or two lists of messages    | the completion        |
| alpaca            | {"instruction", "input" (optional), "output"}                      | the output            |
| text              | {"text"}                                                           | every token           |

These are the shapes TRL's SFTTrainer defines, plus ShareGPT (Axolotl, LLaMA-Factory) and Alpaca.
A dataset holds one format: `data.format`, or else the shape of its first record. Shapes are tried
in the table's order, so a record with extra columns reads as the most structured shape it holds
(tatsu-lab/alpaca has a pre-rendered `text` next to its Alpaca fields; ultrachat a `prompt` string
next to its `messages`). Every record is checked here, before any tokenizer or output directory is
touched, and the first bad one is named in a one-line error listing the accepted shapes.

Each record is normalised to one of the forms format.py renders:
    chat:   {"messages": [{"role", "content"}, ...], "trained": [indices of trained turns]}
    plain:  {"prompt": str, "completion": str}          (prompt-completion as strings)
    text:   {"text": str}
    alpaca: {"instruction", "input", "output"}           (rendered by data.prompt_format)
plus "family" when the record has one and "where" (the record's name, for errors found later).
"""

from __future__ import annotations

from typing import Any, NoReturn

from lorarank.errors import UserError

Record = dict[str, Any]

# format -> the keys that identify it, in detection order
REQUIRED = {
    "conversational": ("messages",),
    "sharegpt": ("conversations",),
    "prompt-completion": ("prompt", "completion"),
    "alpaca": ("instruction", "output"),
    "text": ("text",),
}
TRAINED_ON = {
    "conversational": "every assistant turn",
    "sharegpt": "every assistant (gpt) turn",
    "prompt-completion": "the completion",
    "alpaca": "the response (output)",
    "text": "every token (language modelling)",
}
ACCEPTED = ('accepted record shapes: {"messages": [{"role", "content"}, ...]}, '
            '{"conversations": [{"from", "value"}, ...]}, {"prompt", "completion"}, '
            '{"instruction", "input" (optional), "output"} or {"text"}')
CHAT_ROLES = {"system": "system", "user": "user", "assistant": "assistant"}
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


def detect(rec: Record) -> str | None:
    """The first format whose keys the record holds, or None."""
    return next((fmt for fmt, keys in REQUIRED.items() if all(k in rec for k in keys)), None)


def check_all(raw: list[Any], source: str, requested: str = "auto") -> tuple[str, list[Record]]:
    """(format, normalised records) of a whole dataset; raises on the first bad record."""
    fmt = requested
    forced = f"data.format={requested}" if requested != "auto" else ""
    out = []
    for i, rec in enumerate(raw):
        where = f"{source} record {i}"
        if not isinstance(rec, dict):
            raise UserError(f"{where} is a {type(rec).__name__}, not an object: {ACCEPTED}")
        if fmt == "auto":
            fmt = detect(rec) or _no_shape(rec, where)
        _check_shape(rec, fmt, where, forced or f"{source} record 0 is {fmt}")
        out.append(normalise(rec, fmt, where))
        if kind(out[-1]) != kind(out[0]):  # only prompt-completion has two forms
            forms = {"chat": "message lists", "plain": "strings"}
            raise UserError(f"{where} gives prompt and completion as {forms[kind(out[-1])]} but {source} record 0 as "
                            f"{forms[kind(out[0])]}: give every record in one form")
    return fmt, out


def _check_shape(rec: Record, fmt: str, where: str, origin: str) -> None:
    if all(k in rec for k in REQUIRED[fmt]):
        return
    own = detect(rec)
    if own is not None:
        raise UserError(f"{where} is {own} but {origin}: a dataset holds one format; convert its records to one "
                        "shape, or split them into two datasets")
    _missing(rec, fmt, where)


def _no_shape(rec: Record, where: str) -> NoReturn:
    """Name the missing key of the shape the record half-holds (Alpaca without `output`), else none."""
    near = next((fmt for fmt, keys in REQUIRED.items() if any(k in rec for k in keys)), None)
    if near is not None:
        _missing(rec, near, where)
    raise UserError(f"{where} matches no record shape (found keys: {', '.join(map(str, rec)) or 'none'}); {ACCEPTED}")


def _missing(rec: Record, fmt: str, where: str) -> NoReturn:
    missing = [k for k in REQUIRED[fmt] if k not in rec]
    raise UserError(f"{where} has no {' or '.join(map(repr, missing))} field, which the {fmt} shape needs "
                    f"(found keys: {', '.join(map(str, rec)) or 'none'}); {ACCEPTED}")


def normalise(rec: Record, fmt: str, where: str) -> Record:
    out = _NORMALISE[fmt](rec, where)
    if "family" in rec:
        out["family"] = str(rec["family"])
    out["where"] = where
    return out


def kind(rec: Record) -> str:
    """How a normalised record is rendered: `chat` (a template), `plain` (strings as given), `text`
    or `alpaca` (data.prompt_format decides)."""
    return "chat" if "messages" in rec else "plain" if "completion" in rec else "text" if "text" in rec else "alpaca"


def reference(rec: Record) -> str:
    """The answer exact-match scoring compares with: the last trained turn, the completion or the
    output; text records have none."""
    if "messages" in rec:
        return rec["messages"][rec["trained"][-1]]["content"]
    return rec.get("completion", rec.get("output", ""))


def _alpaca(rec: Record, where: str) -> Record:
    out: Record = {}
    for key in ("instruction", "input", "output"):
        value = rec.get(key, "")
        if value is None and key == "input":
            value = ""
        if not isinstance(value, str):
            raise UserError(f"{where} field '{key}' is a {type(value).__name__}, not a string: convert it to text")
        out[key] = value
    return out


def _turns(value: Any, where: str, field: str, role_key: str, content_key: str, roles: dict[str, str]) -> list[Record]:
    """[{"role", "content"}] from a list of turns, every turn checked."""
    if not isinstance(value, list):
        raise UserError(f"{where} field '{field}' is a {type(value).__name__}, not a list of turns: {ACCEPTED}")
    if not value:
        raise UserError(f"{where} has an empty '{field}' list: give at least one user and one assistant turn")
    turns = []
    for k, turn in enumerate(value):
        if not (isinstance(turn, dict) and role_key in turn and content_key in turn):
            raise UserError(f"{where} {field}[{k}] is not an object with '{role_key}' and '{content_key}': "
                            f'write each turn as {{"{role_key}": ..., "{content_key}": ...}}')
        role = roles.get(turn[role_key]) if isinstance(turn[role_key], str) else None
        if role is None:
            raise UserError(f"{where} {field}[{k}] has the unknown {role_key} {turn[role_key]!r}: use one of "
                            f"{', '.join(roles)} (tool turns are not supported)")
        content = turn[content_key]
        if not isinstance(content, str):
            raise UserError(f"{where} {field}[{k}] {content_key} is a {type(content).__name__}, not a string: "
                            "give the turn's text as one string (content parts are not supported)")
        turns.append({"role": role, "content": content})
    return turns


def _chat(turns: list[Record], trained: list[int], where: str, field: str) -> Record:
    if not trained:
        raise UserError(f"{where} has no assistant turn in '{field}': the loss is on assistant turns, so every "
                        "conversation needs at least one")
    if trained[0] == 0:  # nothing to condition the first answer on, and templates cannot render an empty prefix
        raise UserError(f"{where} starts with an assistant turn in '{field}': start each conversation with a user "
                        "(or system) turn")
    return {"messages": turns, "trained": trained}


def _assistant_turns(turns: list[Record]) -> list[int]:
    return [i for i, t in enumerate(turns) if t["role"] == "assistant"]


def _conversational(rec: Record, where: str) -> Record:
    turns = _turns(rec["messages"], where, "messages", "role", "content", CHAT_ROLES)
    return _chat(turns, _assistant_turns(turns), where, "messages")


def _sharegpt(rec: Record, where: str) -> Record:
    turns = _turns(rec["conversations"], where, "conversations", "from", "value", SHAREGPT_ROLES)
    return _chat(turns, _assistant_turns(turns), where, "conversations")


def _prompt_completion(rec: Record, where: str) -> Record:
    prompt, completion = rec["prompt"], rec["completion"]
    if isinstance(prompt, str) and isinstance(completion, str):
        return {"prompt": prompt, "completion": completion}
    if not (isinstance(prompt, list) and isinstance(completion, list)):
        raise UserError(f"{where} has a {type(prompt).__name__} prompt and a {type(completion).__name__} completion: "
                        "give both as strings or both as lists of messages")
    head = _turns(prompt, where, "prompt", "role", "content", CHAT_ROLES)
    tail = _turns(completion, where, "completion", "role", "content", CHAT_ROLES)
    bad = next((k for k, t in enumerate(tail) if t["role"] != "assistant"), None)
    if bad is not None:
        raise UserError(f"{where} completion[{bad}] has role {tail[bad]['role']!r}: a completion holds assistant "
                        "turns only; move the other turns into 'prompt'")
    return _chat(head + tail, list(range(len(head), len(head) + len(tail))), where, "completion")


def _text(rec: Record, where: str) -> Record:
    if not isinstance(rec["text"], str):
        raise UserError(f"{where} field 'text' is a {type(rec['text']).__name__}, not a string: convert it to text")
    return {"text": rec["text"]}


_NORMALISE = {"conversational": _conversational, "sharegpt": _sharegpt, "prompt-completion": _prompt_completion,
              "alpaca": _alpaca, "text": _text}


def usable(rec: Record) -> bool:
    """Does the record teach anything? Alpaca records need an instruction and an output; the others
    some non-blank text to train on (a blank answer would only teach the end-of-turn token)."""
    if "instruction" in rec:
        return bool(rec["instruction"].strip() and rec["output"].strip())
    if "messages" in rec:
        return any(rec["messages"][i]["content"].strip() for i in rec["trained"])
    return bool(rec["text" if "text" in rec else "completion"].strip())
