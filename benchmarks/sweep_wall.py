"""Sweep wall time: the default 4-rank sweep in lorarank, in each precision, vs the peer stack run once per rank.

lorarank: one `lorarank run` process (the cpu-default preset) per `--dtype` (`model.dtype=...`: model
loaded once, data tokenized once, every trial evaluated, scored for task accuracy and analysed, report
written). Peer: `benchmarks/peer.py` once per rank in a fresh process, as the original experiment did
(its own imports, model load, tokenization, training, evaluation every eval_every steps and at the
end, adapter save), in each configuration of those precisions (peer.PRECISIONS). Same config, same
steps, same data. Wall clock of whole processes; the machine's matmul peaks and CPU capability recorded.

Also the floor per precision: the least time lorarank's training and evaluation could take here, all
their model FLOPs (cost.py, LM head on the completion positions the loop computes) at the rate the
frozen products alone reach in that precision at the same shapes (common.gemm_rate), everything else free.

    python benchmarks/sweep_wall.py                        # writes benchmarks/results/sweep_wall.json
    python benchmarks/sweep_wall.py --floor-only           # (re)computes the floors of a recorded run
    python benchmarks/sweep_wall.py --config tiny --dtype float32 bfloat16 --out /tmp/sweep_wall.json   # a functional check
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, default_dtypes, from_root, gemm_rate, machine, matmul_peaks, relative

from lorarank import cost


def timed(cmd: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    return time.perf_counter() - t0


def gemm_floor(config: str, runs: dict, dtype: str) -> dict:
    """Seconds the sweep's training and evaluation need if all their model FLOPs (frozen products,
    LoRA products and the LM head on response positions, as the loop computes them) ran at the rate
    the frozen products reach alone in `dtype` at the same shapes. A lower bound: attention, norms, the
    optimizer, decoding, loading and the report are taken as free, and the thin LoRA products as fast
    as big ones."""
    import dataclasses
    import math

    import torch

    from lorarank.config import load_config
    from lorarank.data.format import prepare
    from lorarank.model import load_base
    from lorarank.train import eval_batch_size

    cfg = load_config(config)
    base, tok = load_base(dataclasses.replace(cfg.model, dtype=dtype), torch.device("cpu"))
    data = prepare(cfg.data, tok)
    shape = cost.Shape.from_run_data(next(iter(runs.values())))
    eval_tokens = sum(len(e.input_ids) for e in data.eval)
    eval_f = cost.head_share(sum(e.n_completion for e in data.eval), eval_tokens)
    train_rows = round(sum(r["tokens_trained"] for r in runs.values()) / sum(r["total_steps"] for r in runs.values()))
    eval_rows = round(eval_tokens / math.ceil(len(data.eval) / eval_batch_size(cfg.train)))
    rate_train, rate_eval = gemm_rate(base, train_rows), gemm_rate(base, eval_rows)
    train_flops = sum(r["tokens_trained"] * cost.train_flops_per_token(shape, r["rank"], cost.trained_head_share(r))
                      for r in runs.values())
    evals = [(len(r["eval_steps"]), r["rank"]) for r in runs.values()] + [(1, 0)]  # + the base model's evaluation
    eval_flops = sum(n * eval_tokens * cost.eval_flops_per_token(shape, rank, eval_f) for n, rank in evals)
    train_s, eval_s = train_flops / rate_train, eval_flops / rate_eval
    return {"tokens_per_training_step": train_rows, "tokens_per_eval_batch": eval_rows,
            "gemm_flops_train_shape": rate_train, "gemm_flops_eval_shape": rate_eval,
            "train_model_flops": train_flops, "eval_model_flops": eval_flops,
            "train_seconds": train_s, "eval_seconds": eval_s, "seconds": train_s + eval_s}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="cpu-default", help="a preset name or a YAML file")
    p.add_argument("--dtype", dest="dtypes", nargs="+", choices=("float32", "bfloat16"), default=default_dtypes(),
                   help="lorarank's model.dtype per sweep (default: both on a CPU with bf16 units, else float32)")
    p.add_argument("--out", default="benchmarks/results/sweep_wall.json")
    p.add_argument("--floor-only", action="store_true", help="add the floors to the run recorded in --out")
    args = p.parse_args(argv)
    from peer import FOR_DTYPE

    from lorarank.config import load_config
    from lorarank.config_io import config_file

    if args.floor_only:
        report = json.loads(Path(args.out).read_text())
        if not isinstance(report.get("lorarank"), dict) or not report.get("workdir"):
            print(f"error: {args.out} was written by an earlier version of this benchmark (no per-precision "
                  "results, or its sweeps ran outside the repository): run it without --floor-only", file=sys.stderr)
            return 2
        for dtype, ours in report["lorarank"].items():
            runs = json.loads((from_root(report["workdir"]) / f"lorarank_{dtype}" / "all_results.json").read_text())
            ours["floor"] = gemm_floor(str(from_root(report["config"])), runs, dtype)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print_floors(report)
        return 0

    config = str(config_file(args.config))  # a preset name or a file, as an absolute path
    ranks = load_config(config).sweep.ranks
    (ROOT / "outputs" / "benchmarks").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sweep-wall-", dir=ROOT / "outputs" / "benchmarks"))
    here = machine()
    report = {"machine": {**here, "matmul": matmul_peaks(here["threads"], args.dtypes)},
              "config": relative(config), "ranks": ranks, "workdir": relative(work),
              "lorarank": {d: lorarank_sweep(config, d, work) for d in args.dtypes},
              "peer": {c: peer_sweep(config, c, ranks, work) for d in args.dtypes for c in FOR_DTYPE[d]}}
    best_peer = min(v["wall_seconds"] for v in report["peer"].values())
    report["speedups"] = {f"lorarank_{d}_over_best_peer": best_peer / v["wall_seconds"] for d, v in report["lorarank"].items()}
    if len(report["lorarank"]) == 2:
        report["speedups"]["lorarank_bfloat16_over_lorarank_float32"] = (report["lorarank"]["float32"]["wall_seconds"]
                                                                         / report["lorarank"]["bfloat16"]["wall_seconds"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    for d, ours in report["lorarank"].items():
        print(f"lorarank {d}: {ours['wall_seconds']:.0f} s; final eval loss per rank "
              + ", ".join(f"r{r} {v['final_eval_loss']:.4f}" for r, v in ours["per_rank"].items()))
        print("  seconds by part: " + ", ".join(f"{k} {v:.1f}" for k, v in ours["parts"].items()))
    for c, peer in report["peer"].items():
        print(f"peer {c}: {peer['wall_seconds']:.0f} s ({len(ranks)} processes); final eval loss per rank "
              + ", ".join(f"r{r} {v['final_eval_loss']:.4f}" for r, v in peer["per_rank"].items()))
    print("; ".join(f"{k} {v:.2f}x" for k, v in report["speedups"].items()) + f"; wrote {args.out}")
    print_floors(report)
    return 0


def lorarank_sweep(config: str, dtype: str, work: Path) -> dict:
    """One `lorarank run` of the config with model.dtype=`dtype`: wall time, per-rank results, floor."""
    out = work / f"lorarank_{dtype}"
    wall = timed([sys.executable, "-m", "lorarank", "run", "--config", config, "--output-dir", str(out), "--no-progress",
                  f"model.dtype={dtype}"], work / f"lorarank_{dtype}.log")
    runs = json.loads((out / "all_results.json").read_text())
    baseline = json.loads((out / "baseline.json").read_text())
    return {"wall_seconds": wall, "floor": gemm_floor(config, runs, dtype), "parts": parts(wall, runs, baseline),
            "per_rank": {k: {"training_time_seconds": v["training_time_seconds"], "final_eval_loss": v["final_eval_loss"]}
                         for k, v in runs.items()}}


def parts(wall: float, runs: dict, baseline: dict) -> dict:
    """Where the sweep's wall time went, summed over its trials from their records: training, the
    evaluations during it, each measurement after it (run_data.json's measure_seconds), the base
    model's row (baseline.json), and the rest (start-up, model load, tokenization, attaching and
    detaching adapters, the report), which is the wall time less all of those."""
    out = {"training": sum(r["training_time_seconds"] for r in runs.values()),
           "eval_during_training": sum(r["eval_time_seconds"] for r in runs.values())}
    for r in runs.values():
        for name, seconds in r.get("measure_seconds", {}).items():  # absent from records before it was kept
            out[name] = out.get(name, 0.0) + seconds
    out["base_model_row"] = baseline.get("seconds", 0.0)
    out["rest"] = wall - sum(out.values())
    return out


def peer_sweep(config: str, precision: str, ranks: list[int], work: Path) -> dict:
    """peer.py once per rank in `precision`: the summed wall time, and each rank's own report."""
    per_rank = {}
    for r in ranks:
        out = work / f"peer_{precision}_rank_{r}"
        wall = timed([sys.executable, str(ROOT / "benchmarks" / "peer.py"), "--config", config, "--rank", str(r),
                      "--precision", precision, "--out", str(out)], work / f"peer_{precision}_{r}.log")
        per_rank[str(r)] = {"wall_seconds": wall, **json.loads((out / "peer.json").read_text())}
    return {"wall_seconds": sum(v["wall_seconds"] for v in per_rank.values()), "per_rank": per_rank}


def print_floors(report: dict) -> None:
    for dtype, ours in report["lorarank"].items():
        f = ours["floor"]
        print(f"floor ({dtype}): the sweep's training and eval model FLOPs, at {f['gemm_flops_train_shape'] / 1e9:.0f} / "
              f"{f['gemm_flops_eval_shape'] / 1e9:.0f} GFLOP/s (train / eval shapes), take {f['seconds']:.0f} s; "
              f"the sweep took {ours['wall_seconds']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
