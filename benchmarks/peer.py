"""The peer stack: TRL's SFTTrainer + PEFT, configured sensibly for CPU, as the original experiment
ran one rank (fresh process, fresh model load, its own tokenization, evaluation, adapter save).

    python benchmarks/peer.py --rank 8 --out /tmp/peer_rank_8

The data, split, chat template, system prompt, LoRA settings, schedule and step count come from the
same lorarank config, so the peer does the same work as one lorarank trial. TRL gets the records in
its conversational prompt-completion form, so its loss is on the response tokens only. `--precision`
picks one of the peer's configurations (PRECISIONS).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

T0 = time.perf_counter()  # the process's own start: imports and model load count, as in the original

# the peer's configurations, as SFTConfig settings; the model is loaded in fp32 for each (TRL's bf16
# is autocast over fp32 weights)
PRECISIONS = {
    "fp32": {"bf16": False, "gradient_checkpointing": False},  # configured for a CPU without bf16 units
    "bf16_autocast": {"bf16": True, "gradient_checkpointing": False},
    "stock": {},  # TRL's own defaults: bf16 autocast and gradient checkpointing
}
# which configurations a benchmark compares with lorarank in each model.dtype
FOR_DTYPE = {"float32": ("fp32",), "bfloat16": ("bf16_autocast", "stock")}


def trl_rows(records, system_prompt: str = ""):
    from lorarank.data.format import user_message

    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [{"prompt": system + [{"role": "user", "content": user_message(r)}],
             "completion": [{"role": "assistant", "content": r["output"]}]} for r in records]


def sft_config(out_dir: str, *, batch: int, lr: float, max_length: int, seed: int, schedule: str = "constant",
               warmup_steps: int = 0, max_steps: int = -1, epochs: float = 1.0, eval_every: int | None = None,
               log_every: int = 1, grad_accum: int = 1, precision: str = "fp32"):
    """TRL's SFTConfig for the CPU, in one of PRECISIONS (fp32: without TRL's defaults of bf16 and
    gradient checkpointing)."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=out_dir, per_device_train_batch_size=batch, per_device_eval_batch_size=batch * 2,
        gradient_accumulation_steps=grad_accum, num_train_epochs=epochs, max_steps=max_steps, learning_rate=lr,
        lr_scheduler_type=schedule, warmup_steps=warmup_steps, max_grad_norm=1.0, max_length=max_length,
        fp16=False, use_cpu=True, optim="adamw_torch",
        logging_steps=log_every, save_strategy="no", eval_strategy="steps" if eval_every else "no",
        eval_steps=eval_every, report_to="none", seed=seed, dataloader_num_workers=0, packing=False,
        completion_only_loss=True, **PRECISIONS[precision],
    )


def peft_config(rank: int, alpha: float, dropout: float, targets: list[str]):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none",
                      task_type="CAUSAL_LM")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="one rank of the peer stack, as the original experiment ran it")
    p.add_argument("--config", default="cpu-default", help="a preset name or a YAML file")
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32", help="the peer's configuration")
    args = p.parse_args(argv)

    import torch
    from datasets import Dataset
    from trl import SFTTrainer

    from lorarank.config import load_config
    from lorarank.data.records import load_records, split_records
    from lorarank.lora import scaling_for
    from lorarank.model import load_base

    cfg = load_config(args.config)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    base, tok = load_base(dataclasses.replace(cfg.model, dtype="float32"), torch.device("cpu"))  # see PRECISIONS
    train_recs, eval_recs = split_records(load_records(cfg.data), cfg.data.eval_fraction, cfg.data.split_seed)
    scaling = scaling_for(args.rank, cfg.lora.alpha, cfg.sweep.alpha_policies[0])
    steps = cfg.train.max_steps
    sft = sft_config(str(Path(args.out) / "trl"), batch=cfg.train.batch_size, lr=cfg.sweep.learning_rates[0],
                     max_length=cfg.data.max_length, seed=cfg.sweep.seeds[0], schedule=cfg.train.lr_schedule,
                     warmup_steps=int(cfg.train.warmup_ratio * steps), max_steps=steps,
                     eval_every=cfg.train.eval_every, log_every=cfg.train.log_every, grad_accum=cfg.train.grad_accum,
                     precision=args.precision)
    trainer = SFTTrainer(
        model=base, args=sft, processing_class=tok,
        train_dataset=Dataset.from_list(trl_rows(train_recs, cfg.data.system_prompt)),
        eval_dataset=Dataset.from_list(trl_rows(eval_recs, cfg.data.system_prompt)),
        peft_config=peft_config(args.rank, scaling.lora_alpha, cfg.lora.dropout, cfg.lora.target_modules))
    t_train = time.perf_counter()
    result = trainer.train()
    train_seconds = time.perf_counter() - t_train
    final_eval = trainer.evaluate()["eval_loss"]  # always evaluate after the last step, as lorarank does
    trainer.model.save_pretrained(str(Path(args.out) / "adapter"))
    report = {"rank": args.rank, "precision": args.precision, "train_seconds": train_seconds,
              "train_runtime": result.metrics["train_runtime"],
              "final_eval_loss": final_eval, "process_seconds": time.perf_counter() - T0,
              "steps": trainer.state.global_step}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "peer.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
