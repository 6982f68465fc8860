"""Where a training step's time goes: matmul and everything else, per precision, for 4 steps of the
default trial (the cpu-default preset's data, rank 8, batch 8, its learning rate and dropout).

    python benchmarks/step_profile.py                        # both precisions where the CPU has bf16 units
    python benchmarks/step_profile.py --dtype bfloat16 --out /tmp/today.json   # with PYTHONPATH=<a checkout>/src: that code
    python benchmarks/step_profile.py --dtype bfloat16 --lever attention_dtype=fp32   # the table's levers, one changed

The trial's model and adapter are set up as the runner sets them up, then `--warmup` steps run
unprofiled and the next 4 steps under torch.profiler, `--repeats` times over (medians reported: a
2-core machine's speed drifts by 10-30% within a minute). Matmul time is the self time of the
profiler's matrix products (MATMUL_OPS); the non-matmul time is the steps' wall time under the
profiler minus that: elementwise ops, dtype conversions, attention, the loss, dropout, the optimizer
and the Python between them. The process's CPU time is recorded too: on a machine shared with other
work, where wall times stretch with the load, CPU time at --threads 1 is the steadier figure to
compare. The script imports whichever lorarank is on the path, so one run of it on an older checkout
(PYTHONPATH=<checkout>/src) and one on this one, on the same machine, compare the two.
Writes JSON (--out) with the CPU capability, the load average and the top non-matmul ops.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

import torch
from common import CPU, default_dtypes, default_trial, machine, relative, write_report

from lorarank import fastpath, lora
from lorarank.train import completion_loss, make_batch

# the profiler's names of dense matrix products (self time: the kernels themselves)
MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation",
              "aten::mkldnn_rnn", "aten::linear_backward"}
STEPS = 4


def set_up(dtype: str, rank: int, batch: int, changes: dict[str, str]):
    """(model with its adapter, optimizer, params, step batches, the levers it runs: their repr, or "FAST"
    for a checkout older than the lever table) of the default trial in `dtype`, with the table's
    levers changed by `changes` (lever name -> value)."""
    cfg, base, tok, data, steps = default_trial(dtype, batch)
    scaling = lora.scaling_for(rank, cfg.lora.alpha, cfg.sweep.alpha_policies[0])
    model = lora.attach(base, rank, scaling, cfg.lora.dropout, cfg.lora.target_modules, cfg.sweep.seeds[0])
    levers = "FAST"  # older checkouts enable the fast path inside lora.attach
    if hasattr(fastpath, "levers_for"):  # set up as the runner does
        on = with_changes(fastpath.levers_for(CPU, base.dtype), changes)
        fastpath.enable(model, on)
        levers = repr(on)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.sweep.learning_rates[0], fused=True)
    batches = [[make_batch([data.train[i] for i in idx], tok.pad_token_id, CPU, True) for idx in step]
               for step in steps]
    return model, opt, params, batches, levers


def with_changes(levers, changes: dict[str, str]):
    """`levers` with the named fields set; the values are strings, `true`/`false` for the switches."""
    values = {}
    for k, v in changes.items():
        if isinstance(getattr(levers, k), bool):
            if v.lower() not in ("true", "false"):
                raise ValueError(f"{k}={v!r} (choose from true, false)")
            v = v.lower() == "true"
        values[k] = v
    return dataclasses.replace(levers, **values)


def parse_changes(p: argparse.ArgumentParser, items: list[str]) -> dict[str, str]:
    """--lever NAME=VALUE items -> {name: value}, checked against this checkout's Levers."""
    if items and not hasattr(fastpath, "Levers"):
        p.error("--lever needs a checkout with the lever table (fastpath.Levers)")
    names = {f.name for f in dataclasses.fields(fastpath.Levers)} if items else set()
    changes = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in names:
            p.error(f"--lever {item!r}: give NAME=VALUE with NAME one of {', '.join(sorted(names))}")
        changes[name] = value
    try:
        with_changes(fastpath.FAST, changes)
    except ValueError as e:
        p.error(f"--lever: {e}")
    return changes


def step(model, opt, params, micro) -> None:
    n = sum(int(b["pred"].sum()) for b in micro)
    for b in micro:
        loss, _ = completion_loss(model, b)
        (loss / n).backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def timed_steps(model, opt, params, timed) -> tuple[float, float]:
    """(wall, process CPU) seconds of one pass over the timed steps."""
    t0, c0 = time.perf_counter(), time.process_time()
    for micro in timed:
        step(model, opt, params, micro)
    return time.perf_counter() - t0, time.process_time() - c0


