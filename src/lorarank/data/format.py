"""Turn records into token ids and the spans the loss is taken on; done once per sweep.

An example is token ids plus trained spans [start, end): the loss is the cross-entropy of every
token inside a span, each predicted from the position before it (position t predicts token t+1).
What is trained, per format (docs/concepts/data-formats.md says why):

- chat (conversational, ShareGPT, prompt-completion as messages, Alpaca under a chat template): the
  tokenizer's chat template renders the conversation; each trained assistant turn is what the
  template writes between the end of the generation prompt (`<|im_start|>assistant\\n`) and the start
  of the next message: the answer and its end-of-turn text (SmolLM2: `answer<|im_end|>\\n`). Found by
  rendering the conversation up to each turn, with and without that turn.
  Alpaca records become one user turn (instruction, plus "\\n\\nInput: ..." when there is an input)
  and one assistant turn (output), as the original experiment.
- plain (prompt-completion as strings, Alpaca under the Alpaca prompt): prompt ids (with BOS when
  the tokenizer adds one), then completion ids + EOS; the completion and EOS are trained.
- text: every token after the first, then EOS: language modelling.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jinja2

from lorarank.config import DataConfig, config_hash
from lorarank.data.records import Record, load_sets, split_records
from lorarank.data.shapes import TRAINED_ON, reference
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

Span = tuple[int, int]


@dataclass
class Example:
    input_ids: list[int]
    prompt_len: int  # ids[:prompt_len] is the prompt of the last trained span: what accuracy decoding feeds
    reference: str  # the last trained answer's text, for exact-match scoring ("" when there is none)
    family: str | None = None  # task family of verifiable datasets
    trained: tuple[Span, ...] = ()
    """Token ranges [start, end) the loss is on, in order; () = one range from prompt_len to the end.
    start >= 1: the first token has no position before it to be predicted from."""

    def __post_init__(self) -> None:
        self.trained = tuple(self.trained) or ((self.prompt_len, len(self.input_ids)),)

    @property
    def loss_mask(self) -> list[bool]:
        """Per token: is the loss taken on it?"""
        mask = [False] * len(self.input_ids)
        for start, end in self.trained:
            mask[start:end] = [True] * (end - start)
        return mask

    @property
    def n_completion(self) -> int:
        """Tokens trained on."""
        return sum(end - start for start, end in self.trained)

    @property
    def identity(self) -> list:
        """What the data fingerprint hashes. One trailing span (every Alpaca example) is fully given
        by prompt_len, so it hashes as [ids, prompt_len], as before trained spans existed."""
        if self.trained == ((self.prompt_len, len(self.input_ids)),):
            return [self.input_ids, self.prompt_len]
        return [self.input_ids, self.prompt_len, [list(s) for s in self.trained]]


@dataclass
class PreparedData:
    train: list[Example]
    eval: list[Example]
    prompt_format: str  # chat | alpaca | plain: how prompts were rendered
    n_records: int
    dropped_too_long: int
    fingerprint: str  # hash of the token ids and trained spans: equal fingerprints saw identical data
    families: list[str] = field(default_factory=list)
    record_format: str = "alpaca"  # the records' shape (shapes.REQUIRED)
    eval_source: str = ""  # where the eval set came from

    @property
    def trained_on(self) -> str:
        return TRAINED_ON[self.record_format]

    @property
    def verifiable(self) -> bool:
        """Exact-match accuracy is meaningful only when every eval record has a task family."""
        return bool(self.eval) and all(e.family for e in self.eval)


def resolve_format(requested: str, tokenizer, record_kind: str = "alpaca") -> str:
    """How prompts are rendered: `chat` (the tokenizer's template), `alpaca` (the Alpaca prompt) or
    `plain` (prompt-completion strings and text, used as given). data.prompt_format chooses for
    Alpaca records; conversations always need the template. `record_kind` is shapes.kind."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if record_kind in ("plain", "text"):
        return "plain"
    if record_kind == "chat":
        if requested == "alpaca" or not has_template:
            why = "data.prompt_format=alpaca" if has_template else "this tokenizer has no chat template"
            raise UserError(f"conversations are rendered with the tokenizer's chat template, but {why}: use a model "
                            "with a chat template and data.prompt_format=auto, or give prompt-completion records as "
                            "plain strings")
        return "chat"
    if requested == "chat" and not has_template:
        raise UserError("data.prompt_format=chat but this tokenizer has no chat template: use prompt_format=alpaca")
    if requested == "auto":
        return "chat" if has_template else "alpaca"
    return requested


def user_message(rec: Record) -> str:
    return f"{rec['instruction']}\n\nInput: {rec['input']}" if rec["input"].strip() else rec["instruction"]


def alpaca_chat(rec: Record) -> Record:
    """An Alpaca record as a chat: one user turn, one trained assistant turn."""
    turns = [{"role": "user", "content": user_message(rec)}, {"role": "assistant", "content": rec["output"]}]
    return {"messages": turns, "trained": [1]}


def chat_pieces(messages: list[Record], trained: list[int], tokenizer, where: str = "a record") -> list[tuple[str, bool]]:
    """The template's rendering of `messages` cut into (text, trained) pieces that join to the full render.

    Trained turn i spans render(messages[:i], generation prompt) .. render(messages[:i+1]): the
    answer and whatever the template closes the turn with. Needs a template that renders a prefix of
    the conversation as a prefix of its text (ChatML, Llama 3, Gemma and most others do)."""
    def render(turns: list[Record], generation_prompt: bool = False) -> str:
        try:
            return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=generation_prompt)
        except (jinja2.TemplateError, ValueError) as exc:  # transformers raises ValueError for some shapes
            raise UserError(f"{where}: the chat template rejects this conversation ({exc}): order its turns as the "
                            "template expects (e.g. one system turn first, then user and assistant alternating)") from None

    full = render(messages)
    pieces, at = [], 0
    for i in trained:
        start, end = render(messages[:i], True), render(messages[:i + 1])
        if not (full.startswith(end) and end.startswith(start) and len(start) >= at):
            raise UserError(f"{where}: this tokenizer's chat template renders turn {i} differently once later turns "
                            "follow, so its tokens cannot be located for the loss: use prompt-completion records "
                            "(one trained answer each) or a model whose template renders turns in order")
        pieces += [(full[at:len(start)], False), (full[len(start):len(end)], True)]
        at = len(end)
    return pieces + [(full[at:], False)]


