"""What a sweep ran on, read once from sweep.json and baseline.json into the analysis model, so that
the report renders the model alone and never reads the raw files."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Trainer:
    """A trainer that wrote some of the analysed adapters, as its files name it."""

    name: str
    version: str | None
    peft: str | None
    adapters: int


@dataclass(frozen=True)
class Analyzed:
    """Adapters trained elsewhere (`lorarank analyze`; sweep.json's `analyzed`): what the report says
    in place of training settings lorarank did not choose."""

    adapters: int
    trainers: list[Trainer]
    seed_labels: str  # "seed pattern" when read from the paths, else "none"
    measured: list[str]  # numbers lorarank measured
    from_trainer: list[str]  # numbers read from trainer_state.json
    modules_to_save: list[str]  # analysed with the adapter, but not LoRA layers


def analyzed_of(info: dict | None) -> Analyzed | None:
    if not info:
        return None
    return Analyzed(len(info["adapters"]), [Trainer(t["name"], t.get("version"), t.get("peft"), t["adapters"])
                                            for t in info["trainers"]],
                    info["seed_labels"], list(info["measured"]), list(info["from_trainer"]),
                    list(info["modules_to_save"]))


@dataclass(frozen=True)
class Setup:
    """The sweep's configuration and environment as the report states them (sweep.json)."""

    model: str
    dtype: str  # as configured (may be `auto`)
    compute_dtype: str  # what it resolved to
    dataset: str
    n_train: int
    n_eval: int
    prompt_format: str
    record_format: str | None  # None in sweep.json files older than the record formats
    trained_on: str | None
    eval_source: str | None
    target_modules: list[str]
    dropout: float
    alpha: float
    alpha_policies: list[str]
    ranks: list[int]
    seeds: list[int]
    learning_rates: list[float]
    lr_schedule: str
    warmup_ratio: float
    batch_size: int
    grad_accum: int
    max_steps: int | None
    epochs: float
    max_grad_norm: float
    device: str | None
    cpu_capability: str | None
    bf16_units: list[str] | None  # None when the CPU was not recorded
    wall_time_seconds: float | None
    invocations: int
    output_dir: str
    note: str
    argv: list[str] | None  # the command line, for the command that settles an open question
    analyzed: Analyzed | None = None  # adapters trained elsewhere, not a sweep lorarank trained


@dataclass(frozen=True)
class Baseline:
    """The base model (no adapter) on the same eval data (baseline.json)."""

    eval_loss: float
    accuracy: float | None
    accuracy_per_family: dict[str, float] | None
    general_loss: float | None
    general_text_source: str | None


def setup_of(sweep: dict) -> Setup:
    cfg, env, axes = sweep["config"], sweep.get("environment", {}), sweep["axes"]
    data = sweep["data"] or {"n_train": 0, "n_eval": 0, "prompt_format": None}  # analyze without an eval set
    train, cpu = cfg["train"], env.get("cpu")
    return Setup(
        model=cfg["model"]["name"], dtype=cfg["model"]["dtype"],
        compute_dtype=env.get("compute_dtype", cfg["model"]["dtype"]), dataset=cfg["data"]["dataset"],
        n_train=data["n_train"], n_eval=data["n_eval"], prompt_format=data["prompt_format"],
        record_format=data.get("record_format"), trained_on=data.get("trained_on"), eval_source=data.get("eval_source"),
        target_modules=list(cfg["lora"]["target_modules"]), dropout=cfg["lora"]["dropout"], alpha=cfg["lora"]["alpha"],
        alpha_policies=list(axes["alpha_policies"]), ranks=list(axes["ranks"]), seeds=list(axes["seeds"]),
        learning_rates=list(axes["learning_rates"]), lr_schedule=train["lr_schedule"],
        warmup_ratio=train["warmup_ratio"], batch_size=train["batch_size"], grad_accum=train["grad_accum"],
        max_steps=train["max_steps"], epochs=train["epochs"], max_grad_norm=train["max_grad_norm"],
        device=env.get("device"), cpu_capability=cpu["capability"] if cpu else None,
        bf16_units=[unit for key, unit in (("amx_tile", "AMX"), ("avx512_bf16", "AVX512-BF16")) if cpu[key]]
        if cpu else None,
        wall_time_seconds=sweep.get("sweep_wall_time_seconds"), invocations=len(sweep.get("invocations", [])),
        output_dir=cfg["sweep"]["output_dir"], note=cfg["report"].get("note") or "",
        argv=list(env["argv"]) if env.get("argv") else None, analyzed=analyzed_of(sweep.get("analyzed")))


def baseline_of(baseline: dict | None) -> Baseline | None:
    if not baseline:
        return None
    acc = baseline.get("accuracy")
    return Baseline(baseline["eval_loss"], acc["overall"] if acc else None, dict(acc["per_family"]) if acc else None,
                    baseline.get("general_loss"), (baseline.get("general_text") or {}).get("source"))
