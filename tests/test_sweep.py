"""End to end on the tiny random Llama: every output, resume, report from JSON, adapter reload."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import TINY_ARGS, run_cli

EXPECTED = ["rank_comparison.png", "README.md", "all_results.json", "results.csv", "analysis.json", "sweep.json",
            "baseline.json"]
ORIGINAL_KEYS = ["rank", "trainable_params", "total_params", "trainable_ratio", "train_losses", "eval_losses",
                 "steps", "eval_steps", "final_train_loss", "final_eval_loss", "training_time_seconds"]


def test_every_output_is_written(tiny_sweep):
    for name in EXPECTED:
        assert (tiny_sweep / name).is_file(), name
    assert (tiny_sweep / "rank_comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((tiny_sweep / "all_results.json").read_text())
    assert sorted(results, key=int) == ["2", "4", "8"]  # keyed by rank, as the original
    for r in (2, 4, 8):
        run = json.loads((tiny_sweep / f"rank_{r}" / "run_data.json").read_text())
        assert results[str(r)] == run
        for key in ORIGINAL_KEYS:
            assert key in run, key
        assert run["status"] == "ok" and run["rank"] == r
        assert all(math.isfinite(x) for x in run["train_losses"] + run["eval_losses"])
        assert run["eval_steps"][-1] == run["steps"][-1] == 6  # eval always runs after the last step
        assert run["eval_steps"] == [4, 6]
        assert run["trainable_params"] == r * run["params_per_rank"]
        assert run["effective_scale"] == 32 / r
        assert run["accuracy"]["n"] == 8
        assert (tiny_sweep / f"rank_{r}" / "adapter" / "adapter_model.safetensors").is_file()
        # after training, each measurement's wall time, in the order they ran
        assert list(run["measure_seconds"]) == ["accuracy", "general_loss", "spectra", "intruders", "adapter_save"]
        assert all(s > 0 for s in run["measure_seconds"].values())
    base = json.loads((tiny_sweep / "baseline.json").read_text())
    assert list(base["measure_seconds"]) == ["eval_loss", "accuracy", "general_loss"]
    assert base["seconds"] == sum(base["measure_seconds"].values())
    csv_lines = (tiny_sweep / "results.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 4 and csv_lines[0].startswith("name,method,rank,seed")


def test_readme_answers_every_question(tiny_sweep):
    readme = (tiny_sweep / "README.md").read_text()
    assert readme.startswith("# LoRA Rank Comparison Results") and "## Which rank should I use?" in readme
    for r in (2, 4, 8):  # a results row per trained rank, with its recorded eval loss
        run = json.loads((tiny_sweep / f"rank_{r}" / "run_data.json").read_text())
        assert f"| {r} | {run['trainable_params']:,} (" in readme and f"{run['final_eval_loss']:.4f}" in readme
    assert "| Rank | Trainable Params | Final Train Loss | Final Eval Loss | Time (s) |" in readme
    for q in ("Is there a point of diminishing returns?", "Does rank 2 do as well as rank 8?",
              "How do trainable parameters scale with rank?", "Is training time affected by rank?"):
        assert q in readme
    assert "exactly r × Σ(d_in + d_out) = r × 4,096" in readme
    assert "| 0 (base model) | 0 |" in readme


def test_report_rebuilds_identical_readme_from_json(tiny_sweep, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_sweep, copy)
    original = (copy / "README.md").read_text()
    for name in ("README.md", "rank_comparison.png", "all_results.json", "analysis.json", "results.csv"):
        (copy / name).unlink()
    for adapter in copy.glob("rank_*/adapter"):
        shutil.rmtree(adapter)  # the report needs JSON only
    assert run_cli("report", str(copy)) == 0
    assert (copy / "README.md").read_text() == original
    assert (copy / "rank_comparison.png").is_file()
    assert json.loads((copy / "all_results.json").read_text()) == json.loads((tiny_sweep / "all_results.json").read_text())


def test_rerun_skips_finished_trials(tiny_sweep, capsys):
    before = {r: (tiny_sweep / f"rank_{r}" / "run_data.json").stat().st_mtime_ns for r in (2, 4, 8)}
    assert run_cli("run", *TINY_ARGS, "--output-dir", str(tiny_sweep)) == 0
    captured = capsys.readouterr()
    assert "3 trials (0 to run, 3 already done)" in captured.out + captured.err
    after = {r: (tiny_sweep / f"rank_{r}" / "run_data.json").stat().st_mtime_ns for r in (2, 4, 8)}
    assert before == after


def test_saved_adapter_reloads_with_stock_peft(tiny_sweep):
    """PeftModel.from_pretrained on the same base reproduces the recorded final eval loss."""
    from peft import PeftModel

    from lorarank.config import load_config
    from lorarank.data.format import prepare
    from lorarank.model import load_base
    from lorarank.train import eval_loss

    cfg = load_config(TINY_ARGS[1])
    base, tok = load_base(cfg.model, torch.device("cpu"))
    data = prepare(cfg.data, tok)
    run = json.loads((tiny_sweep / "rank_4" / "run_data.json").read_text())
    model = PeftModel.from_pretrained(base, str(tiny_sweep / "rank_4" / "adapter"))
    loss = eval_loss(model, data.eval, cfg.train.batch_size * 2, tok.pad_token_id, torch.device("cpu"))
    assert abs(loss - run["final_eval_loss"]) < 1e-4
    assert abs(loss - json.loads((tiny_sweep / "baseline.json").read_text())["eval_loss"]) > 1e-3


def test_science_sections_and_figures(tiny_sweep):
    readme = (tiny_sweep / "README.md").read_text()
    sections = [line for line in readme.splitlines() if line.startswith("## ")]
    assert sections[0] == "## Which rank should I use?"  # the report opens with the decision
    for section in ("## Results", "## Answers", "## Were hypotheses confirmed?", "## What the adapters learned",
                    "## Forgetting and intruder dimensions", "## Capacity", "## Caveats", "## Related"):
        assert section in sections, section
    for fig in ("rank_comparison.png", "adapter_analysis.png", "subspace_similarity.png", "cost.png", "forgetting.png",
                "intruders.png"):
        assert f"![{fig}]({fig})" in readme and (tiny_sweep / fig).is_file()
    analysis = json.loads((tiny_sweep / "analysis.json").read_text())
    pol = analysis["policies"]["constant"]
    assert [h["rank"] for h in pol["hypotheses"]] == [8, 16, 32, 64]
    assert pol["hypotheses"][1]["verdict"] == "INCONCLUSIVE"  # rank 16 was not swept
    spec = pol["rows"]["8"]["spectra"]["overall"]
    assert 1.0 <= spec["effective_rank"] <= 8.0
    run = json.loads((tiny_sweep / "rank_8" / "run_data.json").read_text())
    assert len(run["spectra"]["per_module"]) == 2 * 7  # two layers, seven projections
    sub = pol["subspace"]["small_vs_large"]
    assert sub["ranks"] == [2, 8] and set(sub["spaces"]) == {"A", "delta_out"}
    assert [v["space"] for v in sub["verdicts"]] == ["A", "delta_out"]
    # the decisions and what they rest on live in analysis.json: thresholds and each row's trials
    assert analysis["thresholds"]["strong_phi"] == 0.5 and analysis["thresholds"]["equivalence_margin"] == 0.05
    assert [t["name"] for t in pol["rows"]["8"]["trials"]] == ["rank_8"]
    assert pol["returns"]["verdict"] == "untested"  # one seed: Answer 1 is a provisional reading
    assert readme.index("](which_rank.png)") < readme.index("## Setup") and (tiny_sweep / "which_rank.png").is_file()
    assert len(sub["spaces"]["A"]["q_proj"]["phi"]) == 2 and len(sub["spaces"]["A"]["q_proj"]["phi"][0]) == 8
    # which rank: one seed, so no tested recommendation, and the measurements behind the evidence
    rec = pol["recommendation"]
    assert rec["tested"] is False and rec["reason"] == "one seed gives no equivalence test: the seed noise is unknown"
    assert run["general_loss"] > 0 and run["intruders"]["k"] == 10 and len(run["intruders"]["per_module"]) == 14
    assert 0 < run["a_relative_change"]["overall"] < 1
    base = json.loads((tiny_sweep / "baseline.json").read_text())
    assert pol["rows"]["8"]["forgetting"]["mean"] == run["general_loss"] - base["general_loss"]
    assert pol["rows"]["8"]["params_per_token"] == run["trainable_params"] / run["completion_tokens_trained"]


def test_full_finetune_reference_row(tmp_path):
    out = tmp_path / "ft"
    assert run_cli("run", *TINY_ARGS, "--ranks", "2", "4", "--full-ft", "1e-4", "--output-dir", str(out)) == 0
    run = json.loads((out / "full_ft" / "run_data.json").read_text())
    assert run["method"] == "full" and run["status"] == "ok"
    assert run["trainable_params"] == run["total_params"]
    assert run["adapter_bytes"] is None and not (out / "full_ft" / "adapter").exists()
    assert list(run["measure_seconds"]) == ["accuracy", "general_loss", "spectra", "intruders"]  # nothing saved
    assert run["spectra"]["overall"]["effective_rank"] > 8  # a full-rank update
    readme = (out / "README.md").read_text()
    assert "| full fine-tuning (lr 0.0001) |" in readme and "| full FT |" in readme
    # the base model was not changed by the full fine-tuning copy: the LoRA trials' baseline still holds
    assert json.loads((out / "all_results.json").read_text()).keys() == {"2", "4", "full_ft"}


def test_run_ends_with_the_recommendation(tiny_sweep, tmp_path, capsys):
    import shutil

    copy = tmp_path / "again"
    shutil.copytree(tiny_sweep, copy)
    assert run_cli("run", *TINY_ARGS, "--output-dir", str(copy)) == 0  # nothing to train: report only
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("[lorarank] which rank: rank ") and "provisionally: untested with one seed" in last


def test_report_with_two_alpha_policies(tmp_path):
    out = tmp_path / "policies"
    assert run_cli("run", *TINY_ARGS, "--ranks", "2", "4", "--alpha-policy", "constant", "rslora",
                   "--output-dir", str(out)) == 0
    readme = (out / "README.md").read_text()
    for policy in ("constant", "rslora"):
        assert f"## Results (alpha policy `{policy}`)" in readme and f"## Answers (alpha policy `{policy}`)" in readme
        assert f"On eval loss (alpha policy `{policy}`):" in readme  # each policy gets its recommendation
    for fig in ("rank_comparison.png", "rank_comparison_rslora.png", "cost_rslora.png", "forgetting_rslora.png",
                "which_rank_rslora.png"):
        assert (out / fig).is_file() and f"![{fig}]({fig})" in readme
    analysis = json.loads((out / "analysis.json").read_text())
    assert list(analysis["policies"]) == ["constant", "rslora"]
    gammas = {p: analysis["policies"][p]["rows"]["4"]["effective_scale"] for p in ("constant", "rslora")}
    assert gammas == {"constant": 32 / 4, "rslora": 32 / 2}  # α/r and α/√r
    names = {p: [t["name"] for t in analysis["policies"][p]["rows"]["2"]["trials"]] for p in ("constant", "rslora")}
    assert names == {"constant": ["rank_2_constant"], "rslora": ["rank_2_rslora"]}


def test_checkpoint_every_resumes_an_interrupted_trial_through_the_cli(tmp_path, monkeypatch):
    """train.checkpoint_every reaches the trial: a trial interrupted at step 4 resumes from its step-4
    checkpoint on the rerun and ends with the losses of an uninterrupted run."""
    import lorarank.trial as trial_mod

    args = [*TINY_ARGS, "--ranks", "2", "train.checkpoint_every=2", "data.accuracy_examples=0"]
    straight = tmp_path / "straight"
    assert run_cli("run", *args, "--output-dir", str(straight)) == 0
    real_train = trial_mod.train

    def interrupted(*a, on_step=None, **kw):
        def stop_at_5(step, loss):
            if step == 5:
                raise KeyboardInterrupt
        return real_train(*a, on_step=stop_at_5, **kw)

    out = tmp_path / "resumed"
    monkeypatch.setattr(trial_mod, "train", interrupted)
    assert run_cli("run", *args, "--output-dir", str(out)) == 130
    assert (out / "rank_2" / "checkpoint.pt").is_file() and not (out / "rank_2" / "run_data.json").exists()
    monkeypatch.setattr(trial_mod, "train", real_train)
    assert run_cli("run", *args, "--output-dir", str(out)) == 0
    a, b = (json.loads((d / "rank_2" / "run_data.json").read_text()) for d in (straight, out))
    assert b["train_losses"] == pytest.approx(a["train_losses"], abs=1e-6)
    assert b["eval_losses"] == pytest.approx(a["eval_losses"], abs=1e-6)
    assert not (out / "rank_2" / "checkpoint.pt").exists()


def test_the_committed_three_seed_snapshot_rebuilds_from_its_json(tmp_path):
    """docs/results/cpu_default_3seeds holds the records of a real default sweep (3 seeds x 4 ranks,
    adapters left out); `lorarank report` rebuilds its README byte for byte from them."""
    import shutil
    from pathlib import Path

    snapshot = Path(__file__).resolve().parents[1] / "docs" / "results" / "cpu_default_3seeds"
    copy = tmp_path / "snapshot"
    shutil.copytree(snapshot, copy)
    (copy / "README.md").unlink()
    assert run_cli("report", str(copy)) == 0
    assert (copy / "README.md").read_text() == (snapshot / "README.md").read_text()
    analysis = json.loads((copy / "analysis.json").read_text())["policies"]["proportional"]
    assert analysis["recommendation"]["tested"] and analysis["recommendation"]["recommended"] == 32
    # forgetting per doubling, fitted per seed: +0.051, 95% CI −0.003 .. +0.104 over the seeds: not shown
    trend = analysis["forgetting_trend"]
    assert trend["verdict"] == "not_shown" and trend["slopes"]["low"] < 0 < trend["slopes"]["high"]
    slopes = trend["slopes"]
    assert slopes["per_seed"] == pytest.approx({"42": 0.0257, "43": 0.0624, "44": 0.0638}, abs=5e-5)
    assert (slopes["mean"], slopes["low"], slopes["high"]) == pytest.approx((0.0506, -0.0030, 0.1043), abs=5e-4)
    beta = analysis["rank_scaling"]["beta"]  # β per seed, then the t interval over the seeds
    assert (beta["low"], beta["high"]) == pytest.approx((0.155, 0.234), abs=5e-3)
    readme = (snapshot / "README.md").read_text()
    assert readme.index("![") < readme.index("## Setup") and "(which_rank.png)" in readme  # opens with the forest plot
    assert "**Yes: returns diminish from rank 32.**" in readme  # Answer 1 agrees with the recommendation
