"""How a lorarank trial's cost grows with rank and with the number of training tokens.

Runs lorarank's training loop (each point in a fresh process, as in throughput.py) for every
combination of --ranks and --records, then fits time = a + b·tokens per rank and reports the
relative LoRA overhead of each rank against the smallest, next to the FLOP prediction from
cost.train_flops_per_token (LM head on the completion positions the loop computes). Separate runs
drift with the machine's speed, so the overhead is also measured in interleaved steps in one process
(one model copy per rank, the same batches).

    python benchmarks/cost_scaling.py                       # ranks 8 64, 32/64/128 records
    python benchmarks/cost_scaling.py --ranks 2 4 --records 8 16 --interleaved-steps 2 --out /tmp/cost_scaling.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch
from common import CPU, Step, attach, examples, leg_lorarank, load, machine, relative, run_leg, write_report

from lorarank import cost
from lorarank.analysis.stats import fit_line
from lorarank.train import collate_packed


def interleaved_overhead(ranks: list[int], records: int, steps: int, threads: int) -> dict[int, dict]:
    """Step time of each rank over the smallest, in interleaved steps in one process (one model copy
    per rank, the same packed batches): robust to the machine's drift, unlike separate runs."""
    args = argparse.Namespace(model="smollm2-135m", records=records, seed=42, max_length=256)
    torch.set_num_threads(threads)
    steppers = {}
    for r in ranks:
        base, tok = load(args)
        model = attach(base, r, 16.0, 0.05, 42)
        model.train()
        steppers[r] = Step(model, 2e-4)
    exs = examples(args, tok)
    batches = [collate_packed(exs[i:i + 4], CPU) for i in range(0, len(exs) - 3, 4)]
    for step in steppers.values():
        step(batches[0])  # warm-up
    ratios = {r: [] for r in ranks}
    for i in range(steps):
        b = batches[1 + i % (len(batches) - 1)]
        order = ranks if i % 2 == 0 else ranks[::-1]
        t = {r: steppers[r](b) for r in order}
        for r in ranks:
            ratios[r].append(t[r] / t[min(ranks)])
    out = {}
    for r in ranks:
        q1, med, q3 = statistics.quantiles(ratios[r], n=4) if steps > 1 else ratios[r] * 3
        out[r] = {"step_time_over_smallest": med, "quartiles": [q1, q3]}
    return out


def predicted_over_smallest(point: dict, rank: int, smallest: int) -> float:
    """Training FLOPs per token at `rank` over those at the smallest rank, minus 1, for the token mix
    the point trained on."""
    shape, f = cost.Shape.from_run_data(point), cost.head_share(point["completion_tokens"], point["tokens"])
    return cost.train_flops_per_token(shape, rank, f) / cost.train_flops_per_token(shape, smallest, f) - 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[8, 64])
    p.add_argument("--records", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--interleaved-steps", type=int, default=24, help="step pairs for the in-process rank comparison")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", default="benchmarks/results/cost_scaling.json")
    args = p.parse_args(argv)

    base = argparse.Namespace(model="smollm2-135m", alpha=16.0, dropout=0.05, batch=4, max_length=256, epochs=1.0,
                              lr=2e-4, seed=42, threads=args.threads)  # the throughput benchmark's defaults
    points = []
    for n in args.records:  # ranks alternate at every size, so a drift in machine speed hits them alike
        for rank in args.ranks:
            leg = run_leg(leg_lorarank, argparse.Namespace(**vars(base), rank=rank, records=n))
            points.append({"rank": rank, "records": n, "tokens": leg["tokens"], "completion_tokens": leg["completion_tokens"],
                           "seconds": leg["seconds"], "tokens_per_second": leg["tokens"] / leg["seconds"],
                           "params_per_rank": leg["params_per_rank"], "matmul_params": leg["matmul_params"]})
            print(f"rank {rank:>3}, {n:>4} records: {leg['tokens']:>6} tokens in {leg['seconds']:6.1f} s "
                  f"({points[-1]['tokens_per_second']:.0f} tok/s)")
    fits = {}
    for rank in args.ranks:
        pts = [q for q in points if q["rank"] == rank]
        f = fit_line([q["tokens"] for q in pts], [q["seconds"] for q in pts])
        fits[rank] = {"seconds_fixed": f.intercept, "ms_per_token": 1e3 * f.slope, "r2": f.r2}
    lo = min(args.ranks)
    for rank in args.ranks:
        fits[rank]["overhead_vs_smallest"] = fits[rank]["ms_per_token"] / fits[lo]["ms_per_token"] - 1
        fits[rank]["predicted_overhead_vs_smallest"] = predicted_over_smallest(points[-1], rank, lo)
        print(f"rank {rank:>3}: {fits[rank]['ms_per_token']:.2f} ms/token (+{fits[rank]['seconds_fixed']:.1f} s fixed, "
              f"R² {fits[rank]['r2']:.3f}); vs rank {lo}: {fits[rank]['overhead_vs_smallest']:+.1%} measured, "
              f"{fits[rank]['predicted_overhead_vs_smallest']:+.1%} predicted")
    inter = interleaved_overhead(args.ranks, 64, args.interleaved_steps, args.threads)
    for rank in args.ranks:
        fits[rank]["interleaved"] = inter[rank]
        q1, q3 = inter[rank]["quartiles"]
        print(f"rank {rank:>3}: interleaved step time / rank {lo}'s = {inter[rank]['step_time_over_smallest']:.3f} "
              f"(quartiles {q1:.3f}-{q3:.3f}); predicted {1 + fits[rank]['predicted_overhead_vs_smallest']:.3f}")
    report = {"machine": machine(args.threads), "points": points, "fits": {str(k): v for k, v in fits.items()}}
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
