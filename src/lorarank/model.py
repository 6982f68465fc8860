"""Load the frozen base model and its tokenizer once per process.

Names resolve in this order: `tiny-random` and `smollm2-135m` (built in, no network), an existing
local directory, then a Hugging Face hub id. Remote code stays off unless the user turns it on.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lorarank import builtin_models
from lorarank.config import ModelConfig
from lorarank.errors import UserError


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` = float32 on CPU (bf16 matmuls are emulated and slow there), bf16 on CUDA when supported."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, name)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_source(cfg: ModelConfig) -> str:
    """The path or id that transformers loads for this config (converting the embedded model once)."""
    if cfg.name == builtin_models.SMOLLM2:
        return str(builtin_models.smollm2_checkpoint())
    return cfg.name


def load_tokenizer(cfg: ModelConfig):
    if cfg.name == builtin_models.TINY_RANDOM:
        return builtin_models.tiny_tokenizer()
    from transformers import AutoTokenizer

    source = model_source(cfg)
    tok = _from_pretrained(AutoTokenizer, source, cfg)
    if tok.pad_token is None:  # many causal LMs ship without one; padding positions are masked anyway
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg: ModelConfig, vocab_size: int, device: torch.device):
    dtype = resolve_dtype(cfg.dtype, device)
    if cfg.name == builtin_models.TINY_RANDOM:
        model = builtin_models.tiny_random_model(vocab_size, dtype)
    else:
        from transformers import AutoModelForCausalLM

        model = _from_pretrained(AutoModelForCausalLM, model_source(cfg), cfg, dtype=dtype)
    model.to(device)
    model.requires_grad_(False)  # the base stays frozen; only adapters train
    model.config.use_cache = False  # no KV cache during training
    return model


def load_base(cfg: ModelConfig, device: torch.device | None = None):
    """(model, tokenizer) on `device`, base weights frozen, in eval mode."""
    device = device or pick_device()
    tok = load_tokenizer(cfg)
    model = load_model(cfg, len(tok), device)
    model.eval()
    return model, tok


def load_model_config(cfg: ModelConfig):
    """Only the architecture (config.json): enough for `lorarank plan`, no weights needed."""
    if cfg.name == builtin_models.TINY_RANDOM:
        return builtin_models.tiny_random_model(len(builtin_models.tiny_tokenizer())).config
    if cfg.name == builtin_models.SMOLLM2:
        cached = builtin_models.cache_root() / "smollm2-135m-instruct"
        source = str(cached) if (cached / "config.json").is_file() else model_source(cfg)
    else:
        source = cfg.name
    from transformers import AutoConfig

    return _from_pretrained(AutoConfig, source, cfg)


def _from_pretrained(cls, source: str, cfg: ModelConfig, **kwargs):
    """Call `cls.from_pretrained` and turn "not found / offline" into a one-line fix."""
    local = Path(source).expanduser()
    looks_local = local.exists() or source.startswith((".", "/", "~")) or source.count("/") > 1
    if looks_local and not local.is_dir():
        raise UserError(f"model directory not found: {source} (give an existing directory, a hub id, "
                        "smollm2-135m or tiny-random)")
    try:
        return cls.from_pretrained(
            str(local) if local.is_dir() else source,
            revision=cfg.revision,
            trust_remote_code=cfg.trust_remote_code,
            **kwargs,
        )
    except OSError as exc:
        if local.is_dir():
            raise UserError(f"cannot load a model from {source}: {str(exc).splitlines()[0]} "
                            "(the directory needs config.json and weights in transformers format)") from None
        raise UserError(
            f"cannot load model '{source}' from the Hugging Face hub (offline, mistyped, or gated?): "
            "check the id, log in with `hf auth login`, or pass a local directory / smollm2-135m"
        ) from None
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise UserError(f"model '{source}' ships its own code: rerun with model.trust_remote_code=true "
                            "if you trust it") from None
        raise
