"""FLOPs and bytes of a LoRA fine-tune: the one model that plan, the report and the benchmarks use.

Per token, a linear map y = x Wᵀ (W: d_out x d_in) costs 2·d_in·d_out FLOPs forward (a multiply
and an add per weight), as many for the input gradient gy·W, and as many for the weight gradient
gyᵀ·x: the 6·N per training token of Kaplan et al. 2020 (§2.1) when every weight trains. The frozen
base needs no weight gradient; the adapters A (r x d_in) and B (d_out x r) need all three:

    training    4·N_body + 4·N_head·f + 6·r·P       evaluation   2·N_body + 2·N_head·f + 2·r·P
    LoRA overhead = 6·r·P / (4·N_body + 4·N_head·f)

N_body = Σ d_in·d_out over the decoder's linear layers, N_head = d_model·vocab (the LM head),
P = Σ (d_in + d_out) over the adapted layers (trainable parameters = r·P), and f the share of
positions whose LM-head output is computed. lorarank's loop runs the head only on positions that
predict a completion token, so f = completion tokens / tokens (Example.n_completion summed over
Σ len(input_ids)); a trainer that computes every position's logits has f = 1. Attention scores,
norms, activations and the optimizer are left out. Every count below is per token.

Bytes: PEFT keeps adapter weights in float32 even on a bf16/fp16 or 4-bit base
(autocast_adapter_dtype), so the adapter, its gradient and both AdamW moments cost 4 bytes per
trainable parameter each: 16 in all.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lorarank import lora

FLOPS_PER_MAC = 2  # one multiply and one add
FP32_BYTES = 4
ADAMW_MOMENTS = 2  # first and second moment per parameter
TRAINING_STATE_BYTES_PER_PARAM = FP32_BYTES * (1 + 1 + ADAMW_MOMENTS)  # adapter + gradient + AdamW state


@dataclass(frozen=True)
class Shape:
    """What the FLOP counts need to know about a model and its adapters."""

    body: int
    """Σ d_in·d_out of the decoder's linear layers (frozen)."""
    head: int
    """d_in·d_out of the LM head (frozen; tied or not, it is one product per computed position)."""
    params_per_rank: int
    """Σ (d_in + d_out) over the adapted layers: trainable parameters = rank · params_per_rank."""

    @classmethod
    def of(cls, model: nn.Module, target_modules: list[str]) -> Shape:
        mm = lora.matmul_params(model)
        return cls(mm["body"], mm["head"], lora.params_per_rank(model, target_modules))

    @classmethod
    def from_run_data(cls, run_data: dict) -> Shape:
        """From a trial's run_data.json (`matmul_params` {"body", "head"} and `params_per_rank`)."""
        mm = run_data["matmul_params"]
        return cls(mm["body"], mm["head"], run_data["params_per_rank"])


def head_share(completion_tokens: int, tokens: int) -> float:
    """f: the share of positions whose LM-head output lorarank's loop computes."""
    return completion_tokens / tokens


def trained_head_share(run_data: dict) -> float:
    """f of a finished trial: the completion tokens among all tokens it trained on."""
    return head_share(run_data["completion_tokens_trained"], run_data["tokens_trained"])


def matmul_flops(m: int, k: int, n: int) -> int:
    """One (m x k) @ (k x n) product."""
    return FLOPS_PER_MAC * m * k * n


def frozen_train_flops_per_token(shape: Shape, head_share: float) -> float:
    """The frozen base in training: forward and input gradient, 4·N_body + 4·N_head·f."""
    return 2 * FLOPS_PER_MAC * (shape.body + shape.head * head_share)


def lora_train_flops_per_token(shape: Shape, rank: int) -> float:
    """The adapters in training: forward, input and weight gradients, 6·r·P."""
    return 3 * FLOPS_PER_MAC * rank * shape.params_per_rank


def train_flops_per_token(shape: Shape, rank: int, head_share: float) -> float:
    """4·N_body + 4·N_head·f + 6·r·P (rank 0: the frozen model alone)."""
    return frozen_train_flops_per_token(shape, head_share) + lora_train_flops_per_token(shape, rank)


def full_train_flops_per_token(shape: Shape, head_share: float) -> float:
    """Full fine-tuning: every weight also needs its weight gradient, Kaplan's 6·N (body and head)."""
    return 3 * FLOPS_PER_MAC * (shape.body + shape.head * head_share)


def eval_flops_per_token(shape: Shape, rank: int, head_share: float) -> float:
    """Forward only: 2·N_body + 2·N_head·f + 2·r·P."""
    return FLOPS_PER_MAC * (shape.body + shape.head * head_share + rank * shape.params_per_rank)


def lora_overhead(shape: Shape, rank: int, head_share: float) -> float:
    """Training FLOPs the adapters add, relative to the frozen model's: 6·r·P / (4·N_body + 4·N_head·f)."""
    return lora_train_flops_per_token(shape, rank) / frozen_train_flops_per_token(shape, head_share)


def adapter_bytes(trainable: int) -> int:
    """The adapter weights in float32 (what a saved adapter holds, before file overhead)."""
    return trainable * FP32_BYTES


def gradient_bytes(trainable: int) -> int:
    return trainable * FP32_BYTES


def optimizer_state_bytes(trainable: int) -> int:
    """AdamW's two moments in float32."""
    return trainable * ADAMW_MOMENTS * FP32_BYTES


def training_state_bytes(trainable: int) -> int:
    """Adapter + gradient + AdamW state: 16 bytes per trainable parameter."""
    return trainable * TRAINING_STATE_BYTES_PER_PARAM
