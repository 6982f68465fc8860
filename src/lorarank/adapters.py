"""Adapters trained elsewhere, as found on disk: PEFT directories, Trainer checkpoints, trainer_state.json.

Every trainer of the ecosystem (TRL, Axolotl, Unsloth, LLaMA-Factory, a PEFT script) writes the same
artifacts, which is all `lorarank analyze` reads:

    output_dir/                       an `output_dir` of a Trainer-based run
      adapter_config.json             r, lora_alpha, use_rslora, target_modules, base_model_name_or_path
      adapter_model.safetensors       base_model.model.<module>.lora_A.weight (r x d_in), lora_B (d_out x r)
      trainer_state.json              log_history: loss / eval_loss / learning_rate per logged step
      README.md                       model card: tags (trl, axolotl, unsloth) and framework versions
      checkpoint-50/ checkpoint-100/  the same files per saved step

A directory holding adapter_config.json is that adapter; one without it but with checkpoint-N/
subdirectories means its last checkpoint. Everything is checked here, before anything is written.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from lorarank.errors import UserError

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
STATE = "trainer_state.json"
CARD = "README.md"

# model-card tags that name the trainer (`tags:` in the card's YAML header), most specific first
TRAINER_TAGS = (("axolotl", "Axolotl"), ("unsloth", "Unsloth"), ("llama-factory", "LLaMA-Factory"), ("trl", "TRL"))


@dataclass(frozen=True)
class Adapter:
    path: Path  # the directory holding adapter_config.json
    rank: int
    lora_alpha: float
    use_rslora: bool
    target_modules: list[str] | str  # PEFT: leaf names, or one regex matched against full module names
    base: str | None  # base_model_name_or_path
    modules_to_save: list[str]
    weights_sha256: str
    shapes: dict[str, tuple[int, ...]]  # lora_A / lora_B tensor name -> shape
    trainer: dict  # {"name", "version", "versions": {framework: version}}
    state: dict | None  # trainer_state.json, when the run left one
    state_path: Path | None
    seed: int | None

    @property
    def gamma(self) -> float:
        """PEFT's scale of B·A: α/r, or α/√r with rsLoRA (Kalajdzievski 2023)."""
        return self.lora_alpha / (math.sqrt(self.rank) if self.use_rslora else self.rank)

    @property
    def leaf_targets(self) -> list[str]:
        """The adapted modules' last name components ('q_proj'), read from the weights themselves:
        'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' -> 'q_proj'."""
        return sorted({k.split(".lora_", 1)[0].rsplit(".", 1)[-1] for k in self.shapes})



def alpha_policies(found: list[Adapter]) -> dict[Path, str]:
    """The lorarank alpha policy (lora.scaling_for) each adapter was trained under, judged across all of
    them: rsLoRA where set; else one lora_alpha for every rank is `constant` (γ = α/r) and α = 2r for
    every rank is `proportional` (γ = 2). Any other mix is labelled `constant`, and each row shows its γ."""
    plain = [a for a in found if not a.use_rslora]
    proportional = len({a.lora_alpha for a in plain}) > 1 and all(a.lora_alpha == 2 * a.rank for a in plain)
    return {a.path: "rslora" if a.use_rslora else "proportional" if proportional else "constant" for a in found}


# ---------------------------------------------------------------------------------------------- finding


def find(patterns: list[str]) -> list[Path]:
    """Adapter directories named by `patterns` (directories or globs), in a stable order."""
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(Path(pattern).expanduser()))) if glob.has_magic(pattern) else [pattern]
        dirs = [d for d in (_adapter_dir(Path(m)) for m in matches) if d is not None]
        if not dirs:
            raise UserError(f"no LoRA adapter found under {pattern}: give directories holding {CONFIG} "
                            "(a PEFT save_pretrained directory) or a trainer's output_dir with checkpoint-N/ in it")
        found += [d for d in dirs if d not in found]
    return found


def _adapter_dir(d: Path) -> Path | None:
    """d itself when it holds an adapter, else its last checkpoint-N that does, else None."""
    if (d / CONFIG).is_file():
        return d
    checkpoints = [c for c in d.glob("checkpoint-*") if _is_checkpoint(c) and (c / CONFIG).is_file()]
    return max(checkpoints, key=lambda c: int(c.name.split("-", 1)[1])) if checkpoints else None


# ---------------------------------------------------------------------------------------------- reading


