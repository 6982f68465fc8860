"""Reliability: resume after kill -9, crash isolation, divergence, checkpoints, determinism."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import LEAN, TINY_ARGS, run_cli
from lorarank import lora, store
from lorarank.config import ALL_PROJECTIONS, DataConfig, TrainConfig
from lorarank.data.format import prepare
from lorarank.train import Checkpointer, train

SLOW = ["--max-steps", "40", "train.eval_every=40", *LEAN]


def _start(out, *extra):
    return subprocess.Popen([sys.executable, "-m", "lorarank", "run", *TINY_ARGS, *SLOW, "--output-dir", str(out),
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc, timeout=600):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.02)


def test_sigkill_then_rerun_resumes(tmp_path):
    out = tmp_path / "sweep"
    proc = _start(out)
    first = out / "rank_2" / "run_data.json"
    _wait_for(first, proc)
    proc.send_signal(signal.SIGKILL)  # mid-way through rank 4, after rank 2 was recorded
    proc.wait()
    recorded = first.read_bytes()
    assert not (out / "rank_8" / "run_data.json").exists()
    assert run_cli("run", *TINY_ARGS, *SLOW, "--output-dir", str(out)) == 0
    assert first.read_bytes() == recorded  # not retrained, not rewritten: the record is byte-identical
    results = json.loads((out / "all_results.json").read_text())
    assert sorted(results, key=int) == ["2", "4", "8"]
    assert all(r["status"] == "ok" for r in results.values())
    readme = (out / "README.md").read_text()
    assert all(f"| {r} | {results[str(r)]['trainable_params']:,} (" in readme for r in (2, 4, 8))  # every rank reported
    assert (out / "rank_comparison.png").is_file()
    assert not list(out.rglob("*.tmp"))  # no half-written files left behind


def test_sigterm_stops_cleanly_with_resume_hint(tmp_path):
    out = tmp_path / "sweep"
    proc = _start(out)
    _wait_for(out / "rank_2" / "run_data.json", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "rerun the same command to resume" in err and "Traceback" not in err
    assert json.loads((out / "rank_2" / "run_data.json").read_text())["status"] == "ok"


def test_failure_in_one_trial_is_isolated(tmp_path, monkeypatch, capsys):
    import lorarank.trial as trial_mod

    real_train = trial_mod.train

    def flaky_train(model, *args, **kwargs):
        if sum(p.numel() for p in model.parameters() if p.requires_grad) == 4 * 4096:  # rank 4
            raise RuntimeError("injected failure")
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(trial_mod, "train", flaky_train)
    out = tmp_path / "sweep"
    assert run_cli("run", *TINY_ARGS, "--output-dir", str(out)) == 3  # some trials failed
    err = capsys.readouterr().err
    assert "1 trial(s) failed or diverged: 4" in err
    failed = json.loads((out / "rank_4" / "run_data.json").read_text())
    assert failed["status"] == "failed" and "injected failure" in failed["error"]
    assert "RuntimeError: injected failure" in (out / "rank_4" / "error.txt").read_text()
    for r in (2, 8):
        assert json.loads((out / f"rank_{r}" / "run_data.json").read_text())["status"] == "ok"
    readme = (out / "README.md").read_text()
    assert "## Failed or diverged trials" in readme and "| rank_4 | failed |" in readme
    # the failure was transient: a rerun retries only the failed trial, and archives the failed attempt
    monkeypatch.setattr(trial_mod, "train", real_train)
    ok_before = (out / "rank_2" / "run_data.json").read_bytes()
    assert run_cli("run", *TINY_ARGS, "--output-dir", str(out)) == 0
    assert json.loads((out / "rank_4" / "run_data.json").read_text())["status"] == "ok"
    assert not (out / "rank_4" / "error.txt").exists()  # no stale error beside the good record
    attempt = out / "rank_4" / "failed_attempts" / "1"
    assert json.loads((attempt / "run_data.json").read_text())["status"] == "failed"
    assert "injected failure" in (attempt / "error.txt").read_text()
    assert (out / "rank_2" / "run_data.json").read_bytes() == ok_before


def test_nan_loss_marks_trial_diverged(tmp_path, monkeypatch):
    import lorarank.train as train_mod

    real_loss = train_mod.completion_loss
    calls = {"n": 0}

    def nan_after_two(model, batch):
        loss, n = real_loss(model, batch)
        calls["n"] += model.training
        if model.training and calls["n"] > 2:  # two micro-batches per step: step 2 is the first NaN
            loss = loss * float("nan")
        return loss, n

    monkeypatch.setattr(train_mod, "completion_loss", nan_after_two)
    out = tmp_path / "sweep"
    assert run_cli("run", *TINY_ARGS, "--ranks", "2", "--output-dir", str(out)) == 3
    run = json.loads((out / "rank_2" / "run_data.json").read_text())
    assert run["status"] == "diverged" and "non-finite train loss" in run["error"]
    assert run["steps"][-1] == 2 < run["total_steps"]  # stopped early, at the first NaN step
    assert run["final_eval_loss"] is None
    assert "| rank_2 | diverged |" in (out / "README.md").read_text()


def test_two_identical_runs_give_identical_losses(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli("run", *TINY_ARGS, "--output-dir", str(a)) == 0
    assert run_cli("run", *TINY_ARGS, "--output-dir", str(b)) == 0
    for r in (2, 4, 8):
        ra = json.loads((a / f"rank_{r}" / "run_data.json").read_text())
        rb = json.loads((b / f"rank_{r}" / "run_data.json").read_text())
        assert ra["trial_id"] == rb["trial_id"]
        assert ra["train_losses"] == rb["train_losses"] and ra["eval_losses"] == rb["eval_losses"]


def test_checkpoint_resume_matches_uninterrupted_training(tiny_base, tmp_path):
    model, tok = tiny_base
    data = prepare(DataConfig(suite_size=60), tok)
    cfg = TrainConfig(batch_size=2, grad_accum=2, max_steps=6, log_every=1, eval_every=3, checkpoint_every=2)
    cpu = torch.device("cpu")

    def fresh():
        return lora.attach(copy.deepcopy(model), 4, lora.scaling_for(4, 8, "constant"), 0.1, ALL_PROJECTIONS, 7)

    straight = train(fresh(), data.train, data.eval, cfg, 1e-2, 7, 0, cpu)

    class Killed(Exception):
        pass

    def die_at_5(step, loss):
        if step == 5:
            raise Killed

    ckpt = Checkpointer(tmp_path / "checkpoint.pt", "trial-x", 2)
    with pytest.raises(Killed):
        train(fresh(), data.train, data.eval, cfg, 1e-2, 7, 0, cpu, on_step=die_at_5, checkpoint=ckpt)
    assert ckpt.path.is_file()
    resumed_model = fresh()
    resumed = train(resumed_model, data.train, data.eval, cfg, 1e-2, 7, 0, cpu, checkpoint=ckpt)
    assert resumed.train_losses == pytest.approx(straight.train_losses, abs=1e-6)
    assert resumed.eval_losses == pytest.approx(straight.eval_losses, abs=1e-6)
    assert resumed.steps == straight.steps and resumed.eval_steps == straight.eval_steps
    assert not ckpt.path.exists()  # removed once the trial completed
    other = Checkpointer(tmp_path / "checkpoint.pt", "another-trial", 2)
    assert other.restore(fresh(), torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))]))[0] == 0


def test_same_rank_other_lr_never_overwrites(tmp_path):
    out = tmp_path / "sweep"
    assert run_cli("run", *TINY_ARGS, "--ranks", "2", "--lr", "1e-3", "--output-dir", str(out)) == 0
    first = json.loads((out / "rank_2" / "run_data.json").read_text())
    assert run_cli("run", *TINY_ARGS, "--ranks", "2", "--lr", "5e-3", "--output-dir", str(out)) == 0
    kept = json.loads((out / "rank_2" / "run_data.json").read_text())
    assert kept["trial_id"] == first["trial_id"] and kept["train_losses"] == first["train_losses"]
    others = [p for p in out.glob("rank_2_*/run_data.json")]
    assert len(others) == 1 and json.loads(others[0].read_text())["learning_rate"] == 5e-3
    assert len(json.loads((out / "all_results.json").read_text())) == 2


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "x.json"
    store.write_json(path, {"a": 1})

    with pytest.raises(TypeError):
        store.write_json(path, {"a": object.__new__(type("X", (), {}))})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_trial_directories_stay_inside_the_output_dir(tmp_path):
    from lorarank.config import load_config
    from lorarank.sweep import expand

    cfg = load_config(TINY_ARGS[1], {"sweep.seeds": [1, 2], "sweep.learning_rates": [1e-3, 2e-3],
                                     "sweep.alpha_policies": ["constant", "rslora"]})
    names = [t.name for t, _ in expand(cfg)]
    assert len(set(names)) == len(names) == 3 * 2 * 2 * 2
    assert all("/" not in n and ".." not in n for n in names)
    assert "rank_2_s1_lr0.001_constant" in names
