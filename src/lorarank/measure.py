"""What lorarank measures on a trained model: one code path for `lorarank run` and `lorarank analyze`.

- behaviour: eval loss on the completion tokens of the eval set (train.eval_loss), exact-match accuracy
  (evaluate.py) and the loss on held-out general text, the forgetting probe (probes.py). The same three
  numbers for the base model give the "rank 0" row.
- the update: ΔW = γ·B·A per adapted module, its spectrum (analysis/spectra.py) and intruder dimensions
  of W + ΔW (analysis/intruders.py); for full fine-tuning ΔW = W_tuned − W_base.

A trial takes its eval loss from the training loop's final evaluation, which runs this same
`train.eval_loss` on the same model, so `run` and `analyze` report one number for one adapter.

Each measurement's wall time goes to a Clock, recorded as `measure_seconds` (per trial in
run_data.json, for the base model in baseline.json): what a trial costs after training, by part.
"""

from __future__ import annotations

import contextlib
import time

import torch

from lorarank.analysis import spectra
from lorarank.config import Config
from lorarank.data.format import PreparedData
from lorarank.evaluate import dataset_accuracy, measures_accuracy
from lorarank.probes import Probes
from lorarank.train import eval_batch_size, eval_loss


class Clock:
    """Wall seconds per named measurement, summed when a name recurs, in the order they first ran."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


def loss_on_eval(model, data: PreparedData, cfg: Config, pad_id: int, device: torch.device) -> float:
    """Token-weighted mean completion loss on the eval set, batched as the training loop does."""
    return eval_loss(model, data.eval, eval_batch_size(cfg.train), pad_id, device, cfg.train.packing)


def behaviour(model, tokenizer, data: PreparedData | None, cfg: Config, device: torch.device,
              probes: Probes, clock: Clock) -> dict:
    """Task accuracy and general-text loss (None where there is no eval set or no probe; the clock
    times only what runs)."""
    out = {"accuracy": None, "general_loss": None}
    if measures_accuracy(data, cfg.data):
        with clock.phase("accuracy"):
            out["accuracy"] = dataset_accuracy(model, tokenizer, data, cfg.data, device)
    if probes.forgetting_on:
        with clock.phase("general_loss"):
            out["general_loss"] = probes.general_loss(model, eval_batch_size(cfg.train), tokenizer.pad_token_id,
                                                      device, cfg.train.packing)
    return out


def adapter_update(model, probes: Probes, clock: Clock) -> dict:
    """Spectra and intruder dimensions of a PEFT model's LoRA update."""
    return _update(lambda: spectra.analyse(model), lambda: probes.intruders(model), probes, clock)


def full_update(base, tuned, target_modules: list[str], probes: Probes, clock: Clock) -> dict:
    """The same for a fully fine-tuned copy, on the modules LoRA adapts (weights are not saved: too big)."""
    return _update(lambda: spectra.analyse_full(base, tuned, target_modules),
                   lambda: probes.intruders_full(base, tuned, target_modules), probes, clock)


def _update(spectra_of, intruders_of, probes: Probes, clock: Clock) -> dict:
    """{spectra, intruders} of one update, each timed; intruders only when the probe is on."""
    with clock.phase("spectra"):
        out = {"spectra": spectra_of(), "intruders": None}
    if probes.intruders_on:
        with clock.phase("intruders"):
            out["intruders"] = intruders_of()
    return out


def base_model(base, tokenizer, data: PreparedData | None, cfg: Config, device: torch.device,
               probes: Probes) -> dict:
    """The base model's row: eval loss (None without an eval set), accuracy, general-text loss, and
    the seconds each took."""
    clock = Clock()
    row = {"rank": 0, "eval_loss": None}
    if data is not None:
        with clock.phase("eval_loss"):
            row["eval_loss"] = loss_on_eval(base, data, cfg, tokenizer.pad_token_id, device)
    row.update(behaviour(base, tokenizer, data, cfg, device, probes, clock))
    row["general_text"] = probes.describe()
    row["seconds"] = sum(clock.seconds.values())
    row["measure_seconds"] = clock.seconds
    return row
