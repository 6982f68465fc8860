"""Optional experiment trackers (TensorBoard, MLflow): each trial's curves and final results.

Trials are logged from their saved run_data as they finish, by the driver, so every executor gets
the same logging and a tracker can never disagree with the JSON, which stays the source of truth.
One TensorBoard run directory and one MLflow run per trial, named like the trial directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from lorarank.errors import UserError

FINAL_KEYS = ("final_train_loss", "final_eval_loss", "training_time_seconds", "tokens_per_second",
              "trainable_params", "effective_scale")


class Trackers:
    def __init__(self, names: list[str], out_dir: Path, tracking_uri: str = ""):
        self.names = list(names)
        self.out_dir = Path(out_dir)
        self.tracking_uri = tracking_uri or (self.out_dir / "mlruns").resolve().as_uri()
        if "tensorboard" in self.names:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: F401
            except ImportError:
                raise UserError("report.report_to=tensorboard needs TensorBoard: pip install tensorboard") from None
        if "mlflow" in self.names:
            try:
                import mlflow  # noqa: F401
            except ImportError:
                raise UserError("report.report_to=mlflow needs MLflow: pip install mlflow-skinny") from None

    def log_trial(self, rd: dict) -> None:
        if "tensorboard" in self.names:
            self._tensorboard(rd)
        if "mlflow" in self.names:
            self._mlflow(rd)

    def _tensorboard(self, rd: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(self.out_dir / "tensorboard" / rd["name"])) as w:
            for step, loss in zip(rd["steps"], rd["train_losses"]):
                w.add_scalar("loss/train", loss, step)
            for step, loss in zip(rd["eval_steps"], rd["eval_losses"]):
                w.add_scalar("loss/eval", loss, step)
            for key in FINAL_KEYS:
                if isinstance(rd.get(key), (int, float)):
                    w.add_scalar(f"final/{key}", rd[key], rd["steps"][-1] if rd["steps"] else 0)

    def _mlflow(self, rd: dict) -> None:
        import mlflow

        if self.tracking_uri.startswith("file:"):
            # a plain local store needs no server or database; recent MLflow asks for this opt-in
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_experiment(self.out_dir.name)
        with mlflow.start_run(run_name=rd["name"]):
            mlflow.log_params({"rank": rd["rank"], "seed": rd["seed"], "learning_rate": rd["learning_rate"],
                               "alpha_policy": rd["alpha_policy"], "method": rd.get("method", "lora"),
                               "trial_id": rd["trial_id"], "status": rd["status"]})
            for step, loss in zip(rd["steps"], rd["train_losses"]):
                mlflow.log_metric("train_loss", loss, step=step)
            for step, loss in zip(rd["eval_steps"], rd["eval_losses"]):
                mlflow.log_metric("eval_loss", loss, step=step)
            mlflow.log_metrics({k: float(rd[k]) for k in FINAL_KEYS if isinstance(rd.get(k), (int, float))})
