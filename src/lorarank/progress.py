"""Progress bars of a sweep: one per trial (steps, with their total and an ETA) and one for the sweep.

The sweep bar counts predicted training FLOPs, not trials: ranks cost different amounts (rank 64
adds about a quarter to SmolLM2-135M's step), so "3 of 4 trials done" says little about the time
left. Each trial advances the bar by its cost-model prediction (cost.train_flops_per_token: every
trial of a sweep trains on the same tokens), and tqdm's average rate over the finished trials
(smoothing=0) turns the predicted FLOPs still to run into the ETA. Until the first trial finishes
there is no rate, and no ETA is shown.
"""

from __future__ import annotations

from dataclasses import dataclass

from tqdm.auto import tqdm

from lorarank import cost
from lorarank.trial import Trial


@dataclass(frozen=True)
class SweepCost:
    """What the sweep bar needs from the model and data to weigh each trial."""

    shape: cost.Shape
    head_share: float  # f: completion tokens / tokens of the training split

    def of(self, trial: Trial) -> float:
        """Predicted training FLOPs per token of `trial` (the token count is the same for all)."""
        if trial.method == "full":
            return cost.full_train_flops_per_token(self.shape, self.head_share)
        return cost.train_flops_per_token(self.shape, trial.rank, self.head_share)


class SweepBar:
    """The sweep's bar: trials done of all, with an ETA weighed by the cost model."""

    def __init__(self, todo: list[Trial], weigh: SweepCost, disable: bool, desc: str = "sweep"):
        self.weigh, self.n, self.done, self.desc = weigh, len(todo), 0, desc
        self.bar = tqdm(total=sum(weigh.of(t) for t in todo), desc=self._label(), disable=disable, position=0,
                        smoothing=0, bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")

    def _label(self) -> str:
        return f"{self.desc} {self.done}/{self.n} trials"

    def finished(self, trial: Trial) -> None:
        self.done += 1
        self.bar.set_description_str(self._label(), refresh=False)
        self.bar.update(self.weigh.of(trial))

    def close(self) -> None:
        self.bar.close()


def trial_bar(name: str, steps: int, disable: bool) -> tqdm:
    """One trial's optimizer steps, of `steps` in all, with tqdm's rate and ETA."""
    return tqdm(total=steps, desc=name, unit="step", leave=False, disable=disable, position=1)
