"""Load the frozen base model and its tokenizer once per process.

Names resolve in this order: `tiny-random` and `smollm2-135m` (built in, no network), an existing
local directory, then a Hugging Face hub id. Remote code stays off unless the user turns it on.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lorarank import builtin_models, fastpath
from lorarank.config import ModelConfig
from lorarank.env import quiet_hub
from lorarank.errors import UserError


def resolve_dtype(name: str, device: torch.device, bf16_supported: bool | None = None) -> torch.dtype:
    """`auto` = float32 on CPU; on CUDA bf16 when the GPU supports it, else fp16. (On CPUs without
    AVX512-BF16 or AMX, bf16 matmuls are emulated and slow; with AVX512-BF16 they are 2.6x faster,
    but a bf16 SmolLM2 base trained 25% faster for a 2.5% worse training-set loss, measured.)"""
    if name != "auto":
        return getattr(torch, name)
    if device.type != "cuda":
        return torch.float32
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    return torch.bfloat16 if bf16_supported else torch.float16


def check_device_options(cfg: ModelConfig, device: torch.device) -> None:
    """Options that need hardware this process does not have, refused before any loading."""
    if cfg.load_in_4bit and device.type != "cuda":
        raise UserError("model.load_in_4bit (QLoRA) needs a CUDA GPU and none is visible: "
                        "drop --load-in-4bit to train in full precision on this machine")
    if cfg.load_in_4bit and cfg.name == builtin_models.TINY_RANDOM:
        raise UserError("model.load_in_4bit is for pretrained checkpoints: tiny-random is built in code, drop --load-in-4bit")


def quantization_config(cfg: ModelConfig, compute_dtype: torch.dtype):
    """NF4 weights with double quantization, matmuls in the compute dtype (Dettmers et al. 2023)."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError("model.load_in_4bit needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision on CUDA for half-precision bases (the fp32 adapters then run in bf16/fp16 too);
    a no-op on CPU and for fp32."""
    enabled = device.type == "cuda" and dtype in (torch.bfloat16, torch.float16)
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled)


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
        model = builtin_models.tiny_random_model(vocab_size, dtype).to(device)
    else:
        from transformers import AutoModelForCausalLM

        extra = {}
        if cfg.load_in_4bit:  # bitsandbytes places the quantized weights on the GPU itself
            extra = {"quantization_config": quantization_config(cfg, dtype), "device_map": {"": device.index or 0}}
        model = _from_pretrained(AutoModelForCausalLM, model_source(cfg), cfg, dtype=dtype, **extra)
        if not cfg.load_in_4bit:
            model.to(device)
    model.requires_grad_(False)  # the base stays frozen; only adapters train
    model.config.use_cache = False  # no KV cache during training
    if cfg.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        # fp32 norms and input gradients for stable QLoRA training (PEFT's recipe)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if device.type == "cpu":  # packed rows: attention per example, not over the masked square (fastpath/)
        fastpath.enable(model)
    return model


def load_base(cfg: ModelConfig, device: torch.device | None = None):
    """(model, tokenizer) on `device`, base weights frozen, in eval mode."""
    device = device or pick_device()
    check_device_options(cfg, device)
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
        with quiet_hub():
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
