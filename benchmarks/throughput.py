"""Per-trial training throughput: lorarank's loop in each precision vs the TRL SFTTrainer + PEFT stack.

Every leg trains the same LoRA (same rank, alpha, dropout, targets) on the same records, tokenized
by the same chat template with the loss on response tokens only (TRL gets the data in its
conversational prompt-completion form, so its completion-only loss applies), with the same batch
size, max length, learning rate, constant schedule and gradient clipping. lorarank runs with its base
in each `--dtype` (float32; bfloat16: bf16 base, fp32 adapters, autocast); the peer in the
configurations of those precisions (peer.PRECISIONS: fp32 without TRL's defaults; bf16 autocast;
TRL's stock bf16 autocast with gradient checkpointing). Each leg runs in its own child process so
its peak memory is its own; the legs run in rounds (every leg once per round, --rounds of them) and
the matmul peak of each precision is measured in every round.

    python benchmarks/throughput.py                      # SmolLM2-135M, 128 records, rank 8; both precisions on a CPU with bf16 units
    python benchmarks/throughput.py --rank 64 --records 64
    python benchmarks/throughput.py --peaks-only         # the matmul peaks and the rates at a step's shapes, a few seconds
    python benchmarks/throughput.py --model tiny-random --records 8 --rounds 1 --threads 1 --out /tmp/throughput.json   # a functional check

Reported per leg: training tokens/s (real, non-padding tokens), model FLOP/s and MFU against the
matmul peak of the leg's precision, with cost.train_flops_per_token and the LM head on every
position (the model's FLOPs as a stock trainer computes them, the same count for every leg:
4·N_body + 4·N_head + 6·r·Σ(d_in+d_out)), peak resident memory, and the training-set loss of the trained
model measured by one function (so speed is not bought with a different objective), twice: as the
leg's model computes (lorarank bf16 on its bf16 base; the peer's model holds fp32 weights, and
autocast is a training setting, so the peer's is in fp32) and in fp32 (`_fp32`: lorarank bf16's
trained adapter copied onto the fp32 base), which separates what training in bf16 changed from what
evaluating on a bf16 base changes. Ratios per round, medians reported: lorarank bf16 over lorarank
fp32, each lorarank leg over the best peer configuration of the round, and lorarank fp32 over the
fp32 peer. Also the ceiling per precision: the rate of the frozen model's own products (forward and
input gradient of every projection) at the step's shape, alone, and the tokens/s a loop doing
nothing else would reach. Writes JSON (--out) with the machine's CPU capability.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch
from common import TARGETS, default_dtypes, examples, gemm_rate, leg_lorarank, load, machine, matmul_peaks, \
    peak_rss, print_peaks, records, relative, run_leg, train_loss_of

from lorarank import cost


def leg_trl(args, queue) -> None:
    """One trial of the peer in configuration args.peer (its model loaded in fp32: peer.PRECISIONS)."""
    torch.set_num_threads(args.threads)
    from datasets import Dataset
    from peer import peft_config, sft_config, trl_rows
    from trl import SFTTrainer

    base, tok = load(args)
    exs = examples(args, tok)
    keep = {tuple(e.input_ids) for e in exs}
    sft = sft_config(str(Path(args.workdir) / f"trl_{args.peer}"), batch=args.batch, lr=args.lr,
                     max_length=args.max_length, seed=args.seed, epochs=args.epochs, precision=args.peer)
    trainer = SFTTrainer(model=base, args=sft, train_dataset=Dataset.from_list(trl_rows(records(args.records, args.seed))),
                         processing_class=tok, peft_config=peft_config(args.rank, args.alpha, args.dropout, TARGETS))
    ids = trainer.train_dataset["input_ids"]
    same_tokens = sum(tuple(x) in keep for x in ids)
    out = trainer.train()
    tokens = sum(len(x) for x in ids) * args.epochs
    loss = train_loss_of(trainer.model, tok, exs)  # fp32 weights, no autocast: in fp32 whatever it trained in
    queue.put({"tokens": tokens, "seconds": out.metrics["train_runtime"], "steps": trainer.state.global_step,
               "train_loss_after": loss, "train_loss_after_fp32": loss, "peak_rss_bytes": peak_rss(),
               "identical_tokenization": same_tokens / len(ids)})


def legs(dtypes: list[str]) -> dict[str, tuple]:
    """name -> (leg, its settings, the precision its MFU is measured against), one round's worth."""
    from peer import FOR_DTYPE

    out = {f"lorarank_{d}": (leg_lorarank, {"dtype": d}, d) for d in dtypes}
    out.update({f"trl_{c}": (leg_trl, {"peer": c}, d) for d in dtypes for c in FOR_DTYPE[d]})
    return out


