"""Optional trackers: TensorBoard event files and MLflow runs hold each trial's curves and results."""

from __future__ import annotations

import json

import pytest

from conftest import TINY_ARGS, run_cli


def test_tensorboard_and_mlflow(tmp_path):
    pytest.importorskip("tensorboard")
    mlflow = pytest.importorskip("mlflow")
    out = tmp_path / "tracked"
    assert run_cli("run", *TINY_ARGS, "--ranks", "2", "4", "--output-dir", str(out),
                   "report.report_to=[tensorboard, mlflow]") == 0
    run = json.loads((out / "rank_2" / "run_data.json").read_text())

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard" / "rank_2"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("loss/eval")] == pytest.approx(run["eval_losses"])
    assert [e.step for e in acc.Scalars("loss/train")] == run["steps"]

    mlflow.set_tracking_uri((out / "mlruns").resolve().as_uri())  # the default store, next to the results
    runs = mlflow.search_runs(experiment_names=[out.name], output_format="list")
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {"rank_2", "rank_4"}
    assert by_name["rank_2"].data.metrics["final_eval_loss"] == pytest.approx(run["final_eval_loss"])
    assert by_name["rank_2"].data.params["rank"] == "2"


def test_unknown_tracker_is_refused(tmp_path, capsys):
    assert run_cli("run", *TINY_ARGS, "report.report_to=[wandb]", "--output-dir", str(tmp_path / "o")) == 2
    assert "unknown tracker 'wandb'" in capsys.readouterr().err
