"""One typed configuration for a rank sweep: dataclasses loaded from YAML, plus CLI overrides.

Every field has a default and a docstring saying why it exists: these defaults are the original
experiment's settings, the base that every YAML file and preset overrides. A YAML file only needs the
fields it changes; presets ship inside the package (`presets/*.yaml`: cpu-default, the sweep that
`lorarank run` runs when no --config is given, from any directory; tiny; qwen0.5b-ranks; original).
`key=value` overrides on the command line use dotted names, e.g. `train.learning_rate=1e-3`.
`load_config` validates everything once and raises a single `UserError` listing every problem, with a
"did you mean" for unknown keys (the reading itself is config_io.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorarank import config_io
from lorarank.data.shapes import REQUIRED as RECORD_SHAPES
from lorarank.errors import UserError

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ALPHA_POLICIES = ("constant", "proportional", "rslora")
LR_SCHEDULES = ("cosine", "linear", "constant")
PROMPT_FORMATS = ("auto", "chat", "alpaca")
DTYPES = ("auto", "float32", "bfloat16", "float16")
EXECUTORS = ("local", "ray")
TRACKERS = ("tensorboard", "mlflow")


@dataclass
class ModelConfig:
    name: str = "smollm2-135m"
    """Base causal LM: `smollm2-135m` (embedded, runs offline), `tiny-random` (a small random Llama
    for tests), a Hugging Face model id, or a local directory with a transformers checkpoint."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) so that a sweep can pin the exact weights it used."""
    trust_remote_code: bool = False
    """Run model code shipped with a hub repository. Off: remote code is arbitrary code."""
    dtype: str = "auto"
    """The frozen base's dtype and autocast's; adapters and AdamW state stay float32. `auto` is
    bfloat16 where the hardware multiplies it natively (a CPU with AMX or AVX512-BF16, a GPU that
    supports it) and otherwise float32 on CPU (bf16 products are emulated, ~70x slower) or float16
    on CUDA. An explicit value is always honoured."""
    load_in_4bit: bool = False
    """QLoRA: hold the frozen base in 4-bit NF4 with double quantization (bitsandbytes, CUDA only);
    adapters stay in higher precision. Cuts base-model memory about 4x (the original used it for 7B)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward instead of storing them: less memory, ~30% more time.
    Useful for long sequences on GPUs; on CPU it only slows training down."""


@dataclass
class DataConfig:
    dataset: str = "instruct-suite"
    """`instruct-suite` (embedded, verifiable tasks), a local .json/.jsonl file, or a Hugging Face
    dataset id such as yahma/alpaca-cleaned; records in any shape of docs/concepts/data-formats.md
    (conversational, ShareGPT, prompt-completion, Alpaca, text)."""
    hf_split: str = "train"
    """Split to read from a Hugging Face dataset; the eval set is carved out of it by `eval_fraction`
    unless `eval_dataset` is given."""
    num_examples: int = 0
    """Use the first N records (0 = all). The original experiment used 500 Alpaca records."""
    eval_fraction: float = 0.1
    """Share of records held out for eval loss (the original used 10%); unused with `eval_dataset`."""
    split_seed: int = 42
    """Seed of the train/eval split; fixed across trials so every rank sees the same split."""
    max_length: int = 512
    """Longest tokenized example kept. Longer ones are dropped (never truncated: a cut response
    would teach the model to stop mid-answer); the count is reported."""
    prompt_format: str = "auto"
    """`chat` uses the tokenizer's chat template (user = instruction [+ Input], assistant = output),
    `alpaca` the Alpaca prompt; `auto` picks chat when the tokenizer has a template."""
    system_prompt: str = ""
    """Chat format only: a system message put first in every conversation that has none ("" = the
    template's own default, if any). A short one saves tokens on templates with a long default."""
    suite_size: int = 480
    """Number of records the embedded instruct-suite generates (ignored for other datasets)."""
    accuracy_examples: int = 64
    """Held-out records greedy-decoded and scored by exact match after training (verifiable
    datasets only, such as instruct-suite); 0 turns task accuracy off."""
    max_new_tokens: int = 32
    """Generation budget per accuracy prompt; longer answers are cut and scored as wrong."""
    format: str = "auto"
    """Record shape: `auto` takes it from the first record's keys; `conversational`, `sharegpt`,
    `prompt-completion`, `alpaca` or `text` forces one, for records whose keys fit several shapes.
    The shape decides which tokens are trained on (docs/concepts/data-formats.md)."""
    eval_dataset: str = ""
    """A separate eval set: a .json/.jsonl file or a Hugging Face id, in the training set's format.
    Users often hold validation data of their own; when given, nothing is held out of `dataset`."""
    eval_split: str = "test"
    """Split of a Hugging Face `eval_dataset`; a slice such as `test[:200]` keeps eval short (every
    record of the split is evaluated after each `train.eval_every` steps)."""
    exact_match: bool = False
    """Score greedy exact-match accuracy against each eval record's reference answer (the last
    assistant turn, the completion or the output) on any dataset, as one family `all`. Off by default:
    open-ended answers are rarely reproduced word for word. The instruct-suite and records with a
    `family` field are always scored."""


