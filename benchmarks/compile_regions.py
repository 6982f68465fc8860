"""torch.compile of a decoder layer's elementwise regions against the eager code a trial runs today.

    python benchmarks/compile_regions.py                      # fp32 and bf16, 300 tokens (a default-trial micro-batch)
    python benchmarks/compile_regions.py --dtype bfloat16 --tokens 600

The regions of a Llama-family layer between its products, at SmolLM2-135M's sizes (9 query heads and
3 key/value heads of 64, hidden 576, MLP 1536, 30 layers):
- rotary: transformers' apply_rotary_pos_emb on q and k (one call a layer);
- swiglu: silu(gate) · up, as transformers' MLP computes it (one a layer);
- norm: RMSNorm, eager as lorarank runs it (the fused function of fastpath/norm.py), compiled from
  the plain maths, transformers' module written out (two a layer);
- add_norm: the residual add and the next RMSNorm together (an add, then the fused RMSNorm; compiled
  as one region, which a trial could only use by rewriting transformers' decoder layer).
Each is compiled with dynamic lengths (`dynamic=True`), so one compilation serves every micro-batch;
the first calls, at two lengths, are timed in a fresh inductor cache (cold: the cost on a machine's
first run) and again in a child process over the same cache (warm: the cost of every later process,
e.g. each Ray worker). Forward and backward are timed together, eager and compiled alternating,
medians of `--repeats` rounds, on inputs of one length per round (300, 299, ... tokens). Compiled
values and gradients are checked against eager (largest relative difference, printed and recorded).

Reported per region and precision: µs per call, the saving per training step (calls a layer x layers x
the difference; a default-trial step is one micro-batch) and the steps a sweep must train before the
compile time is paid back (a default trial trains 40). Elementwise bf16 kernels run natively on every
CPU, so the bf16 figures hold without bf16 units; the products are not part of any region. Writes
JSON (--out) with the CPU capability.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from common import machine, relative, write_report
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from lorarank.fastpath.norm import RMSNormFunction, inverse_rms

HEADS, KV_HEADS, HEAD_DIM, HIDDEN, MLP, LAYERS = 9, 3, 64, 576, 1536, 30  # SmolLM2-135M
EPS = 1e-5
CALLS_PER_LAYER = {"rotary": 1, "swiglu": 1, "norm": 2, "add_norm": 2}
STEPS_PER_TRIAL = 40  # the cpu-default trial (train.max_steps), one micro-batch of ~300 tokens a step


def swiglu(gate, up):
    return F.silu(gate) * up


def norm_eager(x, weight):
    return RMSNormFunction.apply(x, weight, EPS)


def norm_plain(x, weight):
    """transformers' RMSNorm as tensor ops: statistics in fp32, rounded to x's dtype, then scaled."""
    x32 = x.float()
    return weight * (x32 * inverse_rms(x32, EPS)).to(x.dtype)


def add_norm_eager(x, residual, weight):
    """What a trial runs: the residual add, then the fused RMSNorm."""
    h = x + residual
    return h, norm_eager(h, weight)


def add_norm_plain(x, residual, weight):
    """The same maths as tensor ops, for the compiler to fuse."""
    h = x + residual
    return h, norm_plain(h, weight)


REGIONS = {"rotary": (apply_rotary_pos_emb, apply_rotary_pos_emb), "swiglu": (swiglu, swiglu),
           "norm": (norm_eager, norm_plain), "add_norm": (add_norm_eager, add_norm_plain)}  # name: (eager, what is compiled)


def inputs(region: str, tokens: int, dtype: torch.dtype, seed: int = 0) -> tuple:
    """A region's arguments at `tokens` tokens: the differentiable ones require grad."""
    g = torch.Generator().manual_seed(seed)

    def leaf(*shape):
        return torch.randn(*shape, generator=g).to(dtype).requires_grad_(True)

    if region == "rotary":
        angles = torch.rand(1, tokens, HEAD_DIM, generator=g) * 6.28
        return leaf(1, HEADS, tokens, HEAD_DIM), leaf(1, KV_HEADS, tokens, HEAD_DIM), angles.cos().to(dtype), \
            angles.sin().to(dtype)
    if region == "swiglu":
        return leaf(1, tokens, MLP), leaf(1, tokens, MLP)
    weight = (1 + 0.1 * torch.randn(HIDDEN, generator=g)).to(dtype)  # frozen, as in a LoRA trial
    if region == "norm":
        return leaf(1, tokens, HIDDEN), weight
    return leaf(1, tokens, HIDDEN), leaf(1, tokens, HIDDEN), weight


def forward_backward(fn, args) -> list[torch.Tensor]:
    """Outputs, then the gradients of the inputs that require them, from a fixed upstream gradient."""
    outs = fn(*args)
    outs = outs if isinstance(outs, tuple) else (outs,)
    grads = [torch.full_like(o, 0.5) for o in outs]
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    return [o.detach() for o in outs] + list(torch.autograd.grad(outs, leaves, grads))


def compiled(region: str):
    return torch.compile(REGIONS[region][1], dynamic=True)


