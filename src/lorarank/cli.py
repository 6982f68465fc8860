"""Command line: `lorarank run | plan | report | analyze`.

Bad input ends with `error: <what is wrong and how to fix it>` on stderr and exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from pathlib import Path

from lorarank.errors import EXIT_TRIALS_FAILED, EXIT_USAGE, UserError

def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a YAML file or a preset name (default: cpu-default; `lorarank presets` lists them)")
    p.add_argument("--model", help="smollm2-135m | tiny-random | Hugging Face id | local directory")
    p.add_argument("--dataset", help="instruct-suite | path to .json/.jsonl | Hugging Face dataset id")
    p.add_argument("--ranks", nargs="+", metavar="R", help="LoRA ranks, e.g. --ranks 8 16 32 64")
    p.add_argument("--seeds", type=int, metavar="N", help="number of seeds (consecutive from the config's first seed)")
    p.add_argument("--lr", nargs="+", metavar="LR", help="peak learning rate(s); several = each rank at its best")
    p.add_argument("--alpha-policy", nargs="+", metavar="P", help="constant | proportional | rslora (several allowed)")
    p.add_argument("--full-ft", nargs="+", metavar="LR", help="add a full fine-tuning reference at these LR(s)")
    p.add_argument("--max-steps", metavar="N", help="optimizer steps per trial (0 = from epochs)")
    p.add_argument("--output-dir", help="where results go (default outputs/lora_rank_comparison)")
    p.add_argument("--executor", help="local (default) | ray")
    p.add_argument("--address", help="Ray cluster address for --executor ray (default: $RAY_ADDRESS or a local runtime)")
    p.add_argument("--load-in-4bit", action="store_const", const=True, default=None,
                   help="QLoRA: frozen base in 4-bit NF4 (CUDA + bitsandbytes)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="any config field, e.g. train.batch_size=8")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lorarank", description="Compare LoRA ranks with everything else held equal.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train one adapter per rank (x seed x LR x policy) and write the report")
    _config_args(run)
    run.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    plan = sub.add_parser("plan", help="dry run: parameters, memory and FLOPs per rank; needs only config.json")
    _config_args(plan)
    plan.add_argument("--json", action="store_true", help="print JSON instead of a table")
    report = sub.add_parser("report", help="rebuild plots and README of a sweep directory from its JSON")
    report.add_argument("directory", help="a sweep's output directory")
    sub.add_parser("presets", help="list the shipped configs (`--config NAME`)")
    an = sub.add_parser("analyze", help="the same report for LoRA adapters trained elsewhere (TRL, Axolotl, "
                        "Unsloth, PEFT scripts)")
    an.add_argument("adapters", nargs="+", metavar="ADAPTER_DIR",
                    help="PEFT adapter directories, or trainer output_dirs (their last checkpoint-N); globs allowed")
    an.add_argument("--base", help="the base model (default: the adapters' base_model_name_or_path)")
    an.add_argument("--eval-data", help="eval set: a .json/.jsonl file or hub id in any format lorarank reads, "
                    "or instruct-suite (its held-out split, as `lorarank run`)")
    an.add_argument("--general-text", help="text file for the forgetting probe (default: the built-in text; none = off)")
    an.add_argument("--output-dir", help="where the records and report go (default outputs/analyze)")
    an.add_argument("--seed-pattern", metavar="REGEX", help=r"seed label from each adapter's path, e.g. 'seed(\d+)'")
    an.add_argument("--config", help="a YAML file or preset for evaluation settings (model.dtype, data.*, eval.*)")
    an.set_defaults(overrides=[])
    return parser


def overrides_from(args: argparse.Namespace) -> dict:
    from lorarank.config_io import parse_override

    o: dict = {}
    for flag, key in (("model", "model.name"), ("dataset", "data.dataset"), ("ranks", "sweep.ranks"),
                      ("lr", "sweep.learning_rates"), ("alpha_policy", "sweep.alpha_policies"),
                      ("max_steps", "train.max_steps"), ("output_dir", "sweep.output_dir"),
                      ("load_in_4bit", "model.load_in_4bit"), ("full_ft", "sweep.full_finetune_lrs"),
                      ("executor", "sweep.executor"), ("address", "sweep.ray_address")):
        if getattr(args, flag) is not None:
            o[key] = getattr(args, flag)
    for text in args.overrides:
        key, value = parse_override(text)
        o[key] = value
    return o


def config_from(args: argparse.Namespace):
    from lorarank.config import load_config

    path = args.config
    overrides = overrides_from(args)
    if args.seeds is not None:
        if args.seeds < 1:
            raise UserError(f"--seeds {args.seeds}: give the number of seeds, at least 1")
        first = load_config(path, overrides).sweep.seeds[0]
        overrides["sweep.seeds"] = [first + i for i in range(args.seeds)]
    return load_config(path, overrides)


def cmd_run(args) -> int:
    from lorarank.report.which_rank import recommendation_line
    from lorarank.sweep import run_sweep

    outcome = run_sweep(config_from(args), progress=not args.no_progress)
    elsewhere = f", {len(outcome.elsewhere)} run by another process" if outcome.elsewhere else ""
    print(f"[lorarank] done in {outcome.wall_seconds:.0f} s: trained {len(outcome.trained)}, "
          f"skipped {len(outcome.skipped)} already finished{elsewhere}")
    plot = outcome.out_dir / "rank_comparison.png"
    print(f"[lorarank] report: {outcome.out_dir / 'README.md'}" + (f"  plot: {plot}" if plot.is_file() else ""))
    if outcome.failed:
        print(f"[lorarank] {len(outcome.failed)} trial(s) failed or diverged: {', '.join(outcome.failed)} "
              "(see the README and each trial's error.txt; rerun the same command to retry failed trials)",
              file=sys.stderr, flush=True)
    print(recommendation_line(outcome.analysis), flush=True)  # the answer users come for, last
    return EXIT_TRIALS_FAILED if outcome.failed else 0


def cmd_plan(args) -> int:
    from lorarank.plan import format_table, plan, to_json

    p = plan(config_from(args))
    print(to_json(p) if args.json else format_table(p))
    return 0


def cmd_report(args) -> int:
    from lorarank.report import build_report

    out = Path(args.directory)
    build_report(out)
    print(f"[lorarank] report rebuilt: {out / 'README.md'}")
    return 0


def cmd_presets(args) -> int:  # noqa: ARG001
    from lorarank.config_io import DEFAULT_PRESET, presets

    for name, path in presets().items():
        first = path.read_text().splitlines()[0].lstrip("# ")
        print(f"{name:<16}{' (default)' if name == DEFAULT_PRESET else '':<11}{first}")
    return 0


def cmd_analyze(args) -> int:
    from lorarank.analyze import Request, analyze
    from lorarank.config_io import parse_override
    from lorarank.report.which_rank import recommendation_line

    # section.key=value settings may sit among the directories (which may hold "=" themselves)
    words = list(args.adapters) + list(args.overrides)
    settings = [w for w in words if re.fullmatch(r"[a-z_]+\.[a-z_0-9]+=.*", w, re.S) and not Path(w).exists()]
    paths = [w for w in words if w not in settings]
    if not paths:
        raise UserError("no adapter directories given: lorarank analyze DIR... (PEFT adapters or trainer output_dirs)")
    req = Request(paths, args.base, args.eval_data, args.general_text, args.output_dir, args.seed_pattern,
                  args.config, dict(parse_override(w) for w in settings))
    out, analysis, done = analyze(req)
    print(f"[lorarank] analysed {len(done)} adapter(s); report: {out / 'README.md'}")
    print(recommendation_line(analysis), flush=True)
    return 0


def _sigterm_as_interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt  # SIGTERM (e.g. a job scheduler) stops like Ctrl-C: completed trials are kept


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come anywhere, also after options (argparse takes positionals once)
    stray = [x for x in extra if x.startswith("-") or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    for flag in ("ranks", "lr", "alpha_policy", "full_ft"):  # `--ranks 8 16 train.max_steps=5`: the last is an override
        values = getattr(args, flag, None)
        if values:
            setattr(args, flag, [v for v in values if "=" not in v] or None)
            args.overrides = list(args.overrides) + [v for v in values if "=" in v]
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        return {"run": cmd_run, "plan": cmd_plan, "report": cmd_report, "presets": cmd_presets,
                "analyze": cmd_analyze}[args.command](args)
    except UserError as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\n[lorarank] interrupted: finished trials are saved; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
