"""Shared fixtures: tiny real inputs (a random Llama, the embedded suite) and one tiny sweep."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", category=FutureWarning)

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = "tiny"  # the preset shipped in src/lorarank/presets/tiny.yaml
TINY_ARGS = ["--config", TINY_CONFIG, "--no-progress"]


def run_cli(*argv: str) -> int:
    from lorarank.cli import main

    return main(list(argv))


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory) -> Path:
    """One end-to-end sweep on the tiny random model, shared by the tests that read its outputs."""
    out = tmp_path_factory.mktemp("sweep") / "lora_rank_comparison"
    assert run_cli("run", *TINY_ARGS, "--output-dir", str(out)) == 0
    return out


@pytest.fixture(scope="session")
def tiny_base():
    from lorarank.builtin_models import tiny_random_model, tiny_tokenizer

    tok = tiny_tokenizer()
    return tiny_random_model(len(tok)), tok


def write_records(path: Path, records, jsonl: bool = False) -> Path:
    if jsonl:
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    else:
        path.write_text(json.dumps(records))
    return path