def median_leg(runs: list[dict]) -> dict:
    """The run whose tokens/s is the median of the rounds'."""
    mid = statistics.median(r["tokens"] / r["seconds"] for r in runs)
    return min(runs, key=lambda r: abs(r["tokens"] / r["seconds"] - mid))


def round_ratios(rounds: list[dict[str, dict]], dtypes: list[str]) -> dict[str, list[float]]:
    """Per round: lorarank bf16 over fp32, each lorarank leg over the round's best peer, and lorarank
    fp32 over the fp32 peer (the like-for-like comparison)."""
    def tps(r):
        return r["tokens"] / r["seconds"]

    out = {}
    if len(dtypes) == 2:
        out["lorarank_bfloat16_over_lorarank_float32"] = [tps(r["lorarank_bfloat16"]) / tps(r["lorarank_float32"])
                                                          for r in rounds]
    for d in dtypes:
        out[f"lorarank_{d}_over_best_peer"] = [tps(r[f"lorarank_{d}"]) / max(tps(v) for k, v in r.items()
                                                                              if k.startswith("trl_")) for r in rounds]
    if "float32" in dtypes:
        out["lorarank_float32_over_trl_fp32"] = [tps(r["lorarank_float32"]) / tps(r["trl_fp32"]) for r in rounds]
    return out