@dataclass
class LoraConfig:
    alpha: float = 32.0
    """lora_alpha. Under the `constant` policy the scale is gamma = alpha / r (the original used 32)."""
    dropout: float = 0.05
    """Dropout on the LoRA input path (the original used 0.05)."""
    target_modules: list[str] = field(default_factory=lambda: list(ALL_PROJECTIONS))
    """Linear layers that get an adapter; all seven projections by default, as in the original."""


@dataclass
class TrainConfig:
    epochs: float = 1.0
    """Passes over the training split; ignored when max_steps > 0."""
    max_steps: int = 0
    """Optimizer steps per trial; 0 = derive from epochs. Same for every rank."""
    batch_size: int = 4
    """Examples per micro-batch."""
    grad_accum: int = 4
    """Micro-batches per optimizer step (effective batch = batch_size * grad_accum)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay on the adapter weights."""
    warmup_ratio: float = 0.1
    """Share of steps with a linear LR warmup from 0 (the original used 0.1)."""
    lr_schedule: str = "linear"
    """Decay after warmup: `linear` (transformers' default, as the original), `cosine` or `constant`."""
    min_lr_ratio: float = 0.0
    """Final LR as a fraction of the peak LR for `linear` and `cosine`."""
    max_grad_norm: float = 1.0
    """Global gradient-norm clip; guards the first steps of high-gamma adapters."""
    log_every: int = 10
    """Record the mean train loss every N optimizer steps (the original logged every 10)."""
    eval_every: int = 50
    """Eval loss every N optimizer steps, and always after the last step."""
    packing: bool = True
    """Train and evaluate each micro-batch as one padding-free row (position ids restart per example).
    No token attends across examples: on CPU each example gets its own causal attention, elsewhere
    transformers masks the row block-diagonally. Same loss and gradients as padding, without padding
    FLOPs; a model whose packed loss differs from its padded one is trained with padding instead."""
    num_threads: int = 0
    """CPU threads for torch; 0 = all cores torch sees."""
    checkpoint_every: int = 0
    """Save adapter + optimizer + RNG state every N steps so a killed trial resumes mid-way on the
    next run (for long GPU trials); 0 = off, a killed trial restarts from step 0."""


@dataclass
class SweepConfig:
    ranks: list[int] = field(default_factory=lambda: [8, 16, 32, 64])
    """LoRA ranks to compare; one adapter per rank with everything else held equal."""
    seeds: list[int] = field(default_factory=lambda: [42])
    """Seeds (init of A and data order). Several seeds give confidence intervals; each seed is
    shared by all ranks, so comparisons are paired."""
    learning_rates: list[float] = field(default_factory=lambda: [2e-4])
    """Peak learning rates; with several, each rank is judged at its best LR by eval loss."""
    alpha_policies: list[str] = field(default_factory=lambda: ["constant"])
    """How alpha follows rank: `constant` (gamma = alpha/r), `proportional` (alpha = 2r, gamma = 2)
    or `rslora` (gamma = alpha/sqrt(r)). See docs/concepts/lora-rank.md."""
    full_finetune_lrs: list[float] = field(default_factory=list)
    """Learning rates for a full fine-tuning reference row (every base weight trainable, one trial
    per seed and LR); empty = none. Full FT's best LR is ~10x below LoRA's (LoRA Without Regret)."""
    output_dir: str = "outputs/lora_rank_comparison"
    """Where results, adapters, plots and the README go."""
    executor: str = "local"
    """How trials run: `local` (in this process, one after another) or `ray` (Ray workers in parallel,
    on this machine or a cluster; needs `pip install lorarank[ray]`)."""
    ray_address: str = ""
    """Ray cluster to join (`auto`, `ray://host:10001`); empty = $RAY_ADDRESS, else a local Ray runtime."""
    workers: int = 0
    """Ray workers (each loads the base model once and runs trials one after another); 0 = one per trial,
    as many as the cluster's resources allow at once."""
    cpus_per_trial: float = 1.0
    """CPU cores a Ray worker reserves; torch in the worker uses that many threads."""
    gpus_per_trial: float = 0.0
    """GPUs a Ray worker reserves; fractions (0.5) put several small trials on one GPU."""


