"""What each speed lever of the training step is worth, measured in one process.

The machine's speed drifts by 10-30% within a minute, which swamps a few-percent lever when two
runs are timed one after the other. So every lever is measured in interleaved steps: for each batch,
one step with lorarank's loop as it is and one step with that lever switched off (order alternating),
on the same model, the same batch and the same optimizer settings; the per-step time ratio is
robust to drift. Reported: the median ratio and its quartiles per lever. "On" is the table's levers
for this CPU (fastpath.levers_for, fastpath/defaults.py), switched through lorarank.fastpath; each
"off" changes one lever; fused AdamW and packing are switched here, as train.py makes those choices.

`--dtype bfloat16` (the default on a CPU with bf16 units) measures every lever on a bf16 base with
fp32 adapters, plus the two choices that exist only there: the dtype of the fused layer's adapter
products and of per-example SDPA, the table's against the other one. A ratio below 1 says the other
setting is faster on this machine: the script then says that the table disagrees with its
measurement (the quartiles wholly below 1), and the table's entry for this capability class is the
one to revisit.

    python benchmarks/levers.py                   # SmolLM2-135M, rank 8, batch 4; writes benchmarks/results/levers_<class>_<dtype>.json
    python benchmarks/levers.py --dtype float32   # the fp32 base on a CPU with bf16 units
    python benchmarks/levers.py --model tiny-random --steps 2 --records 16 --threads 1 --out /tmp/levers.json   # a functional check
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import asdict, replace

import torch
from common import CPU, Step, attach, default_dtypes, examples, load, machine, relative, write_report

from lorarank import env, fastpath
from lorarank.fastpath import Levers
from lorarank.train import collate, collate_packed

OTHER_DTYPE = {"base": "fp32", "fp32": "base"}
OTHER_LAYOUT = {"laid_out": "plain", "plain": "laid_out"}  # the fused backward's two layouts (fused.LAYOUTS)
DTYPE_NAME = {"base": "the base's dtype", "fp32": "fp32"}
FUSED_ADAM = "fused AdamW (vs one tensor at a time)"
PACKED = "packed rows (vs right-padded batches)"


def fastpath_levers(on: Levers, dtype: str) -> dict[str, Levers]:
    """lever -> the table's setting `on` with that lever alone switched off (or, for the dtype
    choices of a half-precision base, switched to the other dtype)."""
    out = {
        "fused LoRA layer (vs PEFT's modules)": replace(on, fused=False),
        "fused layer + geometric-gap dropout (vs PEFT's modules + nn.Dropout)": replace(on, fused=False, dropout="plain"),
        f"fused backward in the {on.backward} layout (vs {OTHER_LAYOUT[on.backward]})":
            replace(on, backward=OTHER_LAYOUT[on.backward]),
        "per-example attention by split + enable_gqa (vs slices + repeated kv)": replace(on, attention="sliced"),
        "per-example attention (vs the block-diagonal mask)": replace(on, attention="masked"),
        "fused RMSNorm (vs transformers' module)": replace(on, norm=False),
    }
    if dtype != "float32":  # no-ops in fp32
        a, s = on.adapter_dtype, on.attention_dtype
        out[f"fused layer's adapter products in {DTYPE_NAME[a]} (vs {DTYPE_NAME[OTHER_DTYPE[a]]})"] = \
            replace(on, adapter_dtype=OTHER_DTYPE[a])
        out[f"per-example SDPA in {DTYPE_NAME[s]} (vs {DTYPE_NAME[OTHER_DTYPE[s]]})"] = \
            replace(on, attention_dtype=OTHER_DTYPE[s])
    return out


def switches(model, step: Step, on: Levers, dtype: str) -> dict:
    """lever -> (switch off, switch back on); each lever is switched off alone."""
    out = {name: (lambda off=off: fastpath.enable(model, off), lambda: fastpath.enable(model, on))
           for name, off in fastpath_levers(on, dtype).items()}
    out[FUSED_ADAM] = (lambda: setattr(step, "fused_adam", False), lambda: setattr(step, "fused_adam", True))
    return out


def disagreements(levers: dict) -> list[str]:
    """The levers whose "off" setting was faster in every quartile: where this machine's measurement
    contradicts the table."""
    return [name for name, r in levers.items() if r["quartiles"][1] < 1.0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=default_dtypes()[-1],
                   help="the base's model.dtype (default: bfloat16 on a CPU with bf16 units, else float32)")
    p.add_argument("--records", type=int, default=128)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=24, help="interleaved step pairs per lever")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--only", default="", help="measure only the levers whose name contains this text")
    p.add_argument("--out", default=None, help="default: benchmarks/results/levers_<capability class>_<dtype>.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu = env.cpu_capability()
    args.out = args.out or f"benchmarks/results/levers_{fastpath.capability_class(cpu)}_{args.dtype}.json"

    args.seed, args.max_length = 42, 256
    base, tok = load(args, args.dtype)
    exs = examples(args, tok)
    on = fastpath.levers_for(CPU, base.dtype)
    model = attach(base, args.rank, 16.0, 0.05, args.seed)  # with `on`, as the runner sets it up
    model.train()
    step = Step(model, 2e-4)
    groups = [exs[i:i + args.batch] for i in range(0, len(exs) - args.batch + 1, args.batch)]
    packed = [collate_packed(g, CPU) for g in groups]
    padded = [collate(g, tok.pad_token_id, CPU) for g in groups]
    for b in packed[:3]:  # warm-up
        step(b)

    def interleaved(off, on, batches_off) -> list[float]:
        ratios = []
        for i in range(args.steps):
            j = (3 + i) % len(packed)
            times = {}
            for which in (("on", "off") if i % 2 == 0 else ("off", "on")):
                (off if which == "off" else on)()
                times[which] = step((batches_off if which == "off" else packed)[j])
            on()
            ratios.append(times["off"] / times["on"])
        return ratios

    results = {name: interleaved(off, back, packed)
               for name, (off, back) in switches(model, step, on, args.dtype).items() if args.only in name}
    if args.only in PACKED:
        results[PACKED] = interleaved(lambda: None, lambda: None, padded)
    report = {"machine": machine(args.threads), "load_average": os.getloadavg(),
              "settings": {**vars(args), "out": relative(args.out)},
              "table": {"capability_class": fastpath.capability_class(cpu), "base_dtype": args.dtype,
                        "levers": asdict(on)}, "levers": {}}
    for name, ratios in results.items():
        q1, med, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        report["levers"][name] = {"step_time_ratio_off_over_on": med, "quartiles": [q1, q3], "ratios": ratios}
        print(f"{name:>72}: step time without / with = {med:.3f} (quartiles {q1:.3f}-{q3:.3f})")
    report["table_disagrees_on"] = disagreements(report["levers"])
    for name in report["table_disagrees_on"]:
        print(f"the table (fastpath/defaults.py, {report['table']['capability_class']}) disagrees with this "
              f"measurement: without '{name}' the step is faster")
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
