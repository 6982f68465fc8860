"""Mixed precision: which dtype `auto` picks on each machine, and what a bf16 base keeps in fp32.

The machines lorarank runs on differ in their bf16 units (AVX2 only, AVX512-BF16, AMX, CUDA); the
capability is mocked at torch's own probes, the same ones env.cpu_capability reads. Losses of a
bf16 base are compared with fp32 on tiny-random within a stated tolerance.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from lorarank import env, fastpath, lora
from lorarank.analysis.sweep_info import setup_of
from lorarank.builtin_models import tiny_random_model
from lorarank.config import ALL_PROJECTIONS, DataConfig, ModelConfig, TrainConfig
from lorarank.data.format import prepare
from lorarank.model import load_base, resolve_dtype
from lorarank.report.markdown import setup_table
from lorarank.train import collate_packed, completion_loss, train

from conftest import TINY_ARGS, run_cli

CPU = torch.device("cpu")
# (torch's capability string, AMX tiles, AVX512-BF16) of the CPUs lorarank runs on
CPUS = {"avx2": ("AVX2", False, False), "avx512": ("AVX512", False, False),
        "avx512_bf16": ("AVX512", False, True), "amx": ("AVX512", True, True)}
# bf16 against fp32 on tiny-random, relative: measured ≤ 2e-4 for train and eval losses after 6-8
# steps, while training moves the loss by > 3%
LOSS_TOLERANCE = 5e-3


@pytest.fixture
def cpu_is(monkeypatch):
    """Make torch report one of CPUS."""

    def mock(name: str) -> None:
        capability, amx, avx512_bf16 = CPUS[name]
        monkeypatch.delenv(env.CPU_ENV, raising=False)  # torch's probes decide, not a LORARANK_CPU profile
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)

    return mock


@pytest.mark.parametrize("cpu, expected", [("avx2", torch.float32), ("avx512", torch.float32),
                                           ("avx512_bf16", torch.bfloat16), ("amx", torch.bfloat16)])
def test_auto_is_bf16_only_on_a_cpu_with_bf16_units(cpu_is, cpu, expected):
    cpu_is(cpu)
    assert resolve_dtype("auto", CPU) == expected
    assert resolve_dtype("float32", CPU) == torch.float32  # an explicit dtype is always honoured
    assert resolve_dtype("bfloat16", CPU) == torch.bfloat16


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_on_cuda_is_bf16_where_the_gpu_has_it(monkeypatch, cpu_is, native, expected):
    cpu_is("amx")  # the host CPU does not matter

    def is_bf16_supported(including_emulation: bool = True) -> bool:  # torch's default says yes on a T4
        return native or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert resolve_dtype("auto", torch.device("cuda")) == expected


@pytest.mark.parametrize("cpu, dtype, warned", [("avx2", "bfloat16", True), ("avx512_bf16", "bfloat16", False),
                                                ("amx", "bfloat16", False), ("avx2", "auto", False)])
def test_explicit_bf16_without_bf16_units_warns_in_one_line(cpu_is, capsys, cpu, dtype, warned):
    cpu_is(cpu)
    base, _ = load_base(ModelConfig(name="tiny-random", dtype=dtype), CPU)
    assert base.dtype == (torch.bfloat16 if cpu != "avx2" or dtype == "bfloat16" else torch.float32)
    err = capsys.readouterr().err
    assert len(err.splitlines()) == int(warned)
    if warned:
        assert "model.dtype=bfloat16" in err and "70x slower than fp32" in err and "auto picks float32" in err


def weight_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


@pytest.mark.parametrize("cpu, attention_dtype, backward", [("avx2", "fp32", "laid_out"), ("avx512", "fp32", "laid_out"),
                                                            ("avx512_bf16", "fp32", "plain"), ("amx", "fp32", "laid_out")])
def test_lever_defaults_follow_the_measured_table(cpu_is, cpu, attention_dtype, backward):
    """On a bf16 base the bf16 flash attention is slower than fp32's on every CPU class measured (AMX,
    AVX512-BF16, and without bf16 units, where its products are emulated): per-example SDPA runs in
    fp32, and on AVX512-BF16 the fused backward's plain layout was the faster (fastpath/defaults.py);
    an fp32 base runs FAST on every CPU; off the CPU the stock path."""
    cpu_is(cpu)
    levers = fastpath.levers_for(CPU, torch.bfloat16)
    assert levers == dataclasses.replace(fastpath.FAST, attention_dtype=attention_dtype, backward=backward)
    assert fastpath.record(levers, env.cpu_capability(), torch.bfloat16)["table_default"]
    assert fastpath.levers_for(CPU, torch.float32) == fastpath.FAST
    assert fastpath.record(fastpath.FAST, env.cpu_capability(), torch.float32)["table_default"]
    assert fastpath.levers_for(torch.device("cuda"), torch.bfloat16) == fastpath.STOCK
    assert "per-example SDPA (split, in fp32)" in fastpath.describe(fastpath.BY_CAPABILITY["amx"])


def test_a_bf16_base_keeps_adapters_optimizer_and_loss_in_fp32(tiny_base):
    """bf16 base weights (half the bytes); PEFT's adapters, their gradients and AdamW's moments in
    fp32; the loss in fp32; the base untouched by a step."""
    vocab = len(tiny_base[1])
    base = tiny_random_model(vocab, torch.bfloat16).requires_grad_(False)
    assert weight_bytes(base) * 2 == weight_bytes(tiny_random_model(vocab))
    model = lora.attach(base, 4, lora.scaling_for(4, 8, "constant"), 0.1, ALL_PROJECTIONS, 0)
    fastpath.enable(model)
    assert fastpath.fused_layers(model) == 2 * 7
    params = [p for p in model.parameters() if p.requires_grad]
    assert len(params) == 2 * 2 * 7 and all(p.dtype == torch.float32 for p in params)
    weight = model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight
    before = weight.clone()
    opt = torch.optim.AdamW(params, lr=1e-3, fused=True)
    ids = torch.randint(3, vocab, (1, 24), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "position_ids": torch.arange(24)[None], "pred": torch.ones(1, 23, dtype=torch.bool),
             "segments": (10, 14)}
    model.train()
    loss, n = completion_loss(model, batch)
    assert loss.dtype == torch.float32 and n == 23
    loss.backward()
    assert all(p.grad.dtype == torch.float32 for p in params)
    assert all(p.grad.abs().sum() > 0 for name, p in model.named_parameters() if "lora_B" in name)  # A's: B = 0
    opt.step()
    assert {t.dtype for state in opt.state.values() for t in state.values() if t.numel() > 1} == {torch.float32}
    assert weight.dtype == torch.bfloat16 and torch.equal(weight, before)
    lora.detach(model)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_rms_norm_statistics_are_fp32_on_a_bf16_base(arch):
    """transformers' RMSNorm of bf16 activations: the mean square and its rsqrt in fp32, rounded to
    bf16 once before the weight, which a bf16 computation of the same formula is not."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

    torch.manual_seed(0)
    norm = {"llama": LlamaRMSNorm, "qwen2": Qwen2RMSNorm}[arch](64, eps=1e-6).bfloat16()
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.3)
    x = (torch.randn(8, 64) * torch.logspace(-2, 2, 64)).bfloat16()  # a wide dynamic range
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = norm(x)
    xf = x.float()
    in_fp32 = norm.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).bfloat16()
    in_bf16 = norm.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
    assert torch.equal(y, in_fp32) and not torch.equal(y, in_bf16)