@dataclass
class EvalConfig:
    general_text: str = "builtin"
    """Held-out general text whose loss measures forgetting (Biderman et al. 2024): `builtin` = the
    Python language reference shipped with Python (`pydoc_data.topics`, in no training set here), a
    .txt file or .jsonl/.json records with a "text" field, or `none` to skip the probe."""
    general_windows: int = 16
    """Windows of general text evaluated (spread evenly over the text): 16 x 128 tokens cost a few
    seconds per SmolLM2-135M trial on a 2-core CPU."""
    general_window_tokens: int = 128
    """Tokens per general-text window."""
    intruders: bool = True
    """Count intruder dimensions per module (Shuttleworth et al. 2024). Needs the SVD of every adapted
    frozen weight once per process (cached): cheap for small models, minutes and GBs for 7B ones."""
    intruder_top_k: int = 10
    """Top singular vectors of W + ΔW examined per module (PEFT's and the paper's k)."""
    intruder_epsilon: float = 0.5
    """A top direction is an intruder when its largest |cosine| with any singular vector of W is below this."""


@dataclass
class ReportConfig:
    equivalence_margin: float = 0.05
    """The recommendation's margin ε: a rank is equivalent to the best when, by a paired TOST over
    seeds, it loses at most this share of the best rank's eval-loss improvement over the base model
    (see docs/concepts/choosing-a-rank.md). A share of the gain keeps its meaning as losses near zero."""
    note: str = ""
    """A line printed at the top of the generated README (e.g. why this configuration ran)."""
    report_to: list[str] = field(default_factory=list)
    """Experiment trackers that also get each trial's curves and results: tensorboard, mlflow.
    Off by default; the JSON files stay the source of truth."""
    tracking_uri: str = ""
    """MLflow tracking URI (a server or sqlite:///... database; empty = a local file store in
    <output_dir>/mlruns). TensorBoard logs go to <output_dir>/tensorboard."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults <- YAML file or preset (None: the cpu-default preset) <- overrides (dotted keys);
    validated once, every problem reported together."""
    problems: list[str] = []
    cfg = Config()
    source = config_io.config_file(path)
    for key, value in config_io.flatten(config_io.read_yaml(source), cfg, problems, str(source)).items():
        config_io.apply(cfg, key, value, problems)
    for key, value in (overrides or {}).items():
        config_io.apply(cfg, key, value, problems)
    problems += validate(cfg)
    if problems:
        raise UserError("\n".join(problems))
    return cfg