def with_system(messages: list[Record], system_prompt: str) -> tuple[list[Record], int]:
    """(messages with data.system_prompt first when they have no system turn, index shift)."""
    if not system_prompt or (messages and messages[0]["role"] == "system"):
        return messages, 0
    return [{"role": "system", "content": system_prompt}] + messages, 1


def encode_chat(rec: Record, tokenizer, system_prompt: str = "") -> tuple[list[int], list[Span]]:
    """Token ids and trained spans of a chat record. The template writes BOS and special tokens as
    text, so each piece is tokenized without adding any; pieces meet at token boundaries."""
    messages, shift = with_system(rec["messages"], system_prompt)
    trained = [i + shift for i in rec["trained"]]
    ids: list[int] = []
    spans: list[Span] = []
    for text, is_trained in chat_pieces(messages, trained, tokenizer, rec.get("where", "a record")):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        start = max(1, len(ids))  # a turn at token 0 (nothing rendered before it) has no predictor for its first token
        if is_trained and start < len(ids) + len(piece):
            spans.append((start, len(ids) + len(piece)))
        ids += piece
    return ids, spans


def encode_plain(prompt: str, completion: str, tokenizer) -> tuple[list[int], list[Span]]:
    """Prompt ids (BOS when the tokenizer adds one), then completion ids + EOS, which are trained.
    An empty prompt without BOS leaves the first completion token untrained: nothing predicts it."""
    p_ids = tokenizer(prompt)["input_ids"]
    c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = list(p_ids) + list(c_ids)
    return ids, [(max(1, len(p_ids)), len(ids))]


def encode_text(text: str, tokenizer) -> tuple[list[int], list[Span]]:
    """Language modelling: every token after the first, and EOS, is trained."""
    ids = list(tokenizer(text)["input_ids"]) + [tokenizer.eos_token_id]
    return ids, [(1, len(ids))]


def encode(rec: Record, tokenizer, fmt: str, system_prompt: str = "") -> Example:
    """One normalised record (shapes.py) as an Example; `fmt` is resolve_format's answer."""
    if "text" in rec:
        ids, spans = encode_text(rec["text"], tokenizer)
    elif "completion" in rec:
        ids, spans = encode_plain(rec["prompt"], rec["completion"], tokenizer)
    elif "messages" in rec:
        ids, spans = encode_chat(rec, tokenizer, system_prompt)
    elif fmt == "chat":
        ids, spans = encode_chat(alpaca_chat(rec), tokenizer, system_prompt)
    else:
        template = ALPACA_WITH_INPUT if rec["input"].strip() else ALPACA_NO_INPUT
        ids, spans = encode_plain(template.format(**rec), rec["output"], tokenizer)
    prompt_len = spans[-1][0] if spans else len(ids)
    return Example(ids, prompt_len, reference(rec), rec.get("family"), tuple(spans))


def prepare(cfg: DataConfig, tokenizer) -> PreparedData:
    """Load, split, render and tokenize; drop (and count) examples longer than max_length."""
    train_set, eval_set = load_sets(cfg)
    fmt = resolve_format(cfg.prompt_format, tokenizer, train_set.kind)
    if eval_set is None:
        train_recs, eval_recs = split_records(train_set.records, cfg.eval_fraction, cfg.split_seed)
        eval_source = (f"held out from {train_set.source}: {len(eval_recs)} of {len(train_set.records)} records "
                       f"(data.eval_fraction={cfg.eval_fraction:g}, split_seed {cfg.split_seed})")
    else:
        train_recs, eval_recs, eval_source = train_set.records, eval_set.records, eval_set.source
    train = [encode(r, tokenizer, fmt, cfg.system_prompt) for r in train_recs]
    evals = [encode(r, tokenizer, fmt, cfg.system_prompt) for r in eval_recs]

    def fits(e: Example) -> bool:
        return len(e.input_ids) <= cfg.max_length and e.n_completion >= 1

    too_long = [e for e in train + evals if not fits(e)]
    train, evals = [e for e in train if fits(e)], [e for e in evals if fits(e)]
    n_records = len(train_recs) + len(eval_recs)
    if not train or not evals:
        longest = max(len(e.input_ids) for e in too_long)
        raise UserError(
            f"{len(too_long)} of {n_records} examples are longer than data.max_length={cfg.max_length} tokens "
            f"(longest {longest}) and were dropped, leaving {'no training' if not train else 'no eval'} examples: "
            f"raise data.max_length (e.g. data.max_length={longest}) or use shorter records"
        )
    fingerprint = config_hash([e.identity for e in train + evals])
    families = sorted({e.family for e in evals if e.family})
    return PreparedData(train, evals, fmt, n_records, len(too_long), fingerprint, families,
                        train_set.format, eval_source)
