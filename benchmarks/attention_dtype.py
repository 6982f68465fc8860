"""Per-example attention on a bf16 base: SDPA in bf16 against SDPA in fp32, one layer at a time.

The lever table (src/lorarank/fastpath/defaults.py) runs per-example SDPA in fp32 on a bf16 base
when that was measured faster on the CPU class. A whole training step cannot resolve this lever on
a CPU without bf16 units: its products are emulated there (~200 s for 4 default-trial steps), and
the steps' spread swamps the attention's share. This script times only what the lever changes: one
SmolLM2-135M attention layer's per-example SDPA (lorarank.fastpath.attention, the conversions to
and from fp32 included), forward and backward, at the segment lengths of the default trial's first
micro-batches, in interleaved pairs (order alternating), so the machine's drift cancels out of the
ratio. Reported: the median time of each setting and the median and quartiles of the per-pair ratio.

    python benchmarks/attention_dtype.py                      # writes benchmarks/results/attention_dtype_<class>.json
    python benchmarks/attention_dtype.py --pairs 10 --out /tmp/attention_dtype.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from common import default_trial, machine, relative, write_report

from lorarank import env, fastpath
from lorarank.fastpath import attention

SETTINGS = {"bf16 SDPA (base)": attention.per_example(attention.split),
            "fp32 SDPA": attention.per_example(attention.split, torch.float32)}


def default_segments(batch: int, count: int) -> tuple[object, list[tuple[int, ...]]]:
    """(the base's first attention module, the example lengths of the default trial's first `count`
    micro-batches at `batch` examples each)."""
    _, base, _, data, steps = default_trial("bfloat16", batch)
    segments = [tuple(len(data.train[i].input_ids) for i in idx) for step in steps for idx in step][:count]
    return base.model.layers[0].self_attn, segments


def one_call(module, attend, lengths: tuple[int, ...], generator: torch.Generator) -> float:
    """Seconds of one forward and backward of `attend` over fresh bf16 q, k, v of the module's shape."""
    cfg = module.config
    heads, kv, dim, t = cfg.num_attention_heads, cfg.num_key_value_heads, module.head_dim, sum(lengths)
    q, k, v = (torch.randn(1, h, t, dim, generator=generator, dtype=torch.bfloat16).requires_grad_()
               for h in (heads, kv, kv))
    start = time.perf_counter()
    out, _ = attend(module, q, k, v, None, scaling=module.scaling, segment_lengths=lengths)
    out.backward(torch.ones_like(out))
    return time.perf_counter() - start


def measure(module, segments: list[tuple[int, ...]], pairs: int) -> dict:
    """Interleaved pairs over the micro-batches in turn: each setting's median and the per-pair ratio."""
    gen = torch.Generator().manual_seed(0)
    names = list(SETTINGS)
    for lengths in segments:  # warm-up: first calls allocate and pick kernels
        for name in names:
            one_call(module, SETTINGS[name], lengths, gen)
    times = {name: [] for name in names}
    for i in range(pairs):
        lengths = segments[i % len(segments)]
        for name in (names if i % 2 else names[::-1]):
            times[name].append(one_call(module, SETTINGS[name], lengths, gen))
    ratios = sorted(a / b for a, b in zip(*times.values()))
    q1, median, q3 = statistics.quantiles(ratios, n=4)
    return {"median_ms": {name: 1e3 * statistics.median(t) for name, t in times.items()},
            "ratio_bf16_over_fp32": {"median": median, "quartiles": [q1, q3]}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8, help="examples per micro-batch, as the default trial")
    p.add_argument("--micro-batches", type=int, default=4, help="the default trial's first micro-batches used")
    p.add_argument("--pairs", type=int, default=40, help="interleaved pairs (at least 4)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", default=None, help="default: benchmarks/results/attention_dtype_<capability class>.json")
    args = p.parse_args(argv)
    if args.pairs < 4 or args.micro_batches < 1 or args.batch < 1:
        p.error("--pairs must be at least 4, --micro-batches and --batch at least 1")
    torch.set_num_threads(args.threads)
    cls = fastpath.capability_class(env.cpu_capability())
    out = args.out or f"benchmarks/results/attention_dtype_{cls}.json"
    module, segments = default_segments(args.batch, args.micro_batches)
    result = measure(module, segments, args.pairs)
    table = fastpath.BY_CAPABILITY[cls].attention_dtype
    faster = "fp32" if result["ratio_bf16_over_fp32"]["quartiles"][0] > 1 else (
        "base" if result["ratio_bf16_over_fp32"]["quartiles"][1] < 1 else None)
    for name, ms in result["median_ms"].items():
        print(f"{name:>18}: {ms:.2f} ms per layer, forward and backward")
    r = result["ratio_bf16_over_fp32"]
    print(f"bf16 / fp32: {r['median']:.2f}x (quartiles {r['quartiles'][0]:.2f}-{r['quartiles'][1]:.2f}); "
          f"the table's attention_dtype for {cls}: {table}"
          + ("" if faster in (None, table) else f" -- the table disagrees: {faster} measured faster here"))
    report = {"machine": machine(args.threads), "capability_class": cls, "load_average": os.getloadavg(),
              "code_commit": env.git_commit(), "settings": {**vars(args), "out": relative(out)},
              "segments": segments, "table_attention_dtype": table, "measured_faster": faster, **result}
    write_report(out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
