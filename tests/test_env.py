"""LORARANK_CPU: decisions as on another kind of CPU, named in every record; torch's probes otherwise."""

from __future__ import annotations

import pytest
import torch

from lorarank import env
from lorarank.errors import UserError
from lorarank.model import resolve_dtype

CPU = torch.device("cpu")


@pytest.mark.parametrize("profile, expected", [("amx", torch.bfloat16), ("avx512-bf16", torch.bfloat16),
                                               ("avx512", torch.float32), ("avx2", torch.float32)])
def test_a_profile_decides_auto_as_that_cpu_would(monkeypatch, profile, expected):
    monkeypatch.setenv(env.CPU_ENV, profile)
    assert resolve_dtype("auto", CPU) == expected
    described = env.describe(CPU)["cpu"]
    assert described["profile"] == profile  # a record says its precision was decided under a profile
    assert env.bf16_units(described) == (expected == torch.bfloat16)


def test_without_a_profile_torch_probes_decide(monkeypatch):
    monkeypatch.delenv(env.CPU_ENV, raising=False)
    cpu = env.cpu_capability()
    assert "profile" not in cpu
    assert cpu == {"capability": torch.backends.cpu.get_cpu_capability(),
                   "amx_tile": torch.cpu._is_amx_tile_supported(), "avx512_bf16": torch.cpu._is_avx512_bf16_supported()}


def test_an_unknown_profile_is_one_line_with_the_choices(monkeypatch):
    monkeypatch.setenv(env.CPU_ENV, "avx9000")
    with pytest.raises(UserError, match=r"LORARANK_CPU='avx9000' is not a CPU profile: use one of amx, avx512-bf16, "):
        resolve_dtype("auto", CPU)
