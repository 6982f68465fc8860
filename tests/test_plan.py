"""`lorarank plan`: exact counts from config.json alone (meta device, no weights)."""

from __future__ import annotations

import json

import pytest

from lorarank import cost
from lorarank.store import RUN_DATA

from conftest import TINY_CONFIG, run_cli

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
    # no tokenizer here: the LM head is charged on every position, and the plan says so
    mix = plan["trained_tokens"]
    assert mix["head_share"] == 1.0 and mix["tokens"] is None and "no tokenizer files" in mix["source"]
    # r = 64 on a 576-wide model adds roughly a quarter of the frozen matmul FLOPs
    assert 0.15 < plan["ranks"][-1]["flop_overhead"] < 0.35


def test_plan_of_the_default_config_predicts_the_report_overhead(capsys):
    """The cpu-default preset (embedded SmolLM2-135M, embedded suite): plan counts f from the data and
    its overhead is the report's formula, cost.lora_overhead of a trial's run_data, for the same f."""
    assert run_cli("plan", "--config", "cpu-default", "--json") == 0
    plan = json.loads(capsys.readouterr().out)
    mix = plan["trained_tokens"]
    completion, tokens = mix["completion_tokens"], mix["tokens"]
    # 40 steps x 8 examples of the suite: ~12k tokens, about a fifth of them completion tokens
    assert 10_000 < tokens < 14_000 and 0.15 < mix["head_share"] == completion / tokens < 0.3
    for row in plan["ranks"]:
        run_data = {"rank": row["rank"], "matmul_params": plan["base_matmul_params"],
                    "params_per_rank": plan["params_per_rank"], "completion_tokens_trained": completion,
                    "tokens_trained": tokens}
        report = cost.lora_overhead(cost.Shape.from_run_data(run_data), row["rank"], cost.trained_head_share(run_data))
        assert row["flop_overhead"] == report
    assert plan["ranks"][-1]["flop_overhead"] == pytest.approx(0.261, abs=0.001)  # r = 64


def test_plan_head_share_is_what_the_trials_trained_on(tiny_sweep, capsys):
    """The tiny sweep's trials recorded their token mix while training; plan counts the same one."""
    assert run_cli("plan", "--config", TINY_CONFIG, "--json") == 0
    plan = json.loads(capsys.readouterr().out)
    runs = [json.loads(p.read_text()) for p in sorted(tiny_sweep.glob(f"rank_*/{RUN_DATA}"))]
    by_rank = {row["rank"]: row for row in plan["ranks"]}
    assert sorted(run["rank"] for run in runs) == sorted(by_rank)
    for run in runs:
        assert cost.trained_head_share(run) == plan["trained_tokens"]["head_share"]
        shape = cost.Shape.from_run_data(run)
        assert by_rank[run["rank"]]["flop_overhead"] == cost.lora_overhead(shape, run["rank"], cost.trained_head_share(run))


def test_plan_table(capsys):
    assert run_cli("plan", "--model", "tiny-random", "--ranks", "2", "4") == 0
    out = capsys.readouterr().out
    assert "trainable parameters = r x 4,096" in out
    assert "8,192" in out and "16,384" in out


def test_plan_original_preset_from_config_only_dir(tmp_path, capsys):
    """The original 7B QLoRA preset plans on a CPU machine from Qwen2.5-7B's config.json alone."""
    qwen7b = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584,
              "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
              "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 32768,
              "tie_word_embeddings": False, "rms_norm_eps": 1e-6, "hidden_act": "silu"}
    model_dir = tmp_path / "qwen7b"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(qwen7b))
    assert run_cli("plan", "--config", "original", "--model", str(model_dir), "--json") == 0
    plan = json.loads(capsys.readouterr().out)
    # per layer: q 3584+3584, k 3584+512, v 3584+512, o 3584+3584, gate/up 3584+18944 each, down 18944+3584
    per_layer = 7168 + 4096 + 4096 + 7168 + 3 * 22528
    assert plan["params_per_rank"] == 28 * per_layer == 2_523_136
    assert [r["trainable_params"] for r in plan["ranks"]] == [2_523_136 * r for r in (8, 16, 32, 64)]
    assert plan["ranks"][0]["trainable_params"] == 20_185_088
    assert plan["ranks"][-1]["flop_overhead"] < 0.05  # under 5% for a 7B model


def test_plan_stays_offline_for_hub_data():
    """plan counts tokens from local data only: a hub dataset or hub eval set is named, not downloaded."""
    from lorarank.config import load_config
    from lorarank.plan import offline_reason

    assert offline_reason(load_config(None)) is None  # the embedded model and suite
    hub_eval = load_config(None, {"data.eval_dataset": "HuggingFaceTB/smoltalk"})
    assert offline_reason(hub_eval) == ("eval dataset HuggingFaceTB/smoltalk is not a local file and plan does "
                                        "not download it")
    hub_train = load_config(None, {"data.dataset": "yahma/alpaca-cleaned"})
    assert offline_reason(hub_train).startswith("dataset yahma/alpaca-cleaned is not a local file")