def first_calls(region: str, tokens: int, dtype: torch.dtype) -> tuple:
    """(the compiled region, seconds of its first calls at two lengths: tracing, code generation and
    the C++ build, or loading them from the cache)."""
    fn = compiled(region)
    t0 = time.perf_counter()
    for n in (tokens, tokens - 43):
        forward_backward(fn, inputs(region, n, dtype))
    return fn, time.perf_counter() - t0


def largest_difference(region: str, fn, tokens: int, dtype: torch.dtype) -> float:
    """max |compiled − eager| / max |eager| over every output and gradient."""
    args = inputs(region, tokens, dtype, seed=1)
    eager = forward_backward(REGIONS[region][0], args)
    comp = forward_backward(fn, args)
    return max(float((c.float() - e.float()).abs().max() / e.float().abs().max().clamp_min(1e-30))
               for c, e in zip(comp, eager))


def per_call(fn, region: str, tokens: int, dtype: torch.dtype, calls: int) -> float:
    """Seconds per forward and backward of `fn`."""
    args = inputs(region, tokens, dtype)
    t0 = time.perf_counter()
    for _ in range(calls):
        forward_backward(fn, args)
    return (time.perf_counter() - t0) / calls


def measure(region: str, dtype_name: str, tokens: int, repeats: int, calls: int) -> dict:
    dtype = getattr(torch, dtype_name)
    fn, cold = first_calls(region, tokens, dtype)
    times = {"eager": [], "compiled": []}
    for r in range(repeats):  # alternating, so drift hits both alike
        for kind, f in (("eager", REGIONS[region][0]), ("compiled", fn)):
            times[kind].append(per_call(f, region, tokens - r, dtype, calls))
    eager, comp = (statistics.median(times[k]) for k in ("eager", "compiled"))
    saving = (eager - comp) * CALLS_PER_LAYER[region] * LAYERS  # seconds per training step
    return {"region": region, "dtype": dtype_name, "eager_us": eager * 1e6, "compiled_us": comp * 1e6,
            "speedup": eager / comp, "compile_cold_seconds": cold,
            "largest_relative_difference": largest_difference(region, fn, tokens, dtype),
            "step_saving_ms": saving * 1e3, "steps_to_repay_cold": steps_to_repay(cold, saving)}


def steps_to_repay(compile_seconds: float, saving: float) -> float | None:
    """Training steps whose saving (seconds a step) adds up to the compile time; None: never."""
    return compile_seconds / saving if saving > 0 else None


def warm_compile_times(args, cache: str) -> dict:
    """The first calls' seconds per region and precision in a new process over a filled cache."""
    cmd = [sys.executable, __file__, "--warm-only", "--tokens", str(args.tokens), "--dtype", *args.dtypes]
    out = subprocess.run(cmd, env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", dest="dtypes", nargs="+", choices=("float32", "bfloat16"),
                   default=["float32", "bfloat16"])
    p.add_argument("--tokens", type=int, default=300, help="tokens per call (a default-trial micro-batch: ~300)")
    p.add_argument("--repeats", type=int, default=7, help="alternating rounds; medians reported")
    p.add_argument("--calls", type=int, default=20, help="calls per timing")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", default="benchmarks/results/compile_regions.json")
    p.add_argument("--warm-only", action="store_true", help=argparse.SUPPRESS)  # the child of warm_compile_times
    args = p.parse_args(argv)
    if args.tokens < 64 or args.repeats < 1 or args.calls < 1:
        p.error("--tokens must be at least 64 (two lengths are compiled: tokens and tokens - 43), "
                "--repeats and --calls at least 1")
    torch.set_num_threads(args.threads)
    if args.warm_only:
        print(json.dumps({f"{d}/{r}": first_calls(r, args.tokens, getattr(torch, d))[1]
                          for d in args.dtypes for r in REGIONS}))
        return 0
    with tempfile.TemporaryDirectory(prefix="inductor-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # cold: nothing compiled before
        rows = [measure(r, d, args.tokens, args.repeats, args.calls) for d in args.dtypes for r in REGIONS]
        warm = warm_compile_times(args, cache)
    for row in rows:
        row["compile_warm_seconds"] = w = warm[f"{row['dtype']}/{row['region']}"]
        row["steps_to_repay_warm"] = steps_to_repay(w, row["step_saving_ms"] / 1e3)
        repay = (f"repaid after {row['steps_to_repay_cold']:.0f} steps cold, {row['steps_to_repay_warm']:.0f} warm"
                 if row["step_saving_ms"] > 0 else "never repaid")
        print(f"{row['dtype']:>8} {row['region']:>8}: eager {row['eager_us']:6.0f} us, compiled "
              f"{row['compiled_us']:6.0f} us ({row['speedup']:.2f}x); first calls {row['compile_cold_seconds']:.1f} s "
              f"cold, {w:.1f} s warm; {row['step_saving_ms']:+.1f} ms a step, {repay}; "
              f"largest difference {row['largest_relative_difference']:.1e}")
    write_report(args.out, {"machine": machine(args.threads), "settings": {**vars(args), "out": relative(args.out)},
                            "steps_per_trial": STEPS_PER_TRIAL, "regions": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
