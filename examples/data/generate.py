"""Write the example data files of docs/concepts/data-formats.md, one per accepted record shape.

Every file is built from the embedded instruct-suite (deterministic, verifiable answers), so the same
tasks appear in each shape and the files are reproducible:
    python examples/data/generate.py            # rewrites examples/data/*.json[l]

chat.jsonl                     conversational: a system message and three user/assistant turns
chat_eval.jsonl                a separate eval set for chat.jsonl (data.eval_dataset), unseen tasks
sharegpt.json                  ShareGPT-style: {"conversations": [{"from", "value"}]}, two turns
prompt_completion.json         prompt-completion as strings (no chat template: the text as given)
prompt_completion_messages.json  prompt-completion as message lists (system + user -> assistant)
text.jsonl                     text: three solved tasks as plain prose (language modelling)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "src"))

from lorarank.data import suite  # noqa: E402

SYSTEMS = ["Answer exactly.", "You are a precise assistant. Reply with the answer only.",
           "Reply with the answer and nothing else."]
N_RECORDS = 200  # per training file: 180 train / 20 eval at data.eval_fraction=0.1
N_EVAL = 40  # chat_eval.jsonl


def tasks(n: int, seed: int = 42, skip: set[str] = frozenset()) -> list[dict]:
    """n suite records whose instructions are not in `skip` (an eval set never repeats a training task)."""
    pool = suite.generate(n + len(skip), seed=seed)
    return [r for r in pool if r["instruction"] not in skip][:n]


def turns(records: list[dict]) -> list[dict]:
    return [m for r in records for m in ({"role": "user", "content": r["instruction"]},
                                         {"role": "assistant", "content": r["output"]})]


def chats(records: list[dict], per_chat: int) -> list[dict]:
    out = []
    for i in range(0, len(records) - per_chat + 1, per_chat):
        system = {"role": "system", "content": SYSTEMS[(i // per_chat) % len(SYSTEMS)]}
        out.append({"messages": [system] + turns(records[i:i + per_chat])})
    return out


def sharegpt(chat: dict) -> dict:
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    return {"conversations": [{"from": names[m["role"]], "value": m["content"]} for m in chat["messages"]]}


def text(records: list[dict]) -> dict:
    return {"text": "\n".join(f"Q: {r['instruction']}\nA: {r['output']}" for r in records)}


def build() -> dict[str, list[dict]]:
    train = tasks(3 * N_RECORDS)
    evals = tasks(3 * N_EVAL, seed=7, skip={r["instruction"] for r in train})
    single = train[:N_RECORDS]
    return {
        "chat.jsonl": chats(train, 3),
        "chat_eval.jsonl": chats(evals, 3)[:N_EVAL],
        "sharegpt.json": [sharegpt(c) for c in chats(train[:2 * N_RECORDS], 2)],
        "prompt_completion.json": [{"prompt": f"Instruction: {r['instruction']}\nAnswer:", "completion": f" {r['output']}"}
                                   for r in single],
        "prompt_completion_messages.json": [
            {"prompt": [{"role": "system", "content": SYSTEMS[0]}, {"role": "user", "content": r["instruction"]}],
             "completion": [{"role": "assistant", "content": r["output"]}]} for r in single],
        "text.jsonl": [text(train[i:i + 3]) for i in range(0, 3 * N_RECORDS, 3)],
    }


def dump(name: str, records: list[dict]) -> str:
    lines = [json.dumps(r) for r in records]
    return "".join(line + "\n" for line in lines) if name.endswith(".jsonl") else "[\n" + ",\n".join(lines) + "\n]\n"


if __name__ == "__main__":
    for name, records in build().items():
        (HERE / name).write_text(dump(name, records))
        print(f"{name}: {len(records)} records")
