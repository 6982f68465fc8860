"""Progress bars: a trial's bar counts its steps of a known total; the sweep's weighs trials by FLOPs."""

from __future__ import annotations

import re

from lorarank import cost
from lorarank.progress import SweepBar, SweepCost
from lorarank.trial import Trial

from conftest import LEAN, run_cli

SHAPE = cost.Shape(body=1000, head=500, params_per_rank=10)


def trial(rank: int, method: str = "lora") -> Trial:
    return Trial(rank, 42, 1e-3, "constant", f"rank_{rank}", f"id{rank}", method=method)


def test_trials_are_weighed_by_their_predicted_flops(capsys):
    weigh = SweepCost(SHAPE, head_share=0.2)
    assert weigh.of(trial(8)) == 4 * 1000 + 4 * 500 * 0.2 + 6 * 8 * 10  # 4·N_body + 4·N_head·f + 6·r·P
    assert weigh.of(trial(0, "full")) == 6 * (1000 + 500 * 0.2)  # every weight trains: 6·N
    bar = SweepBar([trial(2), trial(64)], weigh, disable=False)
    bar.finished(trial(2))
    # rank 64 costs more than rank 2: one of two trials done is less than half of the predicted work
    assert bar.bar.n == weigh.of(trial(2)) and bar.bar.n / bar.bar.total < 0.5
    bar.close()  # draws the last state (tqdm redraws at most every 0.1 s)
    assert "sweep 1/2 trials:  35%" in capsys.readouterr().err  # 4520 of 12760 predicted FLOPs per token


def test_the_trial_bar_shows_steps_of_their_total(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert run_cli("run", "--config", "tiny", "--ranks", "2", "4", "--max-steps", "3", "train.eval_every=3", *LEAN,
                   "--output-dir", str(out)) == 0
    err = capsys.readouterr().err
    for name in ("rank_2", "rank_4"):
        assert re.search(rf"{name}: +100%\|[^|]*\| 3/3 \[", err), err  # n/total and tqdm's elapsed<remaining
    assert re.search(r"sweep 1/2 trials: +\d+%\|[^|]*\| \[\d\d:\d\d<\d\d:\d\d\]", err), err  # an ETA after one trial
