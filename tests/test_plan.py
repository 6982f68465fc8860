"""`lorarank plan`: exact counts from config.json alone (meta device, no weights)."""

from __future__ import annotations

import json

from conftest import run_cli

# SmolLM2-135M's architecture, as in its config.json
SMOLLM2_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
    "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
    "max_position_embeddings": 8192, "tie_word_embeddings": True, "rms_norm_eps": 1e-5, "hidden_act": "silu",
}


def test_plan_from_config_only_directory(tmp_path, capsys):
    model_dir = tmp_path / "smollm2"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(SMOLLM2_CONFIG))
    assert run_cli("plan", "--model", str(model_dir), "--ranks", "8", "16", "32", "64", "--json") == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["params_per_rank"] == 305_280
    assert [r["trainable_params"] for r in plan["ranks"]] == [305_280 * r for r in (8, 16, 32, 64)]
    assert plan["ranks"][0]["trainable_params"] == 2_442_240
    assert all(r["matches_formula"] for r in plan["ranks"])
    assert plan["ranks"][0]["adapter_bytes"] == 2_442_240 * 4
    assert plan["ranks"][0]["optimizer_state_bytes"] == 2_442_240 * 8
    # r = 64 on a 576-wide model adds roughly a quarter of the frozen matmul FLOPs
    assert 0.15 < plan["ranks"][-1]["flop_overhead"] < 0.35


def test_plan_table(capsys):
    assert run_cli("plan", "--model", "tiny-random", "--ranks", "2", "4") == 0
    out = capsys.readouterr().out
    assert "trainable parameters = r x 4,096" in out
    assert "8,192" in out and "16,384" in out
