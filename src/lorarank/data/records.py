"""Read Alpaca-format records (`instruction`, optional `input`, `output`) and split them.

Sources: the embedded `instruct-suite`, a local .json (a list of records) or .jsonl file, or a
Hugging Face dataset id (yahma/alpaca-cleaned, tatsu-lab/alpaca, ...) through `datasets`.
Every record is checked; the first bad one is named in the error with how to fix it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from lorarank.config import DataConfig
from lorarank.data import suite
from lorarank.env import quiet_hub
from lorarank.errors import UserError

Record = dict[str, Any]  # instruction, input, output, and optional family (verifiable tasks)


def load_records(cfg: DataConfig) -> list[Record]:
    """All usable records, in source order, truncated to cfg.num_examples when set."""
    if cfg.dataset == suite.NAME:
        raw = suite.generate(cfg.suite_size, seed=cfg.split_seed)
        source = suite.NAME
    else:
        raw, source = _read_source(cfg)
    records = [_check_record(r, i, source) for i, r in enumerate(raw)]
    kept = [r for r in records if r["instruction"].strip() and r["output"].strip()]
    if cfg.num_examples:
        kept = kept[: cfg.num_examples]
    if len(kept) < 2:
        raise UserError(
            f"dataset {source} has {len(kept)} usable record(s) after dropping {len(records) - len(kept)} with an empty "
            "instruction or output: give at least 2 records with non-empty `instruction` and `output`"
        )
    return kept


def _read_source(cfg: DataConfig) -> tuple[list[Any], str]:
    path = Path(cfg.dataset).expanduser()
    if path.suffix.lower() in (".json", ".jsonl") or path.exists():
        return _read_file(path), str(path)
    if cfg.dataset.count("/") == 1 and not cfg.dataset.startswith((".", "/", "~")):
        return _read_hub(cfg.dataset, cfg.hf_split, cfg.num_examples), cfg.dataset
    raise UserError(
        f"dataset '{cfg.dataset}' not found: give a .json/.jsonl file of Alpaca records, "
        f"a Hugging Face id such as yahma/alpaca-cleaned, or {suite.NAME}"
    )


def _read_file(path: Path) -> list[Any]:
    if not path.is_file():
        raise UserError(f"data file not found: {path} (check the path given to --dataset)")
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
                        'wrap the records in [...] (each {"instruction": ..., "output": ...})')
    return doc


def _read_hub(dataset_id: str, split: str, num_examples: int) -> list[Any]:
    try:
        from datasets import load_dataset

        sel = f"{split}[:{num_examples}]" if num_examples else split
        with quiet_hub():
            return list(load_dataset(dataset_id, split=sel))
    except Exception as exc:  # datasets raises many types for offline / missing / gated
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot load dataset '{dataset_id}' from the Hugging Face hub ({first[:160]}): "
                        "check the id and your network, or pass a local .json/.jsonl file") from None


def _check_record(rec: Any, index: int, source: str) -> Record:
    where = f"{source} record {index}"
    if not isinstance(rec, dict):
        raise UserError(f"{where} is a {type(rec).__name__}, not an object: each record needs "
                        '{"instruction": str, "input": str (optional), "output": str}')
    missing = [k for k in ("instruction", "output") if k not in rec]
    if missing:
        raise UserError(f"{where} has no {' or '.join(repr(m) for m in missing)} field: every record needs "
                        f"'instruction' and 'output' (found keys: {', '.join(map(str, rec)) or 'none'})")
    out: Record = {}
    for key in ("instruction", "input", "output"):
        value = rec.get(key, "")
        if value is None and key == "input":
            value = ""
        if not isinstance(value, str):
            raise UserError(f"{where} field '{key}' is a {type(value).__name__}, not a string: convert it to text")
        out[key] = value
    if "family" in rec:
        out["family"] = str(rec["family"])
    return out


def split_records(records: list[Record], eval_fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Deterministic shuffle-and-cut: the same seed gives the same split for every trial."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(records) - 1, max(1, round(eval_fraction * len(records))))
    eval_idx = set(order[:n_eval])
    train = [records[i] for i in order[n_eval:]]
    evals = [records[i] for i in sorted(eval_idx)]
    return train, evals
