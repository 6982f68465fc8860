"""Reading a config: presets, YAML files, `key=value` overrides, type coercion and "did you mean".

Generic over the typed config (config.py): a config is a dataclass whose fields are sections, each
a dataclass of typed fields. Every problem is collected into a list, so load_config can report them
all at once.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from lorarank.errors import UserError

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
DEFAULT_PRESET = "cpu-default"


def presets() -> dict[str, Path]:
    """Preset name -> its YAML file inside the package."""
    return {p.stem: p for p in sorted(PRESETS_DIR.glob("*.yaml"))}


def config_file(name_or_path: str | Path | None) -> Path:
    """The YAML behind `--config`: an existing file, else a preset name (`cpu-default`, `tiny`, ...;
    `cpu_default` works too); None means the default preset."""
    if name_or_path is None:
        return presets()[DEFAULT_PRESET]
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    name = str(name_or_path).removesuffix(".yaml").replace("_", "-")
    if name in presets():  # a bare name, never a path
        return presets()[name]
    raise UserError(f"config file not found: {p} (pass an existing YAML file or a preset: "
                    f"{', '.join(presets())})")


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise UserError(f"config file {p} is not valid YAML{where}: fix its syntax") from None
    if not isinstance(doc, dict):
        raise UserError(f"config file {p} must hold a mapping of sections (model:, data:, ...), got {type(doc).__name__}")
    return doc


def parse_override(text: str) -> tuple[str, Any]:
    """`train.learning_rate=1e-3` -> ("train.learning_rate", 0.001); values are parsed as YAML."""
    if "=" not in text:
        raise UserError(f"override '{text}' must look like section.key=value, e.g. train.max_steps=20")
    key, _, raw = text.partition("=")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, dict):  # no field takes a mapping: "a: b" in a value is plain text
        value = raw
    return key.strip(), value


def _sections(config_type: type) -> dict[str, type]:
    return typing.get_type_hints(config_type)


def _fields(config_type: type, section: str) -> dict[str, Any]:
    return typing.get_type_hints(_sections(config_type)[section])


def all_keys(config_type: type) -> list[str]:
    """Every valid dotted key of a config type, e.g. `train.max_steps`."""
    return [f"{s}.{k}" for s in _sections(config_type) for k in _fields(config_type, s)]


# type coercion: YAML and the CLI give strings, ints and lists; the dataclasses want exact types


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Return `value` converted to `hint`, or raise ValueError with a message naming `key`."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:  # Optional[X] and X | None
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)][0]
        return coerce(value, inner, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [coerce(v, args[0], key) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise ValueError(f"{key} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads 1e-3 (no dot) as a string
            except ValueError:
                pass
        raise ValueError(f"{key} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"{key} must be a string, got {value!r}")
    raise TypeError(f"unsupported config type {hint} for {key}")


def did_you_mean(key: str, keys: list[str]) -> str:
    # a bare field name ("learning_rates") is matched against the part after the dot
    bare = {k.split(".", 1)[1]: k for k in keys}
    if key in bare:
        return f" (did you mean '{bare[key]}'?)"
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6) or [
        bare[m] for m in difflib.get_close_matches(key.split(".")[-1], list(bare), n=1, cutoff=0.6)
    ]
    return f" (did you mean '{close[0]}'?)" if close else f" (valid keys: {', '.join(keys)})"


def apply(cfg: Any, key: str, value: Any, problems: list[str]) -> None:
    """Set dotted `key` of `cfg` to `value` coerced to the field's type; a problem is appended, not raised."""
    section, _, name = key.partition(".")
    config_type = type(cfg)
    if section not in _sections(config_type) or name not in _fields(config_type, section):
        problems.append(f"unknown config key '{key}'{did_you_mean(key, all_keys(config_type))}")
        return
    try:
        setattr(getattr(cfg, section), name, coerce(value, _fields(config_type, section)[name], key))
    except ValueError as exc:
        problems.append(str(exc))


def flatten(doc: dict[str, Any], cfg: Any, problems: list[str], source: str) -> dict[str, Any]:
    """{section: {field: value}} -> {"section.field": value}; a section that is not a mapping is a problem."""
    flat: dict[str, Any] = {}
    keys = all_keys(type(cfg))
    for section, body in doc.items():
        if isinstance(body, dict):
            for name, value in body.items():
                flat[f"{section}.{name}"] = value
        else:
            problems.append(
                f"{source}: top-level key '{section}' must hold a mapping of fields{did_you_mean(str(section), keys)}"
                if section in _sections(type(cfg))
                else f"{source}: unknown config key '{section}'{did_you_mean(str(section), keys)}"
            )
    return flat
