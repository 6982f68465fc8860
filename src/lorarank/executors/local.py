"""The local executor: one runner in this process, trials one after another."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from lorarank.config import Config
from lorarank.progress import SweepBar, trial_bar
from lorarank.runner import TrialRunner
from lorarank.trial import Trial


def run_local(cfg: Config, out: Path, todo: list[tuple[Trial, dict]], progress: bool,
              on_setup: Callable[[dict], None], on_result: Callable[[Trial, dict | None], None]) -> None:
    runner = TrialRunner(cfg)
    on_setup(runner.describe())
    runner.baseline(out)
    bar = SweepBar([t for t, _ in todo], runner.sweep_cost(), disable=not progress)
    for trial, tc in todo:
        step_bar = trial_bar(trial.name, runner.total_steps(), disable=not progress)

        def tick(step: int, loss: float) -> None:
            step_bar.update(1)
            step_bar.set_postfix(loss=f"{loss:.4f}")

        outcome = runner.run(trial, tc, out, progress=tick)
        step_bar.close()
        bar.finished(trial)
        on_result(*outcome)
    bar.close()
