"""The embedded SmolLM2-135M: GGUF -> safetensors conversion round-trips; a short real sweep runs.

The conversion cache lives in LORARANK_CACHE (set per test session below), so this file also checks
that a fresh machine converts on first use."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import run_cli

pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def smollm2_dir():
    from lorarank.builtin_models import smollm2_checkpoint

    try:
        return smollm2_checkpoint()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"embedded model unavailable: {exc}")


def test_conversion_round_trips_logits(smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorarank.builtin_models import load_gguf, smollm2_gguf_path

    converted = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    assert getattr(converted, "hf_quantizer", None) is None  # an ordinary, trainable checkpoint
    assert "quantization_config" not in json.loads((smollm2_dir / "config.json").read_text())
    gguf_model, gguf_tok = load_gguf(smollm2_gguf_path())
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    prompt = "The capital of France is"
    ids = tok(prompt, return_tensors="pt").input_ids
    assert ids.tolist() == gguf_tok(prompt, return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        diff = (converted(ids).logits - gguf_model(ids).logits).abs().max().item()
    assert diff < 1e-4
    assert sum(p.numel() for p in converted.parameters()) == 134_515_008


def test_short_real_sweep(smollm2_dir, tmp_path):
    """Two ranks, three steps each, on the real model and the embedded suite."""
    out = tmp_path / "smol"
    code = run_cli("run", "--ranks", "8", "16", "--max-steps", "3", "train.eval_every=3", "data.suite_size=64",
                   "data.accuracy_examples=4", "data.max_new_tokens=12", "eval.general_windows=2",
                   "--output-dir", str(out), "--no-progress")
    assert code == 0
    runs = {r: json.loads((out / f"rank_{r}" / "run_data.json").read_text()) for r in (8, 16)}
    assert runs[8]["trainable_params"] == 2_442_240  # 305,280 x r with all seven projections
    assert runs[16]["trainable_params"] == 4_884_480
    base = json.loads((out / "baseline.json").read_text())
    for run in runs.values():
        assert run["status"] == "ok"
        assert run["final_eval_loss"] < base["eval_loss"]  # three steps already move the loss down
        assert set(run["accuracy"]["per_family"])
    readme = (out / "README.md").read_text()
    assert all(f"| {r} | {runs[r]['trainable_params']:,} (" in readme for r in (8, 16))  # both ranks reported
