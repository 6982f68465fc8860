"""What is measured besides eval loss and accuracy, set up once per process: forgetting and intruders.

- Forgetting (Biderman et al. 2024): the loss on held-out general text (forgetting.py), for the base
  model once per sweep and for every trained adapter; forgetting = trial − base, paired per token.
- Intruder dimensions (Shuttleworth et al. 2024): new dominant singular directions in W + ΔW
  (analysis/intruders.py). The SVD of each frozen W is cached for the process, since every trial of a
  sweep shares the frozen base.
"""

from __future__ import annotations

from dataclasses import dataclass

from lorarank.analysis import intruders
from lorarank.config import EvalConfig
from lorarank.forgetting import GeneralText, general_loss, load_general_text


@dataclass
class Probes:
    cfg: EvalConfig
    general: GeneralText | None
    cache: intruders.BasisCache

    @classmethod
    def setup(cls, cfg: EvalConfig, tokenizer) -> Probes:
        general = None
        if cfg.general_text != "none":
            path = None if cfg.general_text == "builtin" else cfg.general_text
            general = load_general_text(tokenizer, path, cfg.general_windows, cfg.general_window_tokens)
        return cls(cfg, general, intruders.BasisCache())

    @property
    def forgetting_on(self) -> bool:
        """Is the general-text loss measured (eval.general_text is not `none`)?"""
        return self.general is not None

    @property
    def intruders_on(self) -> bool:
        """Are intruder dimensions counted (eval.intruders)?"""
        return self.cfg.intruders

    def describe(self) -> dict | None:
        """The general-text set, for sweep.json and baseline.json (None when the probe is off)."""
        return self.general.describe() if self.forgetting_on else None

    def general_loss(self, model, batch_size: int, pad_id: int, device, packed: bool) -> float:
        """The loss on the general text; only when forgetting_on (measure.py asks first)."""
        return general_loss(model, self.general, batch_size, pad_id, device, packed)

    def intruders(self, model) -> dict:
        """Intruder counts of a PEFT model's adapters (W' = W + γ·B·A per module); only when intruders_on."""
        return intruders.analyse(model, self.cfg.intruder_top_k, self.cfg.intruder_epsilon, self.cache)

    def intruders_full(self, base, tuned, target_modules: list[str]) -> dict:
        """Intruder counts of a fully fine-tuned copy on the modules LoRA would adapt; only when intruders_on."""
        return intruders.analyse_full(base, tuned, target_modules, self.cfg.intruder_top_k,
                                      self.cfg.intruder_epsilon, self.cache)