def profiled_steps(model, opt, params, timed) -> dict:
    """One pass over the timed steps under torch.profiler: wall, CPU, matmul self time, other ops."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        wall, cpu = timed_steps(model, opt, params, timed)
    ops = {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()}
    matmul = sum(t for k, t in ops.items() if k in MATMUL_OPS)
    return {"wall": wall, "cpu": cpu, "matmul": matmul, "ops": ops}


def profile(dtype: str, rank: int, batch: int, warmup: int, repeats: int, changes: dict[str, str]) -> dict:
    """The same 4 steps profiled `repeats` times (the model trains on; each pass is a like-for-like
    sample of the step's cost): medians, with every pass's figures kept."""
    torch.manual_seed(0)
    model, opt, params, batches, levers = set_up(dtype, rank, batch, changes)
    for micro in batches[:warmup]:
        step(model, opt, params, micro)
    timed = batches[warmup:warmup + STEPS]
    plain, plain_cpu = timed_steps(model, opt, params, timed)
    passes = [profiled_steps(model, opt, params, timed) for _ in range(repeats)]
    wall, cpu, matmul = (statistics.median(p[k] for p in passes) for k in ("wall", "cpu", "matmul"))
    non_matmul = statistics.median(p["wall"] - p["matmul"] for p in passes)
    ops = {k: statistics.median(p["ops"].get(k, 0.0) for p in passes) for k in passes[0]["ops"]}
    others = sorted(((k, t) for k, t in ops.items() if k not in MATMUL_OPS and t > 0), key=lambda kv: -kv[1])
    tokens = sum(b["input_ids"].numel() for micro in timed for b in micro)
    return {"dtype": dtype, "steps": STEPS, "tokens": tokens, "repeats": repeats,
            "seconds_unprofiled": plain, "seconds_profiled": wall, "cpu_seconds_unprofiled": plain_cpu,
            "cpu_seconds_profiled": cpu, "matmul_seconds": matmul, "non_matmul_seconds": non_matmul,
            "matmul_share": matmul / wall, "seconds_profiled_min": min(p["wall"] for p in passes),
            "non_matmul_seconds_min": min(p["wall"] - p["matmul"] for p in passes),
            "per_pass": [{"seconds": p["wall"], "cpu_seconds": p["cpu"], "matmul_seconds": p["matmul"]}
                         for p in passes],
            "levers": levers,
            "top_non_matmul_ops": dict(others[:15])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", dest="dtypes", nargs="+", choices=("float32", "bfloat16"), default=default_dtypes())
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2, help="unprofiled steps before the 4 profiled ones")
    p.add_argument("--repeats", type=int, default=5, help="profiled passes over the 4 steps; medians reported")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--lever", action="append", default=[], metavar="NAME=VALUE",
                   help="change one of the table's levers (fastpath.Levers field), e.g. attention_dtype=fp32; repeatable")
    p.add_argument("--out", default="benchmarks/results/step_profile.json")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be at least 1 (got {args.repeats})")
    changes = parse_changes(p, args.lever)
    torch.set_num_threads(args.threads)
    from lorarank import env

    report = {"machine": machine(args.threads), "load_average": os.getloadavg(),
              "code_commit": env.git_commit(), "settings": {**vars(args), "out": relative(args.out)}, "precisions": {}}
    for dtype in args.dtypes:
        r = profile(dtype, args.rank, args.batch, args.warmup, args.repeats, changes)
        report["precisions"][dtype] = r
        print(f"{dtype:>8}: {r['tokens']} tokens in {r['seconds_profiled']:.2f} s profiled "
              f"({r['seconds_unprofiled']:.2f} s unprofiled): matmul {r['matmul_seconds']:.2f} s, "
              f"non-matmul {r['non_matmul_seconds']:.2f} s (medians of {r['repeats']} passes; fastest pass "
              f"{r['seconds_profiled_min']:.2f} s, non-matmul {r['non_matmul_seconds_min']:.2f} s); "
              f"levers {r['levers']}")
        print("          top non-matmul: " + ", ".join(f"{k} {t:.3f}" for k, t in list(r["top_non_matmul_ops"].items())[:8]))
    report["load_average_after"] = os.getloadavg()
    print(f"load average {report['load_average']} -> {report['load_average_after']}")
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