def relative_difference(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / abs(y) for x, y in zip(a, b, strict=True))


def test_bf16_training_follows_fp32_losses():
    """8 steps through train.train, dropout on: the same data, seeds and masks in fp32 and in bf16."""
    curves = {}
    for dtype in ("float32", "bfloat16"):
        base, tok = load_base(ModelConfig(name="tiny-random", dtype=dtype), CPU)
        data = prepare(DataConfig(suite_size=48), tok)
        model = lora.attach(base, 8, lora.scaling_for(8, 16, "constant"), 0.05, ALL_PROJECTIONS, 42)
        fastpath.enable(model, fastpath.BY_CAPABILITY["amx"])  # the levers a bf16-unit CPU trains with
        cfg = TrainConfig(max_steps=8, batch_size=4, grad_accum=1, log_every=1, eval_every=4)
        res = train(model, data.train, data.eval, cfg, 1e-3, 42, tok.pad_token_id, CPU)
        curves[dtype] = res.train_losses, res.eval_losses
        if dtype == "bfloat16":
            assert model.get_base_model().dtype == torch.bfloat16 and fastpath.fused_layers(model) == 2 * 7
            with torch.no_grad():
                packed, _ = completion_loss(model, collate_packed(data.eval[:2], CPU))
            assert packed.dtype == torch.float32
    (train32, eval32), (train16, eval16) = curves["float32"], curves["bfloat16"]
    assert train32[-1] < train32[0] * 0.97  # it learns, by more than the tolerance
    assert relative_difference(train16, train32) < LOSS_TOLERANCE
    assert relative_difference(eval16, eval32) < LOSS_TOLERANCE


def test_cli_bf16_run_matches_the_fp32_sweep(tiny_sweep, tmp_path):
    """`model.dtype=bfloat16` through the CLI on the tiny preset: the rank-4 trial's losses within the
    tolerance of the fp32 sweep's; the report says which precision ran, and on which CPU."""
    out, ref = tmp_path / "bf16", tmp_path / "fp32"  # the reference pinned to fp32: auto is bf16 on AMX CPUs
    assert run_cli("run", *TINY_ARGS, "--output-dir", str(out), "--ranks", "4", "model.dtype=bfloat16") == 0
    assert run_cli("run", *TINY_ARGS, "--output-dir", str(ref), "--ranks", "4", "model.dtype=float32") == 0
    ours = json.loads((out / "rank_4" / "run_data.json").read_text())
    fp32 = json.loads((ref / "rank_4" / "run_data.json").read_text())
    assert ours["environment"]["compute_dtype"] == "bfloat16" and fp32["environment"]["compute_dtype"] == "float32"
    assert ours["fastpath"]["levers"] == dataclasses.asdict(fastpath.levers_for(CPU, torch.bfloat16))  # the runner's
    assert fp32["fastpath"]["levers"] == dataclasses.asdict(fastpath.FAST) and fp32["fastpath"]["table_default"]
    assert relative_difference(ours["eval_losses"], fp32["eval_losses"]) < LOSS_TOLERANCE
    assert relative_difference(ours["train_losses"], fp32["train_losses"]) < LOSS_TOLERANCE
    readme = (out / "README.md").read_text()
    cpu = env.cpu_capability()
    assert "| Model | `tiny-random` (bfloat16) |" in readme and f"; CPU {cpu['capability']}, bf16 units: " in readme
    sweep = json.loads((tiny_sweep / "sweep.json").read_text())  # as if run with `auto`, resolved to float32
    config = {**sweep["config"], "model": {**sweep["config"]["model"], "dtype": "auto"}}
    resolved = dict(sweep, config=config, environment={**sweep["environment"], "compute_dtype": "float32"})
    assert "| Model | `tiny-random` (auto: float32) |" in setup_table(setup_of(resolved))