def validate(cfg: Config) -> list[str]:
    """Semantic checks that need no model; rank-vs-shape checks happen once the model is known."""
    p: list[str] = []
    s, t, d, lo, m = cfg.sweep, cfg.train, cfg.data, cfg.lora, cfg.model
    if not s.ranks:
        p.append("sweep.ranks is empty: give at least one rank, e.g. --ranks 8 16 32 64")
    for r in s.ranks:
        if r <= 0:
            p.append(f"rank {r} is not a positive integer: LoRA ranks must be >= 1")
    dupes = sorted({r for r in s.ranks if s.ranks.count(r) > 1})
    if dupes:
        p.append(f"duplicate ranks {dupes}: list each rank once (use seeds for repeats)")
    if not s.seeds:
        p.append("sweep.seeds is empty: give at least one seed")
    if len(set(s.seeds)) != len(s.seeds):
        p.append("sweep.seeds has duplicates: list each seed once")
    if not s.learning_rates or any(not (lr > 0 and math.isfinite(lr)) for lr in s.learning_rates):
        p.append("sweep.learning_rates must be positive numbers, e.g. --lr 2e-4")
    if any(not (lr > 0 and math.isfinite(lr)) for lr in s.full_finetune_lrs):
        p.append("sweep.full_finetune_lrs must be positive numbers, e.g. --full-ft 1e-4")
    if len(set(s.learning_rates)) != len(s.learning_rates):
        p.append("sweep.learning_rates has duplicates: list each learning rate once")
    for pol in s.alpha_policies:
        if pol not in ALPHA_POLICIES:
            p.append(f"alpha policy '{pol}' is unknown: use one of {', '.join(ALPHA_POLICIES)}")
    if not s.alpha_policies or len(set(s.alpha_policies)) != len(s.alpha_policies):
        p.append("sweep.alpha_policies must list each policy once")
    if s.executor not in EXECUTORS:
        p.append(f"sweep.executor '{s.executor}' is unknown: use one of {', '.join(EXECUTORS)}")
    if not s.output_dir:
        p.append("sweep.output_dir is empty: give a directory, e.g. --output-dir outputs/my_sweep")
    if m.dtype not in DTYPES:
        p.append(f"model.dtype '{m.dtype}' is unknown: use one of {', '.join(DTYPES)}")
    if not m.name:
        p.append("model.name is empty: use smollm2-135m, tiny-random, a hub id or a local directory")
    if d.prompt_format not in PROMPT_FORMATS:
        p.append(f"data.prompt_format '{d.prompt_format}' is unknown: use one of {', '.join(PROMPT_FORMATS)}")
    if not 0.0 < d.eval_fraction < 1.0:
        p.append(f"data.eval_fraction must be between 0 and 1 (exclusive), got {d.eval_fraction}")
    for name in ("num_examples", "accuracy_examples"):
        if getattr(d, name) < 0:
            p.append(f"data.{name} must be >= 0 (0 means all / off)")
    for name in ("max_length", "suite_size", "max_new_tokens"):
        if getattr(d, name) < 1:
            p.append(f"data.{name} must be >= 1")
    if d.format not in ("auto", *RECORD_SHAPES):
        p.append(f"data.format '{d.format}' is unknown: use auto or one of {', '.join(RECORD_SHAPES)}")
    if d.eval_dataset == "instruct-suite":
        p.append("data.eval_dataset=instruct-suite would repeat training records: leave it empty to hold out "
                 "data.eval_fraction of the suite")
    if d.eval_dataset and not d.eval_split:
        p.append("data.eval_split is empty: name the split of data.eval_dataset to evaluate on, e.g. test")
    if d.exact_match and (d.format == "text" or not d.accuracy_examples):
        p.append("data.exact_match needs reference answers and data.accuracy_examples > 0: text records have no "
                 "answer; set data.accuracy_examples (e.g. 64) or drop data.exact_match")
    if not lo.target_modules:
        p.append("lora.target_modules is empty: name at least one linear layer, e.g. q_proj")
    if not 0.0 <= lo.dropout < 1.0:
        p.append(f"lora.dropout must be in [0, 1), got {lo.dropout}")
    if lo.alpha <= 0:
        p.append(f"lora.alpha must be > 0, got {lo.alpha}")
    if t.max_steps < 0 or (t.max_steps == 0 and t.epochs <= 0):
        p.append("train needs max_steps > 0 or epochs > 0")
    for name in ("batch_size", "grad_accum", "log_every", "eval_every"):
        if getattr(t, name) < 1:
            p.append(f"train.{name} must be >= 1")
    if t.checkpoint_every < 0:
        p.append("train.checkpoint_every must be >= 0 (0 = off)")
    if t.num_threads < 0:
        p.append("train.num_threads must be >= 0 (0 = all cores)")
    if not 0.0 <= t.warmup_ratio < 1.0:
        p.append(f"train.warmup_ratio must be in [0, 1), got {t.warmup_ratio}")
    if not 0.0 <= t.min_lr_ratio <= 1.0:
        p.append(f"train.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio}")
    if t.lr_schedule not in LR_SCHEDULES:
        p.append(f"train.lr_schedule '{t.lr_schedule}' is unknown: use one of {', '.join(LR_SCHEDULES)}")
    if t.max_grad_norm <= 0:
        p.append("train.max_grad_norm must be > 0")
    for tracker in cfg.report.report_to:
        if tracker not in TRACKERS:
            p.append(f"report.report_to: unknown tracker '{tracker}': use {', '.join(TRACKERS)}")
    if s.full_finetune_lrs and m.load_in_4bit:
        p.append("sweep.full_finetune_lrs needs trainable base weights, which 4-bit weights are not: "
                 "drop --load-in-4bit or the full fine-tuning reference")
    if s.workers < 0 or s.cpus_per_trial <= 0 or s.gpus_per_trial < 0:
        p.append("sweep.workers must be >= 0, sweep.cpus_per_trial > 0 and sweep.gpus_per_trial >= 0")
    if not 0.0 < cfg.report.equivalence_margin < 1.0:
        p.append(f"report.equivalence_margin must be in (0, 1), got {cfg.report.equivalence_margin} "
                 "(a share of the best rank's improvement, e.g. 0.05)")
    ev = cfg.eval
    if ev.general_windows < 1 or ev.general_window_tokens < 2 or ev.intruder_top_k < 1:
        p.append("eval.general_windows and eval.intruder_top_k must be >= 1, eval.general_window_tokens >= 2")
    if not 0.0 < ev.intruder_epsilon < 1.0:
        p.append(f"eval.intruder_epsilon must be in (0, 1), got {ev.intruder_epsilon}")
    if ev.general_text not in ("builtin", "none") and not Path(ev.general_text).expanduser().is_file():
        p.append(f"eval.general_text: file not found: {ev.general_text} (give a .txt/.jsonl/.json file, "
                 "builtin or none)")
    return p


def config_hash(obj: Any) -> str:
    """Stable short hash of a JSON-able object (sorted keys), used for trial ids and caches."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
