"""What the benchmarks share: loading the model and the records, one training step, a leg of
lorarank's loop in a fresh process, the matmul peaks and the GEMM ceiling of each precision, and how
results describe the machine.

Run every benchmark from the repository root as `python benchmarks/<name>.py`: the package is
installed (editable), and a script's own directory is on sys.path, so `from common import ...` works.
Paths written into results are relative to the repository root.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import queue as queue_mod
import resource
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from lorarank import cost, env, fastpath, lora

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CPU = torch.device("cpu")
DTYPES = ("float32", "bfloat16")  # lorarank's model.dtype in the benchmarks' legs
# products of a SmolLM2-135M training step: the MLP's up/gate projection at a micro-batch of ~200
# tokens, and an attention projection at ~400 (m x k)·(k x n)
STEP_SHAPES = ((200, 576, 1536), (400, 576, 576))


def default_dtypes() -> list[str]:
    """Both precisions where the CPU multiplies bf16 natively; fp32 alone where bf16 is emulated
    (a bf16 SmolLM2 trial would take hours there)."""
    return list(DTYPES) if env.bf16_units(env.cpu_capability()) else ["float32"]


def relative(path: str | Path) -> str | None:
    """`path` relative to the repository root, as results record it; None for a path outside the
    repository, which would only name the measuring machine's layout."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else None


def from_root(path: str | Path) -> Path:
    """A path as results record it (relative to the repository root), or an absolute one."""
    return ROOT / path


def machine(threads: int | None = None) -> dict:
    """What the numbers were measured on: platform, cores, torch threads and the CPU's vector units."""
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": threads or torch.get_num_threads(),
            "cpu": env.cpu_capability()}


def records(n: int, seed: int):
    from lorarank.data import suite

    return suite.generate(n, seed=seed)


def load(args, dtype: str = "float32"):
    """(frozen base, tokenizer) of args.model in `dtype` on the CPU, as lorarank loads it."""
    from lorarank.config import ModelConfig
    from lorarank.model import load_base

    return load_base(ModelConfig(name=args.model, dtype=dtype), CPU)


def default_trial(dtype: str, batch: int):
    """(config, base, tokenizer, prepared data, steps) of the default trial (the cpu-default preset)
    in `dtype` at `batch` examples per micro-batch: each step a list of micro-batches, each a list of
    training-example indices, in the order the trial trains on them."""
    from lorarank.config import load_config
    from lorarank.data.format import prepare
    from lorarank.model import load_base
    from lorarank.train import micro_batches, step_plan, total_steps

    cfg = load_config("cpu-default", {"model.dtype": dtype, "train.batch_size": batch})
    base, tok = load_base(cfg.model, CPU)
    data = prepare(cfg.data, tok)
    plan = step_plan(len(data.train), cfg.train, cfg.sweep.seeds[0], total_steps(cfg.train, len(data.train)))
    return cfg, base, tok, data, [micro_batches(step, data.train, batch) for step in plan]


def attach(base, rank: int, alpha: float, dropout: float, seed: int):
    """A fresh adapter on `base` with the fast path the runner sets up on this machine (its levers
    from fastpath.levers_for)."""
    model = lora.attach(base, rank, lora.scaling_for(rank, alpha, "constant"), dropout, TARGETS, seed)
    fastpath.enable(model, fastpath.levers_for(CPU, base.dtype))
    return model


def examples(args, tok):
    """args.records suite records in lorarank's chat encoding, those up to args.max_length tokens."""
    from lorarank.data.format import encode

    out = [encode(r, tok, "chat") for r in records(args.records, args.seed)]
    return [e for e in out if len(e.input_ids) <= args.max_length]


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def train_loss_of(model, tok, exs) -> float:
    """The one yardstick for every leg: lorarank's completion-token loss over the training set."""
    from lorarank.train import eval_loss

    return eval_loss(model, exs, 16, tok.pad_token_id, CPU)


class Step:
    """One optimizer step of lorarank's loop (loss on completion tokens, backward, clip, AdamW),
    timed. `fused_adam` False swaps in AdamW one tensor at a time, the baseline of train.py's choice."""

    def __init__(self, model, lr: float):
        self.model = model
        self.params = [q for q in model.parameters() if q.requires_grad]
        self.fused = torch.optim.AdamW(self.params, lr=lr, fused=True)
        self.loop = torch.optim.AdamW(self.params, lr=lr, foreach=False)
        self.fused_adam = True

    def __call__(self, batch) -> float:
        from lorarank.train import completion_loss

        opt = self.fused if self.fused_adam else self.loop
        t0 = time.perf_counter()
        loss, n = completion_loss(self.model, batch)
        (loss / n).backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0


