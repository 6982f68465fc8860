"""Read records from a source, check their shape (shapes.py), and split them.

Sources: the embedded `instruct-suite`, a local .json (a list of records) or .jsonl file, or a
Hugging Face dataset id (yahma/alpaca-cleaned, HuggingFaceTB/smoltalk, ...) through `datasets`.
The eval set is either carved out of the training source (`data.eval_fraction`) or read from its
own source (`data.eval_dataset`), which must hold the same format.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorarank.config import DataConfig
from lorarank.data import shapes, suite
from lorarank.env import log, quiet_hub
from lorarank.errors import UserError

Record = shapes.Record


@dataclass
class RecordSet:
    records: list[Record]  # normalised (shapes.py), blank ones dropped, in source order
    format: str  # one of shapes.REQUIRED
    source: str  # instruct-suite, a path, or "hub id:split"

    @property
    def kind(self) -> str:
        """How the records are rendered (shapes.kind); one per set."""
        return shapes.kind(self.records[0])


def load_records(cfg: DataConfig) -> list[Record]:
    """The usable records of `data.dataset`, truncated to `data.num_examples` when set."""
    return load_train(cfg).records


def load_train(cfg: DataConfig) -> RecordSet:
    if cfg.dataset == suite.NAME:
        raw, source = suite.generate(cfg.suite_size, seed=cfg.split_seed), suite.NAME
    else:
        raw, source = _read_source(cfg.dataset, cfg.hf_split, cfg.num_examples)
    # without an eval source, the split needs two records: one to train on, one to hold out
    return _usable(raw, source, cfg, limit=cfg.num_examples, minimum=1 if cfg.eval_dataset else 2)


def load_eval(cfg: DataConfig) -> RecordSet | None:
    """`data.eval_dataset` in full (a hub split may be sliced: eval_split="test[:200]"), or None."""
    if not cfg.eval_dataset:
        return None
    raw, source = _read_source(cfg.eval_dataset, cfg.eval_split, 0)
    return _usable(raw, source, cfg, limit=0, minimum=1)


def load_sets(cfg: DataConfig) -> tuple[RecordSet, RecordSet | None]:
    """(training records, `data.eval_dataset`'s or None), checked to be in one format, so the eval
    loss is on the kind of tokens training optimises."""
    train_set, eval_set = load_train(cfg), load_eval(cfg)
    if eval_set is not None and (eval_set.format, eval_set.kind) != (train_set.format, train_set.kind):
        raise UserError(f"data.eval_dataset {eval_set.source} holds {eval_set.format} records but {train_set.source} "
                        f"holds {train_set.format}: give both in one format, so the eval loss is on the kind of "
                        "tokens training optimises")
    return train_set, eval_set


def _usable(raw: list[Any], source: str, cfg: DataConfig, limit: int, minimum: int) -> RecordSet:
    fmt, records = shapes.check_all(raw, source, cfg.format)
    if cfg.exact_match and fmt == "text":
        raise UserError(f"data.exact_match needs a reference answer, and the text records of {source} have none: "
                        "drop data.exact_match, or give prompt-completion or conversational records")
    kept = [r for r in records if shapes.usable(r)]
    if cfg.exact_match:  # user data without task families is scored as one family
        kept = [{"family": "all", **r} for r in kept]
    if len(kept) < len(records):
        log(f"{source}: dropped {len(records) - len(kept)} record(s) with nothing to train on (blank text)")
    if limit:
        kept = kept[:limit]
    if len(kept) < minimum:
        raise UserError(f"dataset {source} has {len(kept)} usable record(s) after dropping {len(records) - len(kept)} "
                        f"with blank text (an empty instruction, answer or text): give at least {minimum} records "
                        "with text to train on")
    return RecordSet(kept, fmt, source)


def _read_source(name: str, split: str, limit: int) -> tuple[list[Any], str]:
    path = Path(name).expanduser()
    if path.suffix.lower() in (".json", ".jsonl") or path.exists():
        return _read_file(path), str(path)
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return _read_hub(name, split, limit), f"{name}:{split}"
    raise UserError(
        f"dataset '{name}' not found: give a .json/.jsonl file of records (docs/concepts/data-formats.md), "
        f"a Hugging Face id such as yahma/alpaca-cleaned, or {suite.NAME}"
    )


def _read_file(path: Path) -> list[Any]:
    if not path.is_file():
        raise UserError(f"data file not found: {path} (check the path given to --dataset or data.eval_dataset)")
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path} line {n} is not valid JSON ({exc.msg}): fix that line "
                                    "(JSONL needs one JSON object per line)") from None
        return rows
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}): fix the file, "
                        "or use .jsonl for one record per line") from None
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        doc = doc["data"]  # a common wrapper: {"data": [...]}
    if not isinstance(doc, list):
        raise UserError(f"{path} must hold a JSON list of records, got a {type(doc).__name__}: "
                        "wrap the records in [...]")
    return doc


def _read_hub(dataset_id: str, split: str, limit: int) -> list[Any]:
    try:
        from datasets import load_dataset

        sel = f"{split}[:{limit}]" if limit else split
        with quiet_hub():
            return list(load_dataset(dataset_id, split=sel))
    except Exception as exc:  # datasets raises many types for offline / missing / gated
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot load dataset '{dataset_id}' (split {split}) from the Hugging Face hub "
                        f"({first[:160]}): check the id, the split and your network, or pass a local "
                        ".json/.jsonl file") from None


def split_records(records: list[Record], eval_fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Deterministic shuffle-and-cut: the same seed gives the same split for every trial."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(records) - 1, max(1, round(eval_fraction * len(records))))
    eval_idx = set(order[:n_eval])
    train = [records[i] for i in order[n_eval:]]
    evals = [records[i] for i in sorted(eval_idx)]
    return train, evals
