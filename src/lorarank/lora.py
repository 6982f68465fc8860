"""LoRA adapters: the alpha policy, attaching/detaching PEFT adapters, and the exact parameter count.

    x ──► W (frozen, d_out x d_in) ─────────────┐
    └───► A (r x d_in) ──► B (d_out x r) ──► ×γ ─┴─► h = W x + γ·B·A x

B starts at zero, so every adapter starts as the identity update ΔW = 0 (Hu et al. 2021, §4.1).
PEFT scales the update by γ = lora_alpha / r, or lora_alpha / √r with rsLoRA (Kalajdzievski 2023).
A constant alpha therefore shrinks the update as r grows; the policy makes that choice explicit.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from lorarank.errors import UserError


@dataclass(frozen=True)
class Scaling:
    lora_alpha: float
    use_rslora: bool
    gamma: float  # the effective scale applied to B·A


def scaling_for(rank: int, alpha: float, policy: str) -> Scaling:
    """γ for one trial under an alpha policy.

    constant:     lora_alpha = alpha,  γ = alpha / r      (the original experiment, alpha = 32)
    proportional: lora_alpha = 2r,     γ = 2              (Biderman et al. 2024)
    rslora:       lora_alpha = alpha,  γ = alpha / √r     (Kalajdzievski 2023; γ·√r is constant)
    """
    if policy == "constant":
        return Scaling(alpha, False, alpha / rank)
    if policy == "proportional":
        return Scaling(2.0 * rank, False, 2.0)
    if policy == "rslora":
        return Scaling(alpha, True, alpha / math.sqrt(rank))
    raise ValueError(f"unknown alpha policy {policy!r}")


def linear_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every linear layer by full name (nn.Linear and quantized look-alikes with in/out_features)."""
    return {
        name: mod
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear) or (hasattr(mod, "in_features") and hasattr(mod, "out_features") and hasattr(mod, "weight"))
    }


def adapted_modules(model: nn.Module, target_modules: list[str]) -> dict[str, nn.Module]:
    """The linear layers PEFT will adapt: those whose last name component is in target_modules.

    Raises UserError naming the available layer names when a target matches nothing."""
    linears = linear_modules(model)
    leaves = {name.rsplit(".", 1)[-1] for name in linears}
    missing = [t for t in target_modules if t not in leaves]
    if missing:
        raise UserError(
            f"unknown target module(s) {', '.join(missing)}: this model's linear layers are "
            f"{', '.join(sorted(leaves))} (set lora.target_modules to some of these)"
        )
    return {n: m for n, m in linears.items() if n.rsplit(".", 1)[-1] in target_modules}


def params_per_rank(model: nn.Module, target_modules: list[str]) -> int:
    """Σ over adapted modules of (d_in + d_out): LoRA adds A (r x d_in) and B (d_out x r),
    so the trainable parameter count is exactly r times this number (no biases, no embeddings)."""
    return sum(m.in_features + m.out_features for m in adapted_modules(model, target_modules).values())


def matmul_params(model: nn.Module) -> dict[str, int]:
    """Σ d_in·d_out of the frozen linear layers: the decoder body and the LM head apart, because
    the training loop runs the head only on completion positions. Per token, a frozen layer costs
    ≈ 4·d_in·d_out FLOPs in training (forward 2, input gradient 2; no weight gradient)."""
    head = model.get_output_embeddings()
    head_id = id(head) if head is not None else None
    body = sum(m.in_features * m.out_features for m in linear_modules(model).values() if id(m) != head_id)
    head_n = head.in_features * head.out_features if head is not None else 0
    return {"body": body, "head": head_n}


def check_ranks(model: nn.Module, target_modules: list[str], ranks: list[int]) -> None:
    """A rank above min(d_in, d_out) of a target adds parameters but no capacity: ΔW = B·A can never
    exceed that rank. Refuse it rather than report a misleading point."""
    mods = adapted_modules(model, target_modules)
    limit_name, limit = min(((n, min(m.in_features, m.out_features)) for n, m in mods.items()), key=lambda x: x[1])
    too_big = [r for r in ranks if r > limit]
    if too_big:
        raise UserError(
            f"rank(s) {too_big} exceed min(d_in, d_out) = {limit} of {limit_name}: "
            f"use ranks <= {limit} or drop that module from lora.target_modules"
        )


def peft_config(rank: int, scaling: Scaling, dropout: float, target_modules: list[str]):
    from peft import LoraConfig

    return LoraConfig(
        r=rank,
        lora_alpha=scaling.lora_alpha,
        use_rslora=scaling.use_rslora,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def attach(base: nn.Module, rank: int, scaling: Scaling, dropout: float, target_modules: list[str], init_seed: int):
    """Wrap `base` with a fresh adapter (in place). Seeding right before creation gives every trial
    of a seed the same A initialisation stream (B is zero)."""
    from peft import get_peft_model

    torch.manual_seed(init_seed)
    with warnings.catch_warnings():  # PEFT calls a transformers API that warns about its own rename
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(base, peft_config(rank, scaling, dropout, target_modules))


def detach(peft_model) -> nn.Module:
    """Remove the adapter layers and return the untouched base model for the next trial."""
    return peft_model.unload()


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters as the model holds them now."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
