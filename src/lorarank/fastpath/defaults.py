"""The fast path's lever settings per CPU capability, each entry with the measurement behind it.

Which setting of a lever is faster depends on the CPU's vector units: on a CPU with AMX tiles,
bf16 products run ~6x faster than fp32, but the bf16 flash-attention backward is 8x slower than its
fp32 counterpart; on AVX512-BF16 without AMX attention is faster in fp32 too, and so it is without
bf16 units, where the bf16 flash kernels' inner products are emulated.
benchmarks/levers.py measures every lever on the machine it runs on, writes the result under the
machine's capability class (`capability_class`), and says where this table disagrees with what it
measured. The table is for a half-precision base; an fp32 base runs FAST on every class (BY_CAPABILITY).

    class          levers                         measured
    amx            attention_dtype=fp32, the      SmolLM2-135M rank 8, packed batch 8, bf16 base: 472
                   rest FAST                      tok/s with per-example SDPA in fp32 against 286 for the
                                                  fp32 trial (1.65x); with SDPA in bf16 the step ran no
                                                  faster than fp32 and the flash backward took 28% of it,
                                                  8x its fp32 time. adapter_dtype=fp32 lowered the 472 to
                                                  429 tok/s (2-core Xeon, AMX + AVX512-BF16, torch 2.13)
    avx512_bf16    attention_dtype=fp32,          SmolLM2-135M rank 8, packed batch 8, bf16 base, 16-24
                   backward=plain, the rest FAST  interleaved step pairs per lever: SDPA in bf16 made the
                                                  step 0.82x as fast as SDPA in fp32 (quartiles 0.74-0.90;
                                                  again 1/1.24x), its flash backward 0.67 s of 4
                                                  default-trial steps; adapter products in fp32 instead of
                                                  bf16 1/1.20x (1/1.23x); the fused layer 1.13x (1.14x),
                                                  with its dropout 1.39x (1.54x); the fused RMSNorm 1.048x
                                                  and 1.040x (quartiles 1.034-1.063, 1.009-1.065); the
                                                  laid-out backward 0.983x and 0.986x of the plain one
                                                  (quartiles 0.976-0.994; the r-row layouts were chosen
                                                  for MKL's fp32 products, and bf16 products run in
                                                  oneDNN), and with plain in the table the laid-out one
                                                  1.002x (0.980-1.018): no faster, so plain
                                                  (benchmarks/results/levers_avx512_bf16_bfloat16*.json,
                                                  2-core AMD EPYC with AVX512-BF16, no AMX, torch 2.13)
    no_bf16_units  attention_dtype=fp32, the      a bf16 base (chosen explicitly: `auto` is fp32 here,
                   rest FAST                      where bf16 products are emulated): per-example SDPA of
                                                  one layer, forward and backward, at the default
                                                  trial's first 4 micro-batches (8 examples, 28-53
                                                  tokens), 13.8 ms in bf16 against 7.35 ms in fp32 with
                                                  the conversions, 1.86x (quartiles 1.77-1.94, 40
                                                  interleaved pairs, benchmarks/attention_dtype.py,
                                                  attention_dtype_no_bf16_units.json), since the bf16
                                                  flash kernels' inner products are emulated too (the
                                                  bf16 flash backward 1.21-1.31 s of 4 default-trial
                                                  steps, the fp32 one 0.40-0.63 s; the steps' total
                                                  non-matmul time scattered by half between runs, so
                                                  those totals decide nothing: step_profile.py, 2-core
                                                  AVX2 EPYC, torch 2.13). On an fp32 base: FAST,
                                                  step time without each lever: fused layer 1.08x, with
                                                  its dropout 1.23x, per-example attention 1.05x at batch 4
                                                  and 1.14x at batch 8 (benchmarks/results/levers.json,
                                                  levers_batch8.json: fp32 base, 2-core AMD EPYC); the
                                                  dtype levers are no-ops in fp32, the precision `auto`
                                                  picks there; the fused RMSNorm neither helps nor costs
                                                  in fp32 (0.997x, quartiles 0.983-1.011, batch 8) and is
                                                  on for a bf16 base chosen explicitly. Every lever again
                                                  at batch 8, 16 pairs, on a slower AVX2 EPYC whose step
                                                  times scatter more (levers_no_bf16_units_float32.json):
                                                  no lever faster off; fused layer with its dropout
                                                  1.20x, per-example attention 1.21x, packing 1.36x, the
                                                  RMSNorm 1.005x; the plain backward's step 0.98x the
                                                  laid-out one's (quartiles 0.86-1.09): none
                                                  contradicts FAST

Off the CPU (CUDA) the stock path runs: every lever here was measured on CPUs.
"""

from __future__ import annotations

import dataclasses

import torch

from lorarank.fastpath.levers import FAST, STOCK, Levers
from lorarank.model import HALF_PRECISION

BY_CAPABILITY: dict[str, Levers] = {
    "amx": dataclasses.replace(FAST, attention_dtype="fp32"),
    "avx512_bf16": dataclasses.replace(FAST, attention_dtype="fp32", backward="plain"),
    "no_bf16_units": dataclasses.replace(FAST, attention_dtype="fp32"),
}
"""The levers on a half-precision base. An fp32 base runs FAST on every class: the dtype levers are
no-ops in fp32, and the one layout the table changes is slower there (on the AVX512-BF16 EPYC, an
fp32 base: the plain backward 1/0.963x the laid-out one's speed, quartiles 0.927-0.999, 16 pairs,
benchmarks/results/levers_avx512_bf16_float32_layout.json)."""


def capability_class(cpu: dict) -> str:
    """The table's key for a CPU described by env.cpu_capability()."""
    if cpu["amx_tile"]:
        return "amx"
    return "avx512_bf16" if cpu["avx512_bf16"] else "no_bf16_units"


def table_entry(cpu: dict, dtype: torch.dtype) -> Levers:
    """The table's levers for a CPU (env.cpu_capability()) and a base computing in `dtype`."""
    return BY_CAPABILITY[capability_class(cpu)] if dtype in HALF_PRECISION else FAST


def levers_for(device: torch.device, dtype: torch.dtype, cpu: dict | None = None) -> Levers:
    """The levers a trial on `device` with a base computing in `dtype` runs with: the table's entry
    for this CPU (`cpu`: its env.cpu_capability(), read from the machine when None), STOCK off the CPU."""
    if device.type != "cpu":
        return STOCK
    from lorarank import env

    return table_entry(cpu or env.cpu_capability(), dtype)