def gemm_ceiling(args, dtype: str, tokens_per_step: int, shape: cost.Shape, peak: float) -> dict:
    """How fast the frozen model's products alone run in `dtype` at this step's shape."""
    torch.set_num_threads(args.threads)
    base, _ = load(args, dtype)
    rate = gemm_rate(base, tokens_per_step)
    ceiling = rate / cost.frozen_train_flops_per_token(shape, head_share=0.0)  # the body's products alone
    return {"tokens_per_step": tokens_per_step, "gemm_flops": rate, "gemm_fraction_of_peak": rate / peak,
            "tokens_per_second": ceiling}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--dtype", dest="dtypes", nargs="+", choices=("float32", "bfloat16"), default=default_dtypes(),
                   help="lorarank's model.dtype per leg (default: both on a CPU with bf16 units, else float32)")
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
    p.add_argument("--rounds", type=int, default=3, help="rounds of every leg, run in turn; medians reported")
    p.add_argument("--peaks-only", action="store_true", help="measure and print the matmul peaks, train nothing")
    p.add_argument("--out", default=None, help="default: benchmarks/results/throughput.json, or "
                   "benchmarks/results/matmul_peaks.json with --peaks-only (the per-trial results stay)")
    args = p.parse_args(argv)
    args.out = args.out or f"benchmarks/results/{'matmul_peaks' if args.peaks_only else 'throughput'}.json"
    dtypes = sorted(set(args.dtypes), key=("float32", "bfloat16").index)
    report = {"machine": machine(args.threads),
              "settings": {**vars(args), "workdir": relative(args.workdir), "out": relative(args.out)}}
    if args.peaks_only:
        report["matmul"] = matmul_peaks(args.threads, dtypes)
        write(args.out, report)
        print_peaks(report["matmul"])
        return 0

    # the machine's speed drifts: every leg once per round, ratios within a round, medians over rounds
    peaks, rounds = [], []
    for _ in range(args.rounds):
        peaks.append(matmul_peaks(args.threads, dtypes))
        rounds.append({name: run_leg(fn, argparse.Namespace(**vars(args), **extra))
                       for name, (fn, extra, _) in legs(dtypes).items()})
    peak = {d: statistics.median(p[d]["peak_flops"] for p in peaks) for d in dtypes}
    report["matmul"] = {"peak_flops": peak, "measured": peaks}
    shape = cost.Shape.from_run_data(rounds[0][f"lorarank_{dtypes[0]}"])
    per_token = cost.train_flops_per_token(shape, args.rank, head_share=1.0)
    report["model_flops_per_token"] = per_token
    report["legs"] = {}
    for name, (_, _, precision) in legs(dtypes).items():
        leg = median_leg([r[name] for r in rounds])
        tps = leg["tokens"] / leg["seconds"]
        report["legs"][name] = {**leg, "precision": precision, "tokens_per_second": tps,
                                "model_flops_per_second": tps * per_token, "mfu": tps * per_token / peak[precision]}
    yardstick = report["legs"][f"lorarank_{dtypes[0]}"]["train_loss_after"]
    for leg in report["legs"].values():
        for key in ("train_loss_after", "train_loss_after_fp32"):
            relative_key = key.replace("train_loss_after", "train_loss_relative") + "_to_lorarank_" + dtypes[0]
            leg[relative_key] = (leg[key] - yardstick) / yardstick
    ratios = round_ratios(rounds, dtypes)
    report["ratios"] = {k: {"median": statistics.median(v), "rounds": v} for k, v in ratios.items()}
    report["gemm_ceiling"] = {}
    for d in dtypes:  # the ceiling: how fast the frozen model's products alone run at this step's shape
        ours = report["legs"][f"lorarank_{d}"]
        ceiling = gemm_ceiling(args, d, round(ours["tokens"] / ours["steps"]), shape, peak[d])
        report["gemm_ceiling"][d] = {**ceiling, "lorarank_fraction_of_ceiling": ours["tokens_per_second"]
                                     / ceiling["tokens_per_second"]}
    write(args.out, report)
    print_report(report, args)
    return 0


def write(out: str, report: dict) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2) + "\n")


def print_report(report: dict, args) -> None:
    cpu = report["machine"]["cpu"]
    print(f"CPU {cpu['capability']} (AMX {cpu['amx_tile']}, AVX512-BF16 {cpu['avx512_bf16']}), {args.threads} threads; "
          f"model FLOPs/token {report['model_flops_per_token'] / 1e6:.0f} M")
    for d, peak in report["matmul"]["peak_flops"].items():
        print(f"{d} matmul peak: {peak / 1e9:.1f} GFLOP/s")
    for name, r in report["legs"].items():
        print(f"{name:>17}: {r['tokens_per_second']:7.1f} tok/s  {r['model_flops_per_second'] / 1e9:6.1f} GFLOP/s  "
              f"MFU {r['mfu']:.0%} of {r['precision']}  peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB  "
              f"train loss after {r['train_loss_after']:.4f} (in fp32 {r['train_loss_after_fp32']:.4f})  "
              f"({r['steps']} steps, {r['seconds']:.1f} s)")
    for name, r in report["ratios"].items():
        print(f"{name}: {r['median']:.2f}x (rounds: {', '.join(f'{x:.2f}' for x in r['rounds'])})")
    for d, c in report["gemm_ceiling"].items():
        print(f"ceiling ({d}): the frozen model's products alone run at {c['gemm_flops'] / 1e9:.1f} GFLOP/s "
              f"({c['gemm_fraction_of_peak']:.0%} of peak) at {c['tokens_per_step']} tokens per step: at most "
              f"{c['tokens_per_second']:.0f} tok/s if nothing else took time; lorarank is at "
              f"{c['lorarank_fraction_of_ceiling']:.0%} of it")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
