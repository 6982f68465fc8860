"""Sweep wall time: the default 4-rank sweep in lorarank vs the peer stack run once per rank.

lorarank: one `lorarank run` process (the cpu-default preset) (model loaded once, data
tokenized once, every trial evaluated, scored for task accuracy and analysed, report written).
Peer: `benchmarks/peer.py` once per rank in a fresh process, as the original experiment did (its own
imports, model load, tokenization, training, evaluation every eval_every steps and at the end,
adapter save). Same config, same steps, same data. Wall clock of whole processes.

Also the floor: the least time lorarank's training and evaluation could take here, all their model FLOPs
(cost.py, LM head on the completion positions the loop computes) at the rate the frozen products alone
reach at the same shapes (common.gemm_rate), everything else free.

    python benchmarks/sweep_wall.py                        # writes benchmarks/results/sweep_wall.json
    python benchmarks/sweep_wall.py --floor-only           # (re)computes the floor of a recorded run
    python benchmarks/sweep_wall.py --config tiny --out /tmp/sweep_wall.json   # a functional check
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, from_root, gemm_rate, machine, relative

from lorarank import cost


def timed(cmd: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    return time.perf_counter() - t0


def gemm_floor(config: str, runs: dict) -> dict:
    """Seconds the sweep's training and evaluation need if all their model FLOPs (frozen products,
    LoRA products and the LM head on response positions, as the loop computes them) ran at the rate
    the frozen products reach alone at the same shapes. A lower bound: attention, norms, the optimizer,
    decoding, loading and the report are taken as free, and the thin LoRA products as fast as big ones."""
    import math

    import torch

    from lorarank.config import load_config
    from lorarank.config_io import config_file
    from lorarank.data.format import prepare
    from lorarank.model import load_base
    from lorarank.train import eval_batch_size

    cfg = load_config(config)
    base, tok = load_base(cfg.model, torch.device("cpu"))
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
    p.add_argument("--out", default="benchmarks/results/sweep_wall.json")
    p.add_argument("--floor-only", action="store_true", help="add the floor to the run recorded in --out")
    args = p.parse_args(argv)
    from lorarank.config import load_config

    if args.floor_only:
        report = json.loads(Path(args.out).read_text())
        runs = json.loads((from_root(report["workdir"]) / "lorarank" / "all_results.json").read_text())
        report["floor"] = gemm_floor(str(from_root(report["config"])), runs)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print_floor(report)
        return 0

    config = str(config_file(args.config))  # a preset name or a file, as an absolute path
    ranks = load_config(config).sweep.ranks
    (ROOT / "outputs" / "benchmarks").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sweep-wall-", dir=ROOT / "outputs" / "benchmarks"))
    py = sys.executable
    ours = timed([py, "-m", "lorarank", "run", "--config", config, "--output-dir", str(work / "lorarank"),
                  "--no-progress"], work / "lorarank.log")
    peer = {}
    for r in ranks:
        peer[r] = timed([py, str(ROOT / "benchmarks" / "peer.py"), "--config", config, "--rank", str(r),
                         "--out", str(work / f"peer_rank_{r}")], work / f"peer_{r}.log")
    per_rank = {r: json.loads((work / f"peer_rank_{r}" / "peer.json").read_text()) for r in ranks}
    ours_runs = json.loads((work / "lorarank" / "all_results.json").read_text())
    report = {
        "machine": machine(),
        "config": relative(config), "ranks": ranks,
        "lorarank_wall_seconds": ours, "peer_wall_seconds": sum(peer.values()),
        "speedup": sum(peer.values()) / ours,
        "peer_per_rank": {str(r): {"wall_seconds": peer[r], **per_rank[r]} for r in ranks},
        "lorarank_per_rank": {k: {"training_time_seconds": v["training_time_seconds"],
                                  "final_eval_loss": v["final_eval_loss"]} for k, v in ours_runs.items()},
        "workdir": relative(work),
    }
    report["floor"] = gemm_floor(config, ours_runs)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"lorarank {ours:.0f} s vs peer {sum(peer.values()):.0f} s ({len(ranks)} processes): "
          f"{report['speedup']:.2f}x; wrote {args.out}")
    for r in ranks:
        print(f"  rank {r}: peer {peer[r]:.0f} s (train {per_rank[r]['train_seconds']:.0f} s, eval loss "
              f"{per_rank[r]['final_eval_loss']:.4f}); lorarank train {ours_runs[str(r)]['training_time_seconds']:.0f} s, "
              f"eval loss {ours_runs[str(r)]['final_eval_loss']:.4f}")
    print_floor(report)
    return 0


def print_floor(report: dict) -> None:
    f = report["floor"]
    print(f"floor: the sweep's training and eval model FLOPs, at {f['gemm_flops_train_shape'] / 1e9:.0f} / "
          f"{f['gemm_flops_eval_shape'] / 1e9:.0f} GFLOP/s (train / eval shapes), take {f['seconds']:.0f} s; "
          f"3x the peer would need the whole sweep in {report['peer_wall_seconds'] / 3:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
