"""What ran where: library versions, device, git commit, and peak memory."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

import torch


def log(msg: str) -> None:
    """One progress line that does not break the progress bars."""
    from tqdm.auto import tqdm

    tqdm.write(f"[lorarank] {msg}")


def warn(msg: str) -> None:
    """One warning line on stderr (the run goes on)."""
    from tqdm.auto import tqdm

    tqdm.write(f"[lorarank] warning: {msg}", file=sys.stderr)


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """Commit of the lorarank checkout this code runs from (None for an installed wheel)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    import peft
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {platform.machine()})"


# LORARANK_CPU=<profile> makes lorarank decide as on another kind of CPU: `model.dtype: auto` then
# resolves as it would there, so a test suite on an AVX2 host exercises the bf16 path an AMX host takes
# (and the reverse). It changes decisions only: the kernels torch runs stay this CPU's, and every
# record names the profile it was decided under (`cpu["profile"]`).
CPU_ENV = "LORARANK_CPU"
CPU_PROFILES = {
    "amx": {"capability": "AVX512", "amx_tile": True, "avx512_bf16": True},  # Intel Xeon, Sapphire Rapids on
    "avx512-bf16": {"capability": "AVX512", "amx_tile": False, "avx512_bf16": True},  # AMD EPYC Zen 4 on
    "avx512": {"capability": "AVX512", "amx_tile": False, "avx512_bf16": False},  # Xeon before Sapphire Rapids
    "avx2": {"capability": "AVX2", "amx_tile": False, "avx512_bf16": False},  # no bf16 units
}


def cpu_capability() -> dict:
    """The CPU's vector units as torch sees them: they decide how fast fp32 and bf16 matmuls run
    (bf16 is emulated, and slow, without AVX512-BF16 or AMX). Under LORARANK_CPU, the named
    profile's units instead, with `profile` saying so."""
    profile = os.environ.get(CPU_ENV, "").strip().lower()
    if profile:
        if profile not in CPU_PROFILES:
            from lorarank.errors import UserError

            raise UserError(f"{CPU_ENV}={profile!r} is not a CPU profile: use one of {', '.join(CPU_PROFILES)}, "
                            f"or unset {CPU_ENV} to use this CPU's own units")
        return {**CPU_PROFILES[profile], "profile": profile}
    return {"capability": torch.backends.cpu.get_cpu_capability(), "amx_tile": torch.cpu._is_amx_tile_supported(),
            "avx512_bf16": torch.cpu._is_avx512_bf16_supported()}


def bf16_units(cpu: dict) -> bool:
    """Does a CPU with this `cpu_capability()` multiply bf16 natively (AMX tiles or AVX512-BF16)?"""
    return bool(cpu["amx_tile"] or cpu["avx512_bf16"])


def describe(device: torch.device, compute_dtype: torch.dtype | None = None) -> dict:
    """The environment of a run. `compute_dtype`: the precision the model ran in (its base weights'
    and autocast's dtype; model.compute_dtype), recorded when the caller knows it."""
    out = {"versions": versions(), "device": device_name(device), "cpu": cpu_capability(),
           "git_commit": git_commit(), "platform": platform.platform(), "argv": sys.argv[1:]}
    if compute_dtype is not None:
        out["compute_dtype"] = str(compute_dtype).removeprefix("torch.")
    return out


@contextlib.contextmanager
def quiet_hub():
    """Silence the hub client's per-retry warnings while we try a download: when it fails, the user
    gets our one-line error with the fix, not a screen of connection logs."""
    import logging

    loggers = [logging.getLogger(n) for n in ("huggingface_hub", "transformers", "datasets")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> int:
    """CUDA: peak bytes allocated since the trial began. CPU: the process's peak resident set
    (ru_maxrss, monotonic over the process, so it bounds every trial run so far)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)
