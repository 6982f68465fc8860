"""Config: YAML + overrides, type coercion, every problem reported at once, did-you-mean."""

from __future__ import annotations

import pytest

from lorarank.config import load_config
from lorarank.config_io import parse_override
from lorarank.errors import UserError


def test_defaults_are_the_original_experiment():
    from lorarank.config import Config

    cfg = Config()  # the base every preset and YAML file overrides
    assert cfg.sweep.ranks == [8, 16, 32, 64]
    assert cfg.lora.alpha == 32 and cfg.sweep.alpha_policies == ["constant"]
    assert cfg.sweep.learning_rates == [2e-4]
    assert len(cfg.lora.target_modules) == 7


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  max_steps: 5\n  batch_size: 2\nsweep:\n  ranks: [4, 8]\n")
    cfg = load_config(path, {"train.max_steps": 7, "sweep.learning_rates": "1e-3"})
    assert cfg.train.max_steps == 7  # override wins
    assert cfg.train.batch_size == 2  # YAML kept
    assert cfg.sweep.ranks == [4, 8]
    assert cfg.sweep.learning_rates == [1e-3]  # YAML's "1e-3" string became a float list


def test_override_parsing():
    assert parse_override("sweep.ranks=[1, 2]") == ("sweep.ranks", [1, 2])
    assert parse_override("train.lr_schedule=cosine") == ("train.lr_schedule", "cosine")
    with pytest.raises(UserError, match="section.key=value"):
        parse_override("train.max_steps")


def test_unknown_key_did_you_mean():
    with pytest.raises(UserError, match=r"unknown config key 'train.max_stpes' \(did you mean 'train.max_steps'\?\)"):
        load_config(None, {"train.max_stpes": 1})
    with pytest.raises(UserError, match=r"'train.learning_rte' \(did you mean 'sweep.learning_rates'\?\)"):
        load_config(None, {"train.learning_rte": 1.0})
    with pytest.raises(UserError, match=r"did you mean 'sweep.learning_rates'"):
        load_config(None, {"learning_rates": [1e-3]})


def test_all_problems_reported_together():
    with pytest.raises(UserError) as info:
        load_config(None, {"sweep.ranks": [0, 8, 8], "train.batch_size": 0, "sweep.alpha_policies": ["sqrt"]})
    lines = str(info.value).splitlines()
    assert any("rank 0 is not a positive integer" in x for x in lines)
    assert any("duplicate ranks [8]" in x for x in lines)
    assert any("train.batch_size must be >= 1" in x for x in lines)
    assert any("alpha policy 'sqrt' is unknown" in x for x in lines)


@pytest.mark.parametrize("bad", ["8.5", 8.5, "eight", True])
def test_rank_must_be_integer(bad):
    with pytest.raises(UserError, match="must be an integer"):
        load_config(None, {"sweep.ranks": [bad]})


def test_bad_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(path)
    path.write_text("- a list\n")
    with pytest.raises(UserError, match="must hold a mapping"):
        load_config(path)
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_every_preset_loads_by_name_and_the_default_is_cpu_default():
    from lorarank.config_io import presets

    assert set(presets()) == {"cpu-default", "tiny", "qwen0.5b-ranks", "original"}
    for name in presets():
        load_config(name)  # raises on any unknown key or invalid value
    default = load_config(None)
    assert default == load_config("cpu-default") == load_config("cpu_default")
    assert default.model.name == "smollm2-135m" and default.train.max_steps == 40
    assert load_config("original").model.name == "Qwen/Qwen2.5-7B-Instruct"
    with pytest.raises(UserError, match="pass an existing YAML file or a preset: cpu-default, original"):
        load_config("no-such-preset")


def test_no_config_from_an_empty_directory_is_the_default_preset(tmp_path, monkeypatch, capsys):
    """`lorarank plan` without --config, run from a directory with no configs/, plans cpu-default."""
    import json

    from conftest import run_cli

    monkeypatch.chdir(tmp_path)
    assert run_cli("plan", "--json", "--model", "tiny-random", "--ranks", "2") == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["alpha_policy"] == "proportional"  # cpu-default's policy; Config() alone says constant
    assert not list(tmp_path.iterdir())  # planning wrote nothing


def test_device_and_dtype_selection_without_a_gpu():
    import torch

    from lorarank.config import ModelConfig
    from lorarank.model import check_device_options, resolve_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_dtype("auto", cpu, bf16_supported=False) == torch.float32  # a CPU without bf16 units
    assert resolve_dtype("auto", cuda, bf16_supported=True) == torch.bfloat16
    assert resolve_dtype("auto", cuda, bf16_supported=False) == torch.float16
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    check_device_options(ModelConfig(name="x", load_in_4bit=True), cuda)  # allowed on a GPU
    with pytest.raises(UserError, match="needs a CUDA GPU and none is visible: drop --load-in-4bit"):
        check_device_options(ModelConfig(name="x", load_in_4bit=True), cpu)
