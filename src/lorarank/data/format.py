"""Turn records into token ids with the prompt masked out of the loss; done once per sweep.

An example is `prompt ids + completion ids`. The loss is taken on completion tokens only: position
t predicts token t+1, so targets are ids[prompt_len:] predicted from positions prompt_len-1 .. L-2.

Chat format (as the original experiment): user = instruction, plus "\\n\\nInput: ..." when the record
has an input; assistant = output; rendered by the tokenizer's chat template. The prompt is the
template rendered with `add_generation_prompt=True`, the completion is the rest of the full render.
Alpaca format (for tokenizers without a template): the Stanford Alpaca prompt, completion = output + EOS.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lorarank.config import DataConfig, config_hash
from lorarank.data.records import Record, load_records, split_records
from lorarank.errors import UserError

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


@dataclass
class Example:
    input_ids: list[int]
    prompt_len: int  # ids[:prompt_len] is the prompt; the rest is trained on
    reference: str  # the record's output text, for exact-match scoring
    family: str | None = None  # task family of verifiable datasets

    @property
    def n_completion(self) -> int:
        return len(self.input_ids) - self.prompt_len


@dataclass
class PreparedData:
    train: list[Example]
    eval: list[Example]
    prompt_format: str
    n_records: int
    dropped_too_long: int
    fingerprint: str  # hash of the token ids: trials with equal fingerprints saw identical data
    families: list[str] = field(default_factory=list)

    @property
    def verifiable(self) -> bool:
        """Exact-match accuracy is meaningful only when every eval record has a task family."""
        return bool(self.eval) and all(e.family for e in self.eval)


def resolve_format(requested: str, tokenizer) -> str:
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if requested == "chat" and not has_template:
        raise UserError("data.prompt_format=chat but this tokenizer has no chat template: use prompt_format=alpaca")
    if requested == "auto":
        return "chat" if has_template else "alpaca"
    return requested


def user_message(rec: Record) -> str:
    return f"{rec['instruction']}\n\nInput: {rec['input']}" if rec["input"].strip() else rec["instruction"]


def render(rec: Record, tokenizer, fmt: str, system_prompt: str = "") -> tuple[str, str]:
    """(prompt_text, completion_text); prompt_text + completion_text is the full training text."""
    if fmt == "chat":
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        user = system + [{"role": "user", "content": user_message(rec)}]
        prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": rec["output"]}], tokenize=False)
        if not full.startswith(prompt):
            raise UserError("this tokenizer's chat template renders the prompt differently with and without the "
                            "answer, so prompt tokens cannot be masked: use data.prompt_format=alpaca")
        return prompt, full[len(prompt):]
    template = ALPACA_WITH_INPUT if rec["input"].strip() else ALPACA_NO_INPUT
    return template.format(**rec), rec["output"]


def encode(rec: Record, tokenizer, fmt: str, system_prompt: str = "") -> Example:
    prompt, completion = render(rec, tokenizer, fmt, system_prompt)
    if fmt == "chat":  # the template already writes BOS/special tokens as text
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    else:
        p_ids = tokenizer(prompt)["input_ids"]  # BOS when the tokenizer adds one
        c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return Example(list(p_ids) + list(c_ids), len(p_ids), rec["output"], rec.get("family"))


def prepare(cfg: DataConfig, tokenizer) -> PreparedData:
    """Load, split, render and tokenize; drop (and count) examples longer than max_length."""
    records = load_records(cfg)
    fmt = resolve_format(cfg.prompt_format, tokenizer)
    train_recs, eval_recs = split_records(records, cfg.eval_fraction, cfg.split_seed)
    train = [encode(r, tokenizer, fmt, cfg.system_prompt) for r in train_recs]
    evals = [encode(r, tokenizer, fmt, cfg.system_prompt) for r in eval_recs]
    def fits(e: Example) -> bool:
        return len(e.input_ids) <= cfg.max_length and e.n_completion >= 1

    too_long = [e for e in train + evals if not fits(e)]
    train, evals = [e for e in train if fits(e)], [e for e in evals if fits(e)]
    if not train or not evals:
        longest = max(len(e.input_ids) for e in too_long)
        raise UserError(
            f"{len(too_long)} of {len(records)} examples are longer than data.max_length={cfg.max_length} tokens "
            f"(longest {longest}) and were dropped, leaving {'no training' if not train else 'no eval'} examples: "
            f"raise data.max_length (e.g. data.max_length={longest}) or use shorter records"
        )
    fingerprint = config_hash([[e.input_ids, e.prompt_len] for e in train + evals])
    families = sorted({e.family for e in evals if e.family})
    return PreparedData(train, evals, fmt, len(records), len(too_long), fingerprint, families)
