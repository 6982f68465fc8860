"""The intruder analysis's time per trial: the low-rank Gram update against W' formed whole.

    python benchmarks/intruder_time.py                 # SmolLM2-135M, rank 8, 4 trials in one process
    python benchmarks/intruder_time.py --rank 64 --trials 3

A sweep analyses every trial's adapter against the same frozen projections, so the first trial of a
process also factors the base's 210 projections (BasisCache) and the later ones reuse them. Each
"trial" here is the cpu-default base with a rank-r adapter whose B is drawn at random (0.01-0.3 per
entry, so some modules get intruders and some do not), analysed by `intruders.analyse` (the code a
trial runs) and by the direct path it replaced, which forms W' = W + γ·B·A and its Gram matrix per
module (`module_intruders`, torch and scipy alternating module by module). Both paths get the same
adapters; their counts must agree and their cosines match to rounding (checked, printed). The first
trial's basis work is timed once for each path, each in a fresh cache. Writes JSON (--out) with the
CPU capability.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from common import CPU, machine, relative, write_report

from lorarank import lora
from lorarank.analysis import intruders
from lorarank.analysis.spectra import lora_factors
from lorarank.config import load_config
from lorarank.errors import UserError
from lorarank.model import load_base


def direct(model, cache: intruders.BasisCache) -> dict:
    """The path before the low-rank update: W' formed, its Gram matrix and top k, per module."""
    return {name: intruders.module_intruders(cache.basis(name, w), torch.addmm(w, b, a, alpha=gamma))
            for name, (b, a, gamma, w) in lora_factors(model).items()}


def randomize(model, seed: int) -> None:
    """A random B per module, its scale cycling through 0.01, 0.03 and 0.3."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i, (name, p) in enumerate(model.named_parameters()):
            if "lora_B" in name:
                p.normal_(0, (0.01, 0.03, 0.3)[i % 3], generator=g)


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--trials", type=int, default=4, help="adapters analysed in one process (a sweep's trials)")
    p.add_argument("--out", default="benchmarks/results/intruder_time.json")
    args = p.parse_args(argv)
    if args.trials < 2:
        p.error(f"--trials must be at least 2: the first trial also factors the base (got {args.trials})")
    if args.rank < 1:
        p.error(f"--rank must be a positive LoRA rank, e.g. --rank 8 (got {args.rank})")
    cfg = load_config("cpu-default", {"model.dtype": "float32"})
    base, _ = load_base(cfg.model, CPU)
    try:
        lora.check_ranks(base, cfg.lora.target_modules, [args.rank])
    except UserError as e:
        p.error(str(e))
    model = lora.attach(base, args.rank, lora.scaling_for(args.rank, cfg.lora.alpha, cfg.sweep.alpha_policies[0]),
                        0.0, cfg.lora.target_modules, 0)
    new_cache, old_cache = intruders.BasisCache(), intruders.BasisCache()
    paths = {"update": lambda: intruders.analyse(model, cache=new_cache)["per_module"],
             "direct": lambda: direct(model, old_cache)}  # path -> per-module intruders
    times = {path: [] for path in paths}
    worst, counts = 0.0, []
    for trial in range(args.trials):
        randomize(model, trial)
        # alternate which path goes first, so neither always runs on a warmer (or busier) machine
        per_module = {}
        for path in (("update", "direct") if trial % 2 == 0 else ("direct", "update")):
            t, per_module[path] = timed(paths[path])
            times[path].append(t)
        new, old = per_module["update"], per_module["direct"]
        if any(new[n]["count"] != old[n]["count"] for n in old):
            print(f"trial {trial}: intruder counts differ between the paths", file=sys.stderr)
            return 1
        worst = max(worst, max(abs(x - y) for n in old for x, y in zip(old[n]["max_cos"], new[n]["max_cos"])))
        counts.append(sum(m["count"] for m in new.values()))
        print(f"trial {trial}: update {times['update'][-1]:.2f} s, direct {times['direct'][-1]:.2f} s, "
              f"{counts[-1]} intruders in {len(new)} modules")
    later = {path: statistics.median(t[1:]) for path, t in times.items()}
    print(f"first trial (with the base's factorization): update {times['update'][0]:.2f} s, direct "
          f"{times['direct'][0]:.2f} s; later trials, median: update {later['update']:.2f} s, direct "
          f"{later['direct']:.2f} s ({later['direct'] / later['update']:.2f}x); largest cosine difference {worst:.1e}")
    write_report(args.out, {"machine": machine(), "settings": {**vars(args), "out": relative(args.out)},
                            "seconds": times, "later_trials_median": later, "intruders": counts,
                            "largest_cosine_difference": worst})
    return 0


if __name__ == "__main__":
    sys.exit(main())
