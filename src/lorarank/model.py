"""Load the frozen base model and its tokenizer once per process.

Names resolve in this order: `tiny-random` and `smollm2-135m` (built in, no network), an existing
local directory, then a Hugging Face hub id. Remote code stays off unless the user turns it on.

Precision. The frozen base is held in `model.dtype` (resolve_dtype), and in bf16 or fp16 everything
runs under torch.autocast on the model's device, the same code on CPU and CUDA:

    base weights and activations   bf16 (half the memory of fp32)
    adapters A, B, their gradients and AdamW's moments   fp32 (PEFT upcasts half-precision adapters:
                                   get_peft_model's autocast_adapter_dtype); cast to bf16 per product
    RMSNorm statistics, rotary angles   fp32 (transformers' Llama/Qwen2 compute them so)
    attention softmax              accumulated in fp32 inside SDPA
    the loss                       fp32 log-sum-exp (train.LinearCrossEntropy)
"""

from __future__ import annotations

from pathlib import Path

import torch

from lorarank import builtin_models, env
from lorarank.config import ModelConfig
from lorarank.env import quiet_hub
from lorarank.errors import UserError

# bf16 products without bf16 units, measured by benchmarks/throughput.py (matmul_peaks) on an AVX2
# CPU at a training step's shape: torch emulates them
EMULATED_BF16 = "bf16 products are emulated on this CPU, about 70x slower than fp32 (1.2 vs 86 GFLOP/s measured on an AVX2 CPU)"


def has_bf16_units(device: torch.device) -> bool:
    """Does `device` multiply bf16 natively? CUDA: compute capability 8.0 or later (Ampere on), asked
    without emulation: by default torch also says yes on a T4 or V100, which only emulate bf16. CPU:
    AMX tiles or AVX512-BF16 (6-7x the fp32 matmul rate measured on an AMX Xeon)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return env.bf16_units(env.cpu_capability())


def resolve_dtype(name: str, device: torch.device, bf16_supported: bool | None = None) -> torch.dtype:
    """The precision of the base weights and of autocast. An explicit name is always honoured.
    `auto`: bf16 where the device multiplies it natively (a CPU with AMX or AVX512-BF16, a GPU that
    supports it), else fp16 on CUDA and fp32 on CPU. `bf16_supported` overrides the detection."""
    if name != "auto":
        return getattr(torch, name)
    if bf16_supported is None:
        bf16_supported = has_bf16_units(device)
    if bf16_supported:
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else torch.float32


def warn_if_emulated(dtype: torch.dtype, device: torch.device) -> None:
    """An explicit bf16 on a CPU without bf16 units is honoured, with one line saying what it costs."""
    if dtype == torch.bfloat16 and device.type == "cpu" and not has_bf16_units(device):
        env.warn(f"model.dtype=bfloat16: {EMULATED_BF16}; model.dtype=auto picks float32 here")


def compute_dtype(model) -> torch.dtype:
    """The precision a loaded model computes in: its input embedding's dtype (never quantized, so also
    right for a 4-bit base, whose products run in the compute dtype)."""
    return model.get_input_embeddings().weight.dtype


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


HALF_PRECISION = (torch.bfloat16, torch.float16)
"""The compute dtypes of a half-precision base: autocast on, and the fast path's lever table applies."""


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision for a half-precision base, on CPU and CUDA alike: products in `dtype` (PEFT's
    fp32 adapters cast to it per call; fastpath's fused layer chooses its own), the ops autocast keeps
    in fp32 in fp32. A no-op for fp32."""
    enabled = dtype in HALF_PRECISION
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
    warn_if_emulated(dtype, device)
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
