"""cost.py against FLOPs and bytes counted by hand for tiny-random and SmolLM2-135M."""

from __future__ import annotations

import pytest
import torch

from lorarank import cost
from lorarank.config import ALL_PROJECTIONS


@pytest.fixture(scope="module")
def smollm2_shape():
    """SmolLM2-135M's architecture on the meta device (no weights): hidden 576, intermediate 1536,
    30 layers, 9 heads of 64 and 3 kv heads (k/v: 576 -> 192), vocab 49152, tied LM head."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True)
    with torch.device("meta"):
        return cost.Shape.of(LlamaForCausalLM(config), ALL_PROJECTIONS)


def test_smollm2_shape_by_hand(smollm2_shape):
    # per layer, d_in·d_out: q 576·576 = 331,776; k and v 576·192 = 110,592 each; o 331,776;
    # gate and up 576·1536 = 884,736 each; down 1536·576 = 884,736 -> 3,538,944; x 30 layers
    assert smollm2_shape.body == 30 * 3_538_944 == 106_168_320
    assert smollm2_shape.head == 576 * 49152 == 28_311_552  # tied to the embedding, still one product
    # per layer, d_in + d_out: q 1152, k 768, v 768, o 1152, gate 2112, up 2112, down 2112 -> 10,176
    assert smollm2_shape.params_per_rank == 30 * 10_176 == 305_280


def test_smollm2_flops_by_hand(smollm2_shape):
    s = smollm2_shape
    # head on every position, r = 8: 4·(106,168,320 + 28,311,552) + 6·8·305,280 = 537,919,488 + 14,653,440
    assert cost.train_flops_per_token(s, 8, 1.0) == 552_572_928
    # head on a quarter of the positions, r = 64: 4·106,168,320 + 4·28,311,552/4 = 452,984,832 frozen,
    # 6·64·305,280 = 117,227,520 for the adapters
    assert cost.frozen_train_flops_per_token(s, 0.25) == 452_984_832
    assert cost.lora_train_flops_per_token(s, 64) == 117_227_520
    assert cost.lora_overhead(s, 64, 0.25) == pytest.approx(117_227_520 / 452_984_832)  # 25.9%
    assert cost.lora_overhead(s, 64, 1.0) == pytest.approx(0.2179, abs=1e-4)  # head everywhere: smaller share
    # evaluation, forward only: 2·106,168,320 + 2·28,311,552/4 + 2·64·305,280
    assert cost.eval_flops_per_token(s, 64, 0.25) == 212_336_640 + 14_155_776 + 39_075_840
    assert cost.train_flops_per_token(s, 0, 0.0) == 4 * 106_168_320  # the frozen body alone


def test_tiny_random_by_hand(tiny_base):
    model, tok = tiny_base
    s = cost.Shape.of(model, ALL_PROJECTIONS)
    # hidden 128, intermediate 256, 2 layers, 4 heads of 32 and 2 kv heads (k/v 128 -> 64), vocab 261:
    # per layer q 16,384 + k 8,192 + v 8,192 + o 16,384 + gate, up, down 32,768 each = 147,456
    assert len(tok) == 261 and s == cost.Shape(body=2 * 147_456, head=128 * 261, params_per_rank=2 * 2048)
    # r = 4, head on half the positions: 4·294,912 + 4·33,408/2 + 6·4·4,096
    assert cost.train_flops_per_token(s, 4, 0.5) == 1_179_648 + 66_816 + 98_304
    assert cost.eval_flops_per_token(s, 4, 0.5) == 589_824 + 33_408 + 32_768
    assert cost.lora_overhead(s, 4, 0.5) == pytest.approx(98_304 / (1_179_648 + 66_816))
    run_data = {"matmul_params": {"body": 294_912, "head": 33_408}, "params_per_rank": 4096,
                "completion_tokens_trained": 745, "tokens_trained": 3550}
    assert cost.Shape.from_run_data(run_data) == s
    assert cost.trained_head_share(run_data) == cost.head_share(745, 3550) == 745 / 3550


def test_bytes_per_trainable_parameter():
    trainable = 2_442_240  # SmolLM2-135M, r = 8
    assert cost.adapter_bytes(trainable) == cost.gradient_bytes(trainable) == 9_768_960  # fp32
    assert cost.optimizer_state_bytes(trainable) == 19_537_920  # two AdamW moments
    assert cost.TRAINING_STATE_BYTES_PER_PARAM == 16
    assert cost.training_state_bytes(trainable) == 39_075_840
    assert cost.matmul_flops(512, 512, 512) == 2 * 512 ** 3
