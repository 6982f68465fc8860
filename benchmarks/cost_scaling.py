"""How a lorarank trial's cost grows with rank and with the number of training tokens.

Runs lorarank's training loop (each point in a fresh process, as in throughput.py) for every
combination of --ranks and --records, then fits time = a + b·tokens per rank and reports the
relative LoRA overhead of each rank against the smallest, next to the FLOP prediction
6·r·Σ(d_in+d_out) / (4·N).

    python benchmarks/cost_scaling.py                       # ranks 8 64, 32/64/128 records
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from throughput import leg_lorarank, run_leg  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[8, 64])
    p.add_argument("--records", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cost_scaling.json"))
    args = p.parse_args(argv)
    from throughput import main as _  # noqa: F401  (same defaults as the throughput benchmark)
    from lorarank.analysis.stats import fit_line

    base = argparse.Namespace(model="smollm2-135m", alpha=16.0, dropout=0.05, batch=4, max_length=256, epochs=1.0,
                              lr=2e-4, seed=42, threads=__import__("os").cpu_count(), workdir="/tmp/lorarank-bench")
    points = []
    for n in args.records:  # ranks alternate at every size, so a drift in machine speed hits them alike
        for rank in args.ranks:
            leg = run_leg(leg_lorarank, argparse.Namespace(**vars(base), rank=rank, records=n))
            points.append({"rank": rank, "records": n, "tokens": leg["tokens"], "seconds": leg["seconds"],
                           "tokens_per_second": leg["tokens"] / leg["seconds"],
                           "params_per_rank": leg["params_per_rank"], "matmul_params": leg["matmul_params"]})
            print(f"rank {rank:>3}, {n:>4} records: {leg['tokens']:>6} tokens in {leg['seconds']:6.1f} s "
                  f"({points[-1]['tokens_per_second']:.0f} tok/s)")
    fits = {}
    for rank in args.ranks:
        pts = [q for q in points if q["rank"] == rank]
        f = fit_line([q["tokens"] for q in pts], [q["seconds"] for q in pts])
        fits[rank] = {"seconds_fixed": f.intercept, "ms_per_token": 1e3 * f.slope, "r2": f.r2}
    lo = min(args.ranks)
    mm = points[0]["matmul_params"]
    for rank in args.ranks:
        fits[rank]["overhead_vs_smallest"] = fits[rank]["ms_per_token"] / fits[lo]["ms_per_token"] - 1
        fits[rank]["predicted_overhead_vs_smallest"] = (6 * (rank - lo) * points[0]["params_per_rank"]) / (
            4 * (mm["body"] + mm["head"]) + 6 * lo * points[0]["params_per_rank"])
        print(f"rank {rank:>3}: {fits[rank]['ms_per_token']:.2f} ms/token (+{fits[rank]['seconds_fixed']:.1f} s fixed, "
              f"R² {fits[rank]['r2']:.3f}); vs rank {lo}: {fits[rank]['overhead_vs_smallest']:+.1%} measured, "
              f"{fits[rank]['predicted_overhead_vs_smallest']:+.1%} predicted")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"points": points, "fits": {str(k): v for k, v in fits.items()}}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
