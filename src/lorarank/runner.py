"""A trial runner: what one process needs to run trials, set up once.

The base model is loaded once, the data tokenized once, then any number of trials reuse them.
The local executor keeps one runner in the driver process; the Ray executor holds one per worker
(a Ray actor), so every worker also loads the base model once, not once per trial.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch

from lorarank import cost, env, fastpath, lora, measure, store
from lorarank.env import log
from lorarank.config import Config, config_hash
from lorarank.data.format import prepare
from lorarank.model import compute_dtype, load_base, pick_device
from lorarank.plan import token_mix
from lorarank.probes import Probes
from lorarank.progress import SweepCost
from lorarank.train import packing_matches, total_steps
from lorarank.trial import Trial, run_trial


def packing_works(cfg: Config, base, data, tokenizer, device: torch.device) -> bool:
    """train.packing, unless this model mixes packed examples in attention (then padded batches)."""
    if cfg.train.packing and not packing_matches(base, data.eval[:4], tokenizer.pad_token_id, device):
        log("this model mixes packed examples in attention: padding batches instead (slower, same results)")
        return False
    return cfg.train.packing


class TrialRunner:
    def __init__(self, cfg: Config):
        self.cfg = copy.deepcopy(cfg)
        self.device = pick_device()
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)
        self.base, self.tok = load_base(cfg.model, self.device)
        # the CPU fast path's levers, measured per CPU capability (fastpath/defaults.py): switched on
        # here for the base (attention) and by run_trial for each adapter, recorded in run_data.json
        self.levers = fastpath.levers_for(self.device, compute_dtype(self.base))
        fastpath.enable(self.base, self.levers)
        log(f"fast path: {fastpath.describe(self.levers)}")
        lora.check_ranks(self.base, cfg.lora.target_modules, cfg.sweep.ranks)
        self.data = prepare(cfg.data, self.tok)
        self.cfg.train.packing = packing_works(self.cfg, self.base, self.data, self.tok, self.device)
        self.probes = Probes.setup(cfg.eval, self.tok)

    def total_steps(self) -> int:
        """Optimizer steps of every trial (the same for every rank)."""
        return total_steps(self.cfg.train, len(self.data.train))

    def sweep_cost(self) -> SweepCost:
        """The cost model's view of this model and data, to weigh the trials in the sweep's ETA."""
        f = cost.head_share(*token_mix(self.data.train, self.cfg))  # as `lorarank plan` counts it
        return SweepCost(cost.Shape.of(self.base, self.cfg.lora.target_modules), f)

    def describe(self) -> dict:
        """Data statistics and the environment, for sweep.json."""
        d = self.data
        return {"data": {"fingerprint": d.fingerprint, "n_records": d.n_records, "n_train": len(d.train),
                         "n_eval": len(d.eval), "prompt_format": d.prompt_format,
                         "dropped_too_long": d.dropped_too_long, "families": d.families,
                         "record_format": d.record_format, "trained_on": d.trained_on, "eval_source": d.eval_source},
                "environment": env.describe(self.device, compute_dtype(self.base)), "packing": self.cfg.train.packing,
                "general_text": self.probes.describe()}

    def baseline(self, out: str | Path) -> dict:
        """The base model's eval loss (and task accuracy), once per sweep: the "rank 0" reference row.
        Under the directory's baseline lock, so concurrent processes compute it once."""
        with store.locked(Path(out) / store.LOCK_DIR / "baseline.lock"):
            return self._baseline(Path(out))

    def _baseline(self, out: Path) -> dict:
        cfg, data = self.cfg, self.data
        path = out / store.BASELINE_FILE
        key = config_hash({"model": cfg.model.__dict__, "data": data.fingerprint, "acc": cfg.data.accuracy_examples,
                           "new_tokens": cfg.data.max_new_tokens, "general": self.probes.describe()})
        if path.is_file():
            try:
                previous = store.read_checked(path)
            except store.UnreadableFile as exc:  # a cache of numbers this run can compute again
                env.warn(f"{exc.what}; computing it again")
                previous = {}
            if previous.get("key") == key:
                return previous
        baseline = {"key": key, **measure.base_model(self.base, self.tok, data, cfg, self.device, self.probes)}
        store.write_json(path, baseline)
        acc = f", accuracy {baseline['accuracy']['overall']:.1%}" if baseline["accuracy"] else ""
        log(f"base model (rank 0): eval loss {baseline['eval_loss']:.4f}{acc}")
        return baseline

    def run(self, trial: Trial, trial_config: dict, out: str | Path, progress=None) -> tuple[Trial, dict | None]:
        """(trial, its run_data), or (trial, None) when another process holds the trial's claim or
        recorded it since this sweep was planned."""
        out = Path(out)
        with store.claim(out, trial.trial_id) as mine:
            name = store.reserve(out, trial.trial_id, trial.name) if mine else None
            if name is None:
                return trial, None
            trial = dataclasses.replace(trial, name=name)
            self.base, run_data = run_trial(self.base, self.tok, self.data, self.cfg, trial, trial_config, out,
                                            self.device, self.probes, self.levers, progress=progress)
        return trial, run_data
