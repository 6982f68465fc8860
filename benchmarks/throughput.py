"""Per-trial training throughput: lorarank's loop vs the stock TRL SFTTrainer + PEFT stack.

Both legs train the same LoRA (same rank, alpha, dropout, targets) on the same records, tokenized
by the same chat template with the loss on response tokens only (TRL gets the data in its
conversational prompt-completion form, so its completion-only loss applies), with the same batch
size, max length, learning rate, constant schedule and gradient clipping, in fp32 without gradient
checkpointing (TRL's CPU-hostile defaults, bf16 and checkpointing, are switched off). Each leg runs
in its own child process so its peak memory is its own; the machine's fp32 matmul peak is
measured in the same invocation.

    python benchmarks/throughput.py                      # SmolLM2-135M, 128 records, rank 8
    python benchmarks/throughput.py --rank 64 --records 64
    python benchmarks/throughput.py --records 8 --pairs 1 --out /tmp/throughput.json   # a functional check

Reported: training tokens/s (real, non-padding tokens), the ratio, model FLOP/s and MFU with
cost.train_flops_per_token and the LM head on every position (the model's FLOPs as a stock trainer
computes them, the same count for both legs: 4·N_body + 4·N_head + 6·r·Σ(d_in+d_out)),
peak resident memory, and the training-set loss of both trained models measured by one function
(so speed is not bought with a different objective). Also the ceiling: the rate of the frozen
model's own products (forward and input gradient of every projection) at the step's shape, alone,
and the tokens/s a loop doing nothing else would reach. Writes JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from common import TARGETS, examples, gemm_rate, leg_lorarank, load, machine, peak_rss, records, relative, run_leg, \
    train_loss_of

from lorarank import cost


def matmul_peak(threads: int, seconds: float = 3.0) -> float:
    """Best fp32 GEMM FLOP/s over a few square sizes."""
    torch.set_num_threads(threads)
    best = 0.0
    for n in (512, 1024, 1536, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(2):  # warm-up
            a @ b
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 4:
            a @ b
            reps += 1
        best = max(best, cost.matmul_flops(n, n, n) * reps / (time.perf_counter() - t0))
    return best


def leg_trl(args, queue) -> None:
    torch.set_num_threads(args.threads)
    from datasets import Dataset
    from peer import peft_config, sft_config, trl_rows
    from trl import SFTTrainer

    base, tok = load(args)
    exs = examples(args, tok)
    keep = {tuple(e.input_ids) for e in exs}
    sft = sft_config(str(Path(args.workdir) / "trl"), batch=args.batch, lr=args.lr, max_length=args.max_length,
                     seed=args.seed, epochs=args.epochs)
    trainer = SFTTrainer(model=base, args=sft, train_dataset=Dataset.from_list(trl_rows(records(args.records, args.seed))),
                         processing_class=tok, peft_config=peft_config(args.rank, args.alpha, args.dropout, TARGETS))
    ids = trainer.train_dataset["input_ids"]
    same_tokens = sum(tuple(x) in keep for x in ids)
    out = trainer.train()
    tokens = sum(len(x) for x in ids) * args.epochs
    queue.put({"tokens": tokens, "seconds": out.metrics["train_runtime"], "steps": trainer.state.global_step,
               "train_loss_after": train_loss_of(trainer.model, tok, exs), "peak_rss_bytes": peak_rss(),
               "identical_tokenization": same_tokens / len(ids)})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--records", type=int, default=128)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--workdir", default="outputs/benchmarks/throughput", help="where the peer writes its files")
    p.add_argument("--pairs", type=int, default=3, help="lorarank/peer pairs, run alternately; medians reported")
    p.add_argument("--out", default="benchmarks/results/throughput.json")
    args = p.parse_args(argv)

    # the machine's speed drifts: alternate the legs (A B A B ...), take each pair's ratio, report medians
    peaks, pairs = [], []
    for _ in range(args.pairs):
        peaks.append(matmul_peak(args.threads))
        pairs.append((run_leg(leg_lorarank, args), run_leg(leg_trl, args)))
    peak = statistics.median(peaks)
    ours = min((o for o, _ in pairs), key=lambda o: abs(o["tokens"] / o["seconds"] - statistics.median(
        x["tokens"] / x["seconds"] for x, _ in pairs)))  # the median lorarank leg
    peer = min((q for _, q in pairs), key=lambda q: abs(q["tokens"] / q["seconds"] - statistics.median(
        x["tokens"] / x["seconds"] for _, x in pairs)))
    shape = cost.Shape.from_run_data(ours)
    per_token = cost.train_flops_per_token(shape, args.rank, head_share=1.0)
    report = {"machine": {**machine(args.threads), "fp32_matmul_peak_flops": peak, "fp32_matmul_peaks_measured": peaks},
              "settings": {**vars(args), "workdir": relative(args.workdir), "out": relative(args.out)},
              "model_flops_per_token": per_token}
    for name, leg in (("lorarank", ours), ("trl_sft_peft", peer)):
        tps = leg["tokens"] / leg["seconds"]
        report[name] = {**leg, "tokens_per_second": tps, "model_flops_per_second": tps * per_token,
                        "mfu": tps * per_token / peak}
    # the ceiling: how fast the frozen model's products alone run at this step's shape
    torch.set_num_threads(args.threads)
    base, _ = load(args)
    tokens_per_step = round(ours["tokens"] / ours["steps"])
    rate = gemm_rate(base, tokens_per_step)
    del base
    ceiling = rate / cost.frozen_train_flops_per_token(shape, head_share=0.0)  # the body's products alone
    report["gemm_ceiling"] = {"tokens_per_step": tokens_per_step, "gemm_flops": rate,
                              "gemm_fraction_of_peak": rate / peak, "tokens_per_second": ceiling,
                              "target_tokens_per_second": 2 * report["trl_sft_peft"]["tokens_per_second"],
                              "lorarank_fraction_of_ceiling": report["lorarank"]["tokens_per_second"] / ceiling}
    ratios = [(o["tokens"] / o["seconds"]) / (q["tokens"] / q["seconds"]) for o, q in pairs]
    report["pair_speedups"] = ratios
    report["speedup"] = statistics.median(ratios)
    report["train_loss_relative_difference"] = (ours["train_loss_after"] - peer["train_loss_after"]) / peer["train_loss_after"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s ({args.threads} threads); model FLOPs/token {per_token / 1e6:.0f} M")
    for name in ("lorarank", "trl_sft_peft"):
        r = report[name]
        print(f"{name:>13}: {r['tokens_per_second']:7.1f} tok/s  {r['model_flops_per_second'] / 1e9:6.1f} GFLOP/s  "
              f"MFU {r['mfu']:.0%}  peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB  "
              f"train loss after {r['train_loss_after']:.4f}  ({r['steps']} steps, {r['seconds']:.1f} s)")
    c = report["gemm_ceiling"]
    print(f"ceiling: the frozen model's products alone run at {c['gemm_flops'] / 1e9:.1f} GFLOP/s "
          f"({c['gemm_fraction_of_peak']:.0%} of peak) at {c['tokens_per_step']} tokens per step: at most "
          f"{c['tokens_per_second']:.0f} tok/s if nothing else took time; lorarank is at {c['lorarank_fraction_of_ceiling']:.0%} "
          f"of it; 2x the peer is {c['target_tokens_per_second']:.0f} tok/s")
    print(f"speedup {report['speedup']:.2f}x (median of pairs: {', '.join(f'{r:.2f}' for r in ratios)}); train-loss difference {report['train_loss_relative_difference']:+.2%}; "
          f"identical tokenization {peer['identical_tokenization']:.0%}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
