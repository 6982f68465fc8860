"""The original LoRA rank comparison experiment, run by lorarank.

    python -m experiments.lora_rank.experiment [extra lorarank run arguments]

With a CUDA GPU it runs the original settings (the `original` preset: Qwen2.5-7B-Instruct, 500
yahma/alpaca-cleaned examples, ranks 8/16/32/64, alpha 32 constant, lr 2e-4, one epoch).
Without one it runs the embedded CPU default (the `cpu-default` preset: SmolLM2-135M on the
instruct-suite) and says so, in its first line and at the top of the generated README.
Outputs land in outputs/lora_rank_comparison/ either way.
"""

from __future__ import annotations

import sys

ORIGINAL_CONFIG = "original"  # presets shipped in src/lorarank/presets/
CPU_CONFIG = "cpu-default"

GPU_NOTE = ("Original setup: CUDA GPU found, so this ran Qwen2.5-7B-Instruct (4-bit QLoRA) on 500 "
            "yahma/alpaca-cleaned examples, as the original experiment did.")
CPU_NOTE = ("CPU fallback: no CUDA GPU was found, so this ran the embedded CPU default (SmolLM2-135M-Instruct "
            "on the instruct-suite, the cpu-default preset) instead of the original Qwen2.5-7B-Instruct QLoRA setup.")


def main(argv: list[str] | None = None) -> int:
    import torch

    from lorarank.cli import main as lorarank_main

    gpu = torch.cuda.is_available()
    note = GPU_NOTE if gpu else CPU_NOTE
    print(f"LoRA rank comparison: {note}", flush=True)
    config = ORIGINAL_CONFIG if gpu else CPU_CONFIG
    args = ["run", "--config", config, f"report.note={note}", *(sys.argv[1:] if argv is None else argv)]
    return lorarank_main(args)


if __name__ == "__main__":
    sys.exit(main())
