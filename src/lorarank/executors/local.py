"""The local executor: one runner in this process, trials one after another."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from lorarank.config import Config
from lorarank.runner import TrialRunner
from lorarank.trial import Trial


def run_local(cfg: Config, out: Path, todo: list[tuple[Trial, dict]], progress: bool,
              on_setup: Callable[[dict], None], on_result: Callable[[Trial, dict | None], None]) -> None:
    runner = TrialRunner(cfg)
    on_setup(runner.describe())
    runner.baseline(out)
    bar = tqdm(total=len(todo), desc="sweep", unit="trial", disable=not progress, position=0)
    for trial, tc in todo:
        step_bar = tqdm(total=None, desc=trial.name, unit="step", leave=False, disable=not progress, position=1)

        def tick(step: int, loss: float) -> None:
            step_bar.update(1)
            step_bar.set_postfix(loss=f"{loss:.4f}")

        outcome = runner.run(trial, tc, out, progress=tick)
        step_bar.close()
        bar.update(1)
        on_result(*outcome)
    bar.close()
