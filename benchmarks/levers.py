"""What each speed lever of the training step is worth, measured in one process.

The machine's speed drifts by 10-30% within a minute, which swamps a few-percent lever when two
runs are timed one after the other. So every lever is measured in interleaved steps: for each batch,
one step with lorarank's loop as it is and one step with that lever switched off (order alternating),
on the same model, the same batch and the same optimizer settings; the per-step time ratio is
robust to drift. Reported: the median ratio and its quartiles per lever.

    python benchmarks/levers.py                   # SmolLM2-135M, rank 8, batch 4; writes benchmarks/results/levers.json
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
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def lora_layers(model):
    from peft.tuners.lora import Linear as LoraLinear

    return [m for m in model.modules() if type(m) is LoraLinear]


class Step:
    """One optimizer step of lorarank's loop, with switches for each lever."""

    def __init__(self, model, params, lr: float):
        self.model, self.params, self.lr = model, params, lr
        self.fused_adam = torch.optim.AdamW(params, lr=lr, fused=True)
        self.loop_adam = torch.optim.AdamW(params, lr=lr, foreach=False)  # one tensor at a time
        self.opt = self.fused_adam

    def __call__(self, batch) -> float:
        from lorarank.train import completion_loss

        t0 = time.perf_counter()
        loss, n = completion_loss(self.model, batch)
        (loss / n).backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0


def plain_layout_backward(ctx, gy):
    """The fused layer's backward before its layout choices: thin products in the (T x r) and (d x r)
    layouts the maths is written in, and the dropout gradient through a masked T x d copy."""
    xd, weight, lora_a, lora_b, u, drop = ctx.saved_tensors
    gu = (gy @ lora_b).mul_(ctx.gamma)
    g_b = (gy.t() @ u).mul_(ctx.gamma)
    g_a = gu.t() @ xd
    gx = None
    if ctx.needs_input_grad[0]:
        gx = gy @ weight
        if drop is None:
            gx.addmm_(gu, lora_a)
        else:
            g_xd = gu @ lora_a
            g_xd.view(-1).index_fill_(0, drop, 0.0)
            gx.add_(g_xd, alpha=ctx.k)
    return gx, None, None, g_a, g_b, None, None, None


def sliced_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                     segment_lengths=None, **kwargs):
    """Per-example attention before split and enable_gqa: a slice per example (each slice's backward
    zero-fills a full-length gradient) and kv heads repeated for grouped-query attention."""
    import torch.nn.functional as F

    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    outs, start = [], 0
    for n in segment_lengths:
        outs.append(F.scaled_dot_product_attention(query[:, :, start:start + n], key[:, :, start:start + n],
                                                   value[:, :, start:start + n], is_causal=True, scale=scaling))
        start += n
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous(), None


def levers(model, step: Step):
    """name -> (switch off, switch back on). Each lever is switched off alone."""
    from transformers import AttentionInterface

    from lorarank import attention
    from lorarank.fused import _LoraLinear, use_fused_lora
    from lorarank.lora import FastDropout

    laid_out_backward = _LoraLinear.backward

    def unfuse():
        for m in lora_layers(model):
            m.__dict__.pop("forward", None)

    def plain_dropout():
        unfuse()
        for m in lora_layers(model):
            for k, d in m.lora_dropout.items():
                m.lora_dropout[k] = nn.Dropout(d.p)

    def fast_dropout():
        for m in lora_layers(model):
            for k, d in m.lora_dropout.items():
                m.lora_dropout[k] = FastDropout(d.p)
        use_fused_lora(model)

    def loop_adam():
        step.opt = step.loop_adam

    def fused_adam():
        step.opt = step.fused_adam

    def plain_layouts():
        _LoraLinear.backward = staticmethod(plain_layout_backward)

    def laid_out():
        _LoraLinear.backward = staticmethod(laid_out_backward)

    def sliced():
        AttentionInterface.register(attention.NAME, sliced_attention)

    def split():
        AttentionInterface.register(attention.NAME, attention.packed_sdpa)

    return {
        "fused LoRA layer (vs PEFT's modules)": (unfuse, lambda: use_fused_lora(model)),
        "fused layer + geometric-gap dropout (vs PEFT's modules + nn.Dropout)": (plain_dropout, fast_dropout),
        "fused AdamW (vs one tensor at a time)": (loop_adam, fused_adam),
        "fused backward's thin-product layouts (vs the plain layouts)": (plain_layouts, laid_out),
        "per-example attention by split + enable_gqa (vs slices + repeated kv)": (sliced, split),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--records", type=int, default=128)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=24, help="interleaved step pairs per lever")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--only", default="", help="measure only the levers whose name contains this text")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "levers.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from throughput import TARGETS, examples, load

    from lorarank import lora
    from lorarank.train import collate, collate_packed

    args.seed, args.max_length = 42, 256
    base, tok = load(args)
    exs = examples(args, tok)
    model = lora.attach(base, args.rank, lora.scaling_for(args.rank, 16.0, "constant"), 0.05, TARGETS, args.seed)
    model.train()
    params = [q for q in model.parameters() if q.requires_grad]
    step = Step(model, params, 2e-4)
    groups = [exs[i:i + args.batch] for i in range(0, len(exs) - args.batch + 1, args.batch)]
    packed = [collate_packed(g, torch.device("cpu")) for g in groups]
    padded = [collate(g, tok.pad_token_id, torch.device("cpu")) for g in groups]
    for b in packed[:3]:  # warm-up
        step(b)

    def interleaved(off, on, batches_off, batches_on) -> list[float]:
        ratios = []
        for i in range(args.steps):
            j = (3 + i) % len(packed)
            times = {}
            for which in (("on", "off") if i % 2 == 0 else ("off", "on")):
                (off if which == "off" else on)()
                times[which] = step((batches_off if which == "off" else batches_on)[j])
            on()
            ratios.append(times["off"] / times["on"])
        return ratios

    results = {}
    for name, (off, on) in levers(model, step).items():
        if args.only in name:
            results[name] = interleaved(off, on, packed, packed)
    masked = [{k: v for k, v in b.items() if k != "segments"} for b in packed]  # attention over the masked square
    for name, off_batches in (("per-example attention (vs the block-diagonal mask)", masked),
                              ("packed rows (vs right-padded batches)", padded)):
        if args.only in name:
            results[name] = interleaved(lambda: None, lambda: None, off_batches, packed)
    report = {"settings": vars(args), "levers": {}}
    for name, ratios in results.items():
        q1, med, q3 = statistics.quantiles(ratios, n=4)
        report["levers"][name] = {"step_time_ratio_off_over_on": med, "quartiles": [q1, q3], "ratios": ratios}
        print(f"{name:>72}: step time without / with = {med:.3f} (quartiles {q1:.3f}-{q3:.3f})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
