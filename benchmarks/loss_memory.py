"""Peak memory of the loss: the LM head and cross-entropy with every logit kept, against the chunked
train.LinearCrossEntropy, forward and backward, at the default trial's data with 32 examples per
micro-batch (SmolLM2-135M's head: 49,152 x 576).

    python benchmarks/loss_memory.py                 # both precisions; writes benchmarks/results/loss_memory.json

Each measurement runs in a fresh process holding only the hidden states (N x 576), the head's weight
and the targets: the peak resident memory the forward and backward add on top of them (ru_maxrss
after minus before) is the loss's own. N is the completion-token count of the first 32 training
examples of the cpu-default preset (the rows the head runs on). Both paths' times are printed too
(one process each: noisy, a hint only; benchmarks/step_profile.py times the loss within a step).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F
from common import machine, write_report

VOCAB, HIDDEN = 49_152, 576


def rows_of(examples: int) -> int:
    from lorarank.config import load_config
    from lorarank.data.format import prepare
    from lorarank.model import load_tokenizer

    cfg = load_config("cpu-default")
    data = prepare(cfg.data, load_tokenizer(cfg.model))
    return sum(e.n_completion for e in data.train[:examples])


def full(h, w, t):
    with torch.autocast("cpu", dtype=h.dtype, enabled=h.dtype != torch.float32):
        return F.cross_entropy(F.linear(h, w).float(), t, reduction="sum")


def chunked(h, w, t):
    from lorarank.train import LinearCrossEntropy

    return LinearCrossEntropy.apply(h, w, t, True)


def measure(path: str, dtype: str, rows: int, queue) -> None:
    torch.set_num_threads(1)
    gen, dtype = torch.Generator().manual_seed(0), getattr(torch, dtype)
    h = torch.randn(rows, HIDDEN, generator=gen, dtype=dtype).requires_grad_(True)  # no fp32 temporaries:
    w = torch.randn(VOCAB, HIDDEN, generator=gen, dtype=dtype).mul_(0.05)  # the peak so far is what is held
    t = torch.randint(0, VOCAB, (rows,), generator=gen)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    {"full": full, "chunked": chunked}[path](h, w, t).backward()
    seconds = time.perf_counter() - t0
    queue.put({"peak_bytes_added": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before,
               "seconds": seconds})


def run(path: str, dtype: str, rows: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=measure, args=(path, dtype, rows, queue))
    proc.start()
    out = queue.get(timeout=600)
    proc.join()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=32)
    p.add_argument("--out", default="benchmarks/results/loss_memory.json")
    args = p.parse_args(argv)
    rows = rows_of(args.examples)
    report = {"machine": machine(1), "load_average": os.getloadavg(), "examples": args.examples, "rows": rows,
              "logits_bytes_fp32": rows * VOCAB * 4, "results": {}}
    for dtype in ("float32", "bfloat16"):
        report["results"][dtype] = {path: run(path, dtype, rows) for path in ("full", "chunked")}
        r = report["results"][dtype]
        print(f"{dtype:>8}, {args.examples} examples ({rows} completion rows): peak added by forward + backward "
              f"{r['full']['peak_bytes_added'] / 2**20:.0f} MiB full, {r['chunked']['peak_bytes_added'] / 2**20:.0f} MiB "
              f"chunked; {r['full']['seconds']:.3f} s vs {r['chunked']['seconds']:.3f} s")
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
