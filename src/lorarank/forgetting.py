"""Forgetting: the loss on general text the fine-tune never saw, for the base model and every trial.

Biderman et al. 2024, "LoRA Learns Less and Forgets Less": fine-tuning degrades what the model knew
before, and higher rank tends to learn more and forget more. We measure it as the increase of the
next-token loss on held-out general text: forgetting = L_general(trial) − L_general(base).

The built-in text is the Python language reference that ships with every CPython (`pydoc_data.topics`,
~465k characters of English prose with code), which no training record of a sweep contains. A user's
own file (.txt, or .jsonl/.json records with a "text" field) replaces it. The text is tokenized once
and cut into `n_windows` windows of `max_tokens` tokens, spread evenly over the whole text and never
overlapping; every token after a window's first is a target, so the existing completion loss
(`train.eval_loss`) computes the mean next-token loss over them. The same windows serve the base model
and every trial, so differences between them are paired token by token.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from lorarank.config import config_hash
from lorarank.data.format import Example
from lorarank.errors import UserError

# 16 x 128 tokens (2,032 targets): a SmolLM2-135M forward pass costs 2·134M FLOPs per token, so about
# 0.55 TFLOP, some 3-4 s at the ~150 GFLOP/s a 2-core CPU sustains. The differences that matter (trial −
# base) are paired per token, so their noise is far below the spread of the loss across tokens.
N_WINDOWS = 16
MAX_TOKENS = 128
TEXT_SUFFIXES = (".txt", ".jsonl", ".json")


@dataclass(frozen=True)
class GeneralText:
    examples: list[Example]  # one per window: prompt = the first token, targets = the rest
    source: str
    fingerprint: str  # hash of the window token ids: equal fingerprints = the same text, tokenized alike

    def describe(self) -> dict:
        """What the records store about the general-text set."""
        return {"source": self.source, "n_windows": len(self.examples),
                "tokens_per_window": len(self.examples[0].input_ids),
                "target_tokens": sum(e.n_completion for e in self.examples), "fingerprint": self.fingerprint}


def builtin_text() -> str:
    """The Python language reference topics, in sorted topic order (the same text on every run of a
    given Python version; the version is part of the recorded source)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def read_text_file(path: str | Path) -> str:
    """The text of a .txt file, or the "text" fields of .jsonl / .json records joined by blank lines."""
    p = Path(path)
    hint = "give a .txt file, or .jsonl/.json records with a \"text\" field"
    if p.suffix not in TEXT_SUFFIXES:
        raise UserError(f"general text file {p}: unknown type {p.suffix or '(none)'}: {hint}")
    try:
        raw = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"general text file {p} cannot be read ({e.__class__.__name__}: {e}): {hint}") from None
    if p.suffix == ".txt":
        return raw
    try:
        records = ([json.loads(line) for line in raw.splitlines() if line.strip()] if p.suffix == ".jsonl"
                   else json.loads(raw))
    except json.JSONDecodeError as e:
        raise UserError(f"general text file {p} is not valid JSON ({e}): {hint}") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) and isinstance(r.get("text"), str)
                                                for r in records):
        raise UserError(f"general text file {p}: every record needs a string \"text\" field: {hint}")
    return "\n\n".join(r["text"] for r in records)


def windows(ids: list[int], n_windows: int, max_tokens: int) -> list[list[int]]:
    """min(n_windows, len(ids) // max_tokens) windows of max_tokens ids, evenly spaced, not overlapping."""
    count = min(n_windows, len(ids) // max_tokens)
    stride = len(ids) // count if count else 0
    return [ids[i * stride:i * stride + max_tokens] for i in range(count)]


def load_general_text(tokenizer, path: str | Path | None = None, n_windows: int = N_WINDOWS,
                      max_tokens: int = MAX_TOKENS) -> GeneralText:
    """The held-out general-text windows: the built-in Python reference text, or the user's file."""
    if max_tokens < 2:
        raise UserError(f"general text windows of {max_tokens} tokens have no target: use at least 2")
    text = builtin_text() if path is None else read_text_file(path)
    source = f"pydoc_data.topics (Python {sys.version.split()[0]})" if path is None else str(path)
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    chosen = windows(ids, n_windows, max_tokens)
    if not chosen:
        raise UserError(f"general text {source} has {len(ids)} tokens, fewer than one window of {max_tokens}: "
                        f"give a longer text")
    return GeneralText([Example(w, prompt_len=1, reference="") for w in chosen], source, config_hash(chosen))


def general_loss(model, text: GeneralText, batch_size: int, pad_id: int, device, packed: bool = True) -> float:
    """Mean next-token loss of `model` (base or adapted) on the general-text windows, in nats."""
    from lorarank.train import eval_loss

    return eval_loss(model, text.examples, batch_size, pad_id, device, packed)