def read(path: Path, seed_pattern: str | None) -> Adapter:
    """One adapter directory, checked: a LoRA adapter with readable weights."""
    cfg = _read_json(path / CONFIG, "its adapter config")
    _check_lora(path, cfg)
    shapes, sha = _read_weights(path)
    state_path = _state_file(path)
    state = _read_json(state_path, "its trainer state") if state_path else None
    return Adapter(
        path=path, rank=int(cfg["r"]), lora_alpha=float(cfg.get("lora_alpha") or cfg["r"]),
        use_rslora=bool(cfg.get("use_rslora")), target_modules=cfg.get("target_modules") or [],
        base=cfg.get("base_model_name_or_path"), modules_to_save=list(cfg.get("modules_to_save") or []),
        weights_sha256=sha, shapes=shapes, trainer=trainer_of(path, state is not None, cfg.get("peft_version")),
        state=state,
        state_path=state_path, seed=seed_of(path, seed_pattern, state),
    )


def _read_json(path: Path, what: str) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read {what} ({exc}): re-save the adapter or drop it from the "
                        "command") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: {what} is not a JSON object: re-save the adapter or drop it from the command")
    return doc


def _check_lora(path: Path, cfg: dict) -> None:
    """LoRA only: other PEFT methods do not update a weight by γ·B·A, so none of the analysis applies."""
    kind = cfg.get("peft_type", "?")
    if kind != "LORA":
        raise UserError(f"{path} is a {kind} adapter, not LoRA: lorarank analyze reads LoRA adapters "
                        "(ΔW = γ·B·A); drop it from the command")
    if cfg.get("use_dora"):
        raise UserError(f"{path} is a DoRA adapter (use_dora: true): its update rescales W's columns, so it is "
                        "not γ·B·A; drop it from the command")
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise UserError(f"{path} sets rank_pattern/alpha_pattern (ranks per module): lorarank compares one rank "
                        "per adapter; drop it from the command")
    if not isinstance(cfg.get("r"), int) or cfg["r"] < 1:
        raise UserError(f"{path}: adapter_config.json has no rank r: re-save the adapter with PEFT")


def _read_weights(path: Path) -> tuple[dict[str, tuple[int, ...]], str]:
    """(shape of every lora_A/lora_B tensor, sha256 of the file), reading every tensor once so that a
    truncated or corrupt file is refused here and not halfway through the analysis."""
    f = path / WEIGHTS
    if not f.is_file():
        legacy = (" (adapter_model.bin: load and save it again with a current PEFT)"
                  if (path / "adapter_model.bin").exists() else "")
        raise UserError(f"{path}: no {WEIGHTS}{legacy}")
    from safetensors.torch import load

    try:
        data = f.read_bytes()
        tensors = load(data)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for corrupt files
        raise UserError(f"{f}: unreadable weights ({type(exc).__name__}: {exc}): copy or save the adapter "
                        "again") from None
    shapes = {k: tuple(v.shape) for k, v in tensors.items() if ".lora_A." in k or ".lora_B." in k}
    if not shapes:
        raise UserError(f"{f} holds no lora_A/lora_B weights: give a LoRA adapter saved with save_pretrained")
    return shapes, hashlib.sha256(data).hexdigest()


def _state_file(path: Path) -> Path | None:
    """trainer_state.json of this adapter: its own, else (a final adapter saved into the output_dir,
    which Trainer.save_model leaves without one) that of the output_dir's last checkpoint."""
    if (path / STATE).is_file():
        return path / STATE
    states = [c / STATE for c in path.glob("checkpoint-*") if _is_checkpoint(c) and (c / STATE).is_file()]
    return max(states, key=lambda f: int(f.parent.name.split("-", 1)[1])) if states else None


def seed_of(path: Path, pattern: str | None, state: dict | None) -> int | None:
    """The seed label: the first group of `pattern` matched in the path (which must match), else a
    `seed` the trainer recorded in its state, else None."""
    if pattern:
        try:
            m = re.search(pattern, str(path))
        except re.error as exc:
            raise UserError(f"--seed-pattern {pattern!r} is not a regular expression ({exc}): "
                            r"e.g. --seed-pattern 'seed(\d+)'") from None
        if m is None:
            raise UserError(f"--seed-pattern {pattern!r} matches nothing in {path}: give a pattern that finds "
                            "the seed in every adapter's path, or drop that adapter")
        label = next((g for g in m.groups() if g is not None), m.group(0))
        if not label.isdigit():
            raise UserError(f"--seed-pattern {pattern!r} matched {label!r} in {path}, not a number: "
                            r"put the digits in a group, e.g. 'seed(\d+)'")
        return int(label)
    seed = (state or {}).get("seed")
    return int(seed) if isinstance(seed, int) else None