def leg_lorarank(args, queue) -> None:
    """One trial of lorarank's loop on args.records records (constant LR, one micro-batch per step),
    the base in args.dtype."""
    torch.set_num_threads(args.threads)
    from lorarank.config import TrainConfig
    from lorarank.train import train

    base, tok = load(args, args.dtype)
    exs = examples(args, tok)
    shape = cost.Shape.of(base, TARGETS)
    model = attach(base, args.rank, args.alpha, args.dropout, args.seed)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, grad_accum=1, warmup_ratio=0.0,
                      lr_schedule="constant", max_grad_norm=1.0, log_every=1, eval_every=10 ** 9)
    res = train(model, exs, exs[:1], cfg, args.lr, args.seed, tok.pad_token_id, CPU)
    out = {"tokens": res.tokens_trained, "completion_tokens": res.completion_tokens_trained,
           "seconds": res.training_time_seconds, "steps": res.total_steps,
           "train_loss_after": train_loss_of(model, tok, exs), "peak_rss_bytes": peak_rss(),
           "matmul_params": {"body": shape.body, "head": shape.head}, "params_per_rank": shape.params_per_rank}
    out["train_loss_after_fp32"] = out["train_loss_after"] if args.dtype == "float32" else \
        loss_on_fp32_base(args, model, tok, exs)  # after peak_rss: the fp32 twin is not the leg's memory
    queue.put(out)


def loss_on_fp32_base(args, model, tok, exs) -> float:
    """The training-set loss of `model`'s trained adapter (fp32 parameters) on the fp32 base: what the
    adapter learned, without the rounding of a half-precision base in the evaluation."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    twin = attach(load(args, "float32")[0], args.rank, args.alpha, args.dropout, args.seed)
    set_peft_model_state_dict(twin, get_peft_model_state_dict(model))
    return train_loss_of(twin, tok, exs)


def run_leg(fn, args) -> dict:
    """Run one leg in a fresh process (its own threads, caches and peak memory)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=fn, args=(args, queue))
    proc.start()
    while True:
        try:
            result = queue.get(timeout=5)
            break
        except queue_mod.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"{fn.__name__} exited with code {proc.exitcode} before reporting")
    proc.join()
    return result


def gemm_rate(model, tokens: int, rounds: int = 3) -> float:
    """FLOP/s of the frozen model's own products at a step's shape, in its weights' dtype, nothing
    else: for every decoder projection W (d_out x d_in), in model order (so each weight comes in cold,
    as in a step), the forward x Wᵀ and the input gradient gy W with `tokens` rows. Median of `rounds`
    passes. A loop that did only these products would train at rate /
    cost.frozen_train_flops_per_token(shape, 0) tokens/s (the decoder body, no LM head): an upper
    bound for any trainer on these shapes."""
    head = model.get_output_embeddings().weight
    weights = [m.weight.detach() for m in model.modules() if isinstance(m, nn.Linear) and m.weight is not head]
    xs = {w.shape[1]: torch.randn(tokens, w.shape[1]).to(w.dtype) for w in weights}
    gys = {w.shape[0]: torch.randn(tokens, w.shape[0]).to(w.dtype) for w in weights}
    body = cost.Shape(body=sum(w.numel() for w in weights), head=0, params_per_rank=0)
    flops = tokens * cost.frozen_train_flops_per_token(body, head_share=0.0)
    times = []
    with torch.no_grad():
        for _ in range(rounds + 1):  # the first pass warms up
            t0 = time.perf_counter()
            for w in weights:
                xs[w.shape[1]] @ w.t()
                gys[w.shape[0]] @ w
            times.append(time.perf_counter() - t0)
    return flops / statistics.median(times[1:])


def matmul_rate(m: int, k: int, n: int, dtype: torch.dtype, seconds: float) -> float:
    """FLOP/s of (m x k)·(k x n) in `dtype`: as many products as fit in `seconds` after one warm-up,
    or the warm-up alone when it takes that long (emulated bf16 runs ~75x slower than fp32)."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    t0 = time.perf_counter()
    a @ b
    elapsed, reps = time.perf_counter() - t0, 1
    if elapsed < seconds:
        reps, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            a @ b
            reps += 1
    return cost.matmul_flops(m, k, n) * reps / elapsed


def matmul_peaks(threads: int, dtypes, seconds: float = 3.0) -> dict:
    """Per precision (a model.dtype name): the GEMM rates at square sizes 512 to 2048 (stopping once
    one product takes seconds/4) and at a training step's STEP_SHAPES (what the products alone reach
    there), and `peak_flops`, the best of them, which MFU is measured against."""
    torch.set_num_threads(threads)
    out = {}
    for name in dtypes:
        dtype = getattr(torch, name)
        squares = {}
        for n in (512, 1024, 1536, 2048):
            squares[n] = matmul_rate(n, n, n, dtype, seconds / 4)
            if cost.matmul_flops(n, n, n) / squares[n] > seconds / 4:
                break
        steps = {"x".join(map(str, shape)): matmul_rate(*shape, dtype, seconds / 8) for shape in STEP_SHAPES}
        out[name] = {"peak_flops": max(*squares.values(), *steps.values()),
                     "square_flops": {str(n): r for n, r in squares.items()}, "step_shape_flops": steps}
    return out


def write_report(out: str | Path, report: dict) -> None:
    """Write a benchmark's result as JSON (its folder made if needed) and say where."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


def print_peaks(peaks: dict) -> None:
    for name, p in peaks.items():
        shapes = ", ".join(f"{s}: {r / 1e9:.1f}" for s, r in p["step_shape_flops"].items())
        print(f"{name} matmul peak {p['peak_flops'] / 1e9:.1f} GFLOP/s; at a step's shapes (m x k x n) {shapes} GFLOP/s")
