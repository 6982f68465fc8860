"""Shared fixtures: tiny real inputs (a random Llama, the embedded suite) and one tiny sweep."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n 2 on two cores: one torch thread per worker
    torch.set_num_threads(1)

warnings.filterwarnings("ignore", category=FutureWarning)

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = "tiny"  # the preset shipped in src/lorarank/presets/tiny.yaml
TINY_ARGS = ["--config", TINY_CONFIG, "--no-progress"]
# for tests of processes and files, not of what a trial measures: no decoding, forgetting or intruders
LEAN = ["data.accuracy_examples=0", "eval.general_text=none", "eval.intruders=false"]


# Modules whose tests decide or compare by precision: what `model.dtype: auto` resolves to, or the
# compute dtype a path runs in. `make test-cpus` (in CI) runs them again under LORARANK_CPU=amx and
# LORARANK_CPU=avx2, so any host checks what a host of the other kind would take.
DTYPE_MODULES = {"test_precision.py", "test_attention.py", "test_fused.py", "test_fastpath.py", "test_env.py"}

# Tests that take seconds (real subprocesses, the real SmolLM2, Ray, whole sweeps): `make test-fast`
# leaves them out for a quick local loop; `make test` and CI run everything.
SLOW_MODULES = {"test_smollm2.py", "test_concurrency_faults.py", "test_ray.py", "test_reliability.py",
                "test_data_cli.py", "test_trackers.py", "test_unreadable.py"}


def pytest_collection_modifyitems(config, items):  # noqa: ARG001
    for item in items:
        module = item.path.name
        if module in DTYPE_MODULES:
            item.add_marker(pytest.mark.dtype)
        if module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


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
