"""Task accuracy: greedy-decode held-out prompts and score exact match per task family.

Eval loss says how likely the reference answer is; accuracy says whether the model actually
produces it. Scored: datasets whose records carry a `family` (the embedded instruct-suite), and any
dataset with reference answers under `data.exact_match` (one family, `all`). The prompt is every
token before the last trained span: in a multi-turn chat the earlier turns, reference answers
included, are context, and the model answers the last user turn; for prompt-completion records it
is the prompt.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from lorarank.data import suite
from lorarank.config import DataConfig
from lorarank.data.format import Example, PreparedData

# end-of-turn markers of common chat templates; generation stops at the first one
STOP_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")
# Prompts decoded together. Each generated token reads every weight once, whatever the batch, so
# fewer and wider batches are faster: 48 suite prompts took 8.1 s in one batch, 10.9 s in two
# (SmolLM2, 2-core CPU). Suite prompts are short, so the KV cache stays small even for 7B models.
GENERATION_BATCH = 64


def stop_ids(tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id}
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in STOP_TOKENS if t in vocab)
    return sorted(i for i in ids if i is not None)


@torch.no_grad()
def generate_answers(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int,
                     device: torch.device) -> list[str]:
    """Greedy answers for token-id prompts, left-padded so every prompt ends at the same column."""
    stops = stop_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    was_training = model.training
    model.eval()
    answers: list[str] = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for b, p in enumerate(chunk):
            ids[b, width - len(p):] = torch.tensor(p)
            attn[b, width - len(p):] = 1
        out = model.generate(
            input_ids=ids.to(device), attention_mask=attn.to(device), max_new_tokens=max_new_tokens,
            do_sample=False, eos_token_id=stops, pad_token_id=pad, use_cache=True,
        )
        for row in out[:, width:].tolist():
            cut = next((k for k, t in enumerate(row) if t in stops), len(row))
            answers.append(tokenizer.decode(row[:cut], skip_special_tokens=True))
    model.train(was_training)
    return answers


def task_accuracy(model, tokenizer, examples: list[Example], max_new_tokens: int, batch_size: int,
                  device: torch.device) -> dict:
    """{"overall": float, "per_family": {family: float}, "n": int, "samples": [...]}"""
    prompts = [e.input_ids[:e.prompt_len] for e in examples]  # prompt_len: where the last trained span starts
    answers = generate_answers(model, tokenizer, prompts, max_new_tokens, batch_size, device)
    hits: dict[str, list[bool]] = defaultdict(list)
    samples = []
    for e, a in zip(examples, answers):
        ok = suite.is_correct(a, e.reference)
        hits[e.family or "all"].append(ok)
        if len(samples) < 16:  # a few decoded answers make failures readable in run_data.json
            samples.append({"family": e.family, "reference": e.reference, "answer": a, "correct": ok})
    flat = [h for v in hits.values() for h in v]
    return {
        "overall": sum(flat) / len(flat),
        "per_family": {f: sum(v) / len(v) for f, v in sorted(hits.items())},
        "n": len(flat),
        "samples": samples,
    }


def measures_accuracy(data: PreparedData | None, cfg: DataConfig) -> bool:
    """Is there task accuracy to measure: a verifiable eval set and accuracy_examples > 0."""
    return data is not None and data.verifiable and cfg.accuracy_examples > 0


def dataset_accuracy(model, tokenizer, data: PreparedData, cfg: DataConfig, device: torch.device) -> dict | None:
    """Task accuracy on the first `accuracy_examples` eval records, or None when the dataset is not
    verifiable or accuracy is turned off (the same rule for the base model and every trial)."""
    if not measures_accuracy(data, cfg):
        return None
    return task_accuracy(model, tokenizer, data.eval[: cfg.accuracy_examples], cfg.max_new_tokens,
                         GENERATION_BATCH, device)
