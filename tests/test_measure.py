"""measure.Clock: the per-measurement wall times that run_data.json and baseline.json record."""

from __future__ import annotations

import pytest

from lorarank import measure


def test_clock_sums_a_recurring_phase_in_first_run_order(monkeypatch):
    ticks = iter([1.0, 3.0, 10.0, 10.5, 20.0, 24.0])  # a: 2 s, b: 0.5 s, a again: 4 s
    monkeypatch.setattr(measure.time, "perf_counter", lambda: next(ticks))
    clock = measure.Clock()
    for name in ("a", "b", "a"):
        with clock.phase(name):
            pass
    assert clock.seconds == {"a": 6.0, "b": 0.5} and list(clock.seconds) == ["a", "b"]


def test_clock_records_a_phase_that_raises(monkeypatch):
    ticks = iter([0.0, 1.5])
    monkeypatch.setattr(measure.time, "perf_counter", lambda: next(ticks))
    clock = measure.Clock()
    with pytest.raises(ValueError), clock.phase("intruders"):
        raise ValueError("a failing measurement")
    assert clock.seconds == {"intruders": 1.5}


@pytest.mark.slow
def test_a_trial_records_only_the_measurements_that_ran(tmp_path):
    """With accuracy, the general-text probe and intruders off, a trial times its spectra and the saved
    adapter only, and the base model its eval loss only."""
    import json

    from conftest import LEAN, run_cli

    out = tmp_path / "lean"
    assert run_cli("run", "--config", "tiny", "--ranks", "2", "--max-steps", "2", *LEAN, "--output-dir", str(out)) == 0
    run = json.loads((out / "rank_2" / "run_data.json").read_text())
    assert list(run["measure_seconds"]) == ["spectra", "adapter_save"]
    assert run["accuracy"] is None and run["general_loss"] is None and run["intruders"] is None
    assert list(json.loads((out / "baseline.json").read_text())["measure_seconds"]) == ["eval_loss"]