def trainer_of(path: Path, has_state: bool, peft_version: str | None = None) -> dict:
    """Which trainer wrote the adapter, and the framework versions its model card lists (PEFT's also
    from adapter_config.json, where PEFT records it)."""
    versions, tags = _card_facts(_card(path))
    if _is_checkpoint(path):  # the trainer's own card, when it wrote one, sits in the output_dir
        parent_versions, parent_tags = _card_facts(_card(path.parent))
        versions, tags = {**versions, **parent_versions}, tags | parent_tags
    if peft_version and "PEFT" not in versions:
        versions["PEFT"] = peft_version
    name = next((n for tag, n in TRAINER_TAGS if tag in tags or n in versions), None)
    if name is None and (path.parent / "run_data.json").is_file():
        name = "lorarank"
    if name is None and "Transformers" in versions:
        name = "Transformers Trainer"
    name = name or ("trainer not named (trainer_state.json)" if has_state else "trainer not named (PEFT files only)")
    version = versions.get(name) or versions.get({"Transformers Trainer": "Transformers"}.get(name, name))
    return {"name": name, "version": version, "versions": versions}


def _card_facts(card: str) -> tuple[dict[str, str], set[str]]:
    """(framework -> version from "### Framework versions", the tags of the YAML header) of a model card."""
    versions = {}
    if "Framework versions" in card:
        found = re.findall(r"^- ([A-Za-z][\w .-]*?):? (\d[\w.+-]*)\s*$", card.split("Framework versions", 1)[1], re.M)
        versions = dict(found)
    tags = set(re.findall(r"^\s*- ([\w.-]+)\s*$", card.split("---", 2)[1], re.M)) if card.startswith("---") else set()
    return versions, tags


def _card(d: Path) -> str:
    try:
        return (d / CARD).read_text()
    except (OSError, UnicodeDecodeError):
        return ""


def _is_checkpoint(d: Path) -> bool:
    return d.name.startswith("checkpoint-") and d.name.split("-", 1)[1].isdigit()


# ---------------------------------------------------------------------------------------------- trainer logs


@dataclass(frozen=True)
class Curves:
    """What the trainer logged (trainer_state.json's log_history): read, not measured by lorarank."""
    steps: list[int] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)
    peak_learning_rate: float | None = None
    train_runtime: float | None = None  # seconds, logged once when Trainer.train() returns
    global_step: int | None = None
    tokens_trained: int | None = None  # TRL logs num_tokens; a Trainer with include_num_input_tokens_seen too


def curves(state: dict | None) -> Curves:
    if not state:
        return Curves()
    log = [e for e in state.get("log_history", []) if isinstance(e, dict) and "step" in e]
    lrs = [e["learning_rate"] for e in log if isinstance(e.get("learning_rate"), (int, float))]
    runtime = next((e["train_runtime"] for e in reversed(log) if "train_runtime" in e), None)
    return Curves(
        steps=[e["step"] for e in log if "loss" in e], train_losses=[e["loss"] for e in log if "loss" in e],
        eval_steps=[e["step"] for e in log if "eval_loss" in e],
        eval_losses=[e["eval_loss"] for e in log if "eval_loss" in e],
        peak_learning_rate=float(f"{max(lrs):.3g}") if lrs else None, train_runtime=runtime,
        global_step=state.get("global_step"),
        tokens_trained=next((int(e["num_tokens"]) for e in reversed(log) if "num_tokens" in e),
                            state.get("num_input_tokens_seen") or None),
    )


# ---------------------------------------------------------------------------------------------- the base


def check_base(adapter: Adapter, base) -> None:
    """Every adapted module exists in `base` with the shapes the adapter was trained on."""
    modules = dict(base.named_modules())
    wrong, missing = [], []
    for key, shape in sorted(adapter.shapes.items()):
        name, kind = re.sub(r"^base_model\.model\.", "", key).split(".lora_", 1)
        mod = modules.get(name)
        if mod is None or not hasattr(mod, "in_features"):
            missing += [name] if name not in missing else []
            continue
        want = (shape[0], mod.in_features) if kind.startswith("A") else (mod.out_features, shape[1])
        if tuple(shape) != want:
            wrong.append(f"{name} ({'x'.join(map(str, shape))} vs {'x'.join(map(str, want))})")
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise UserError(f"{adapter.path} adapts {missing[0]}{more}, which this base model does not have: pass the "
                        "base it was trained on with --base")
    if wrong:
        raise UserError(f"{adapter.path} was trained on a base with other shapes ({wrong[0]}): pass the base it "
                        "was trained on with --base")
