"""`lorarank analyze` on adapters trained outside lorarank, by stock PEFT in a plain loop and saved the way
TRL and Axolotl lay out an output_dir; the round trip against `lorarank run`; and every bad input.

All numbers are compared in float32 (model.dtype=float32): `auto` would pick bf16 on a CPU with bf16 units.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from conftest import run_cli

FP32 = "model.dtype=float32"
EVAL = ["--base", "tiny-random", "--eval-data", "instruct-suite", "--config", "tiny", FP32]
LR = 1e-3
STEPS = 6
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


# ---------------------------------------------------------------------------------------------- a plain PEFT loop


def _batch(examples, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch; labels are the completion tokens (-100 elsewhere), as a TRL SFT run trains."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id)
    labels = torch.full((len(examples), width), -100)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        attn[i, :n] = 1
        labels[i, :n] = torch.where(torch.tensor(e.loss_mask), torch.tensor(e.input_ids), -100)
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}


def train_plain(data, tok, rank: int, seed: int, out: Path, final_in_root: bool) -> None:
    """Train one adapter with PEFT and AdamW, saving checkpoint-N/ (adapter + trainer_state.json) every
    2 steps like a Trainer; Axolotl-style runs also save the final adapter into the output_dir."""
    from peft import LoraConfig, get_peft_model
    from transformers import TrainerState

    from lorarank.builtin_models import tiny_random_model

    pad_id = tok.pad_token_id
    base = tiny_random_model(len(tok), torch.float32)
    torch.manual_seed(seed)
    model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=TARGETS))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    order = torch.Generator().manual_seed(seed)
    log = []
    for step in range(1, STEPS + 1):
        picks = torch.randint(len(data.train), (8,), generator=order).tolist()
        loss = model(**_batch([data.train[i] for i in picks], pad_id)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        log.append({"epoch": step / STEPS, "learning_rate": LR, "loss": round(loss.item(), 4), "step": step})
        if step % 2 == 0:
            with torch.no_grad():
                model.eval()
                log.append({"epoch": step / STEPS, "eval_loss": model(**_batch(data.eval, pad_id)).loss.item(),
                            "step": step})
                model.train()
            ckpt = out / f"checkpoint-{step}"
            model.save_pretrained(ckpt)
            TrainerState(global_step=step, max_steps=STEPS, logging_steps=1, eval_steps=2, save_steps=2,
                         log_history=list(log)).save_to_json(str(ckpt / "trainer_state.json"))
    if final_in_root:
        model.save_pretrained(out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """2 ranks x 3 seeds: seed 1 and 3 as TRL output_dirs (checkpoints only), seed 2 as Axolotl's
    (checkpoints plus the final adapter in the output_dir)."""
    from lorarank.builtin_models import tiny_tokenizer
    from lorarank.config import load_config
    from lorarank.data.format import prepare

    tok = tiny_tokenizer()
    data = prepare(load_config("tiny").data, tok)
    root = tmp_path_factory.mktemp("runs")
    for rank in (2, 8):
        for seed in (1, 2, 3):
            style = "axolotl" if seed == 2 else "trl"
            train_plain(data, tok, rank, seed, root / f"{style}-r{rank}-seed{seed}", style == "axolotl")
    return root


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()} if d.exists() else None


@pytest.fixture(scope="module")
def analysed(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("analysed") / "report"
    assert run_cli("analyze", str(runs / "*"), *EVAL, "--seed-pattern", r"seed(\d+)", "--output-dir", str(out)) == 0
    return out


# ---------------------------------------------------------------------------------------------- reading, known answers


def _adapter(rank: int, alpha: float, rslora: bool = False):
    from lorarank.adapters import Adapter

    return Adapter(Path(f"r{rank}-a{alpha}-{rslora}"), rank, alpha, rslora, TARGETS, None, [], "0" * 64, {}, {},
                   None, None, None)


@pytest.mark.parametrize("alphas, rslora, policy", [
    ({2: 16, 8: 16}, False, "constant"),       # one alpha: γ = 16/r
    ({2: 4, 8: 16}, False, "proportional"),    # alpha = 2r: γ = 2
    ({2: 16, 8: 16}, True, "rslora"),          # γ = 16/√r
    ({2: 2, 8: 8}, False, "constant"),         # alpha = r: neither rule; each row shows its γ = 1
    ({8: 16}, False, "constant"),              # a single adapter with alpha = 2r: one alpha
])
def test_alpha_policy_judged_across_adapters(alphas, rslora, policy):
    from lorarank.adapters import alpha_policies

    found = [_adapter(r, a, rslora) for r, a in alphas.items()]
    assert set(alpha_policies(found).values()) == {policy}
    assert [a.gamma for a in found] == [a.lora_alpha / (a.rank ** 0.5 if rslora else a.rank) for a in found]


def test_curves_from_trainer_state():
    """A Trainer's log_history: train entries, eval entries and the closing summary, as Trainer writes them."""
    from lorarank.adapters import curves

    state = {"global_step": 4, "log_history": [
        {"loss": 2.5, "learning_rate": 1e-4, "step": 1, "num_tokens": 100.0},
        {"loss": 2.0, "learning_rate": 2e-4, "step": 2, "num_tokens": 210.0},
        {"eval_loss": 1.9, "eval_runtime": 0.5, "step": 2},
        {"loss": 1.5, "learning_rate": 1e-4, "step": 4, "num_tokens": 400.0},
        {"eval_loss": 1.7, "step": 4},
        {"train_runtime": 12.5, "train_loss": 2.0, "step": 4}]}
    c = curves(state)
    assert (c.steps, c.train_losses, c.eval_steps, c.eval_losses) == ([1, 2, 4], [2.5, 2.0, 1.5], [2, 4], [1.9, 1.7])
    assert (c.peak_learning_rate, c.train_runtime, c.global_step, c.tokens_trained) == (2e-4, 12.5, 4, 400)


def test_last_checkpoint_or_the_named_one(tmp_path):
    from lorarank.adapters import find

    run = tmp_path / "run"
    for step in (5, 40, 100):  # 100 > 40 > 5: numeric, not lexical order
        (run / f"checkpoint-{step}").mkdir(parents=True)
        (run / f"checkpoint-{step}" / "adapter_config.json").write_text("{}")
    (run / "checkpoint-300").mkdir()  # a checkpoint without an adapter (interrupted save) is skipped
    assert find([str(run)]) == [run / "checkpoint-100"]
    assert find([str(run / "checkpoint-40")]) == [run / "checkpoint-40"]
    (run / "adapter_config.json").write_text("{}")  # the final adapter saved into the output_dir
    assert find([str(run)]) == [run]


# ---------------------------------------------------------------------------------------------- end to end


def test_analyze_end_to_end(analysed, runs):
    records = {p.parent.name: json.loads(p.read_text()) for p in analysed.glob("*/run_data.json")}
    assert sorted(records) == [f"rank_{r}_s{s}" for r in (2, 8) for s in (1, 2, 3)]
    for name, rec in records.items():
        rank, seed = map(int, re.fullmatch(r"rank_(\d+)_s(\d+)", name).groups())
        style = "axolotl" if seed == 2 else "trl"
        run_dir = runs / f"{style}-r{rank}-seed{seed}"
        # TRL layout: the last checkpoint; Axolotl layout: the final adapter in the output_dir
        assert Path(rec["source"]["adapter_path"]) == (run_dir if style == "axolotl" else run_dir / "checkpoint-6")
        # curves come from the last checkpoint's trainer_state.json, as logged
        state = json.loads((run_dir / "checkpoint-6" / "trainer_state.json").read_text())
        assert rec["train_losses"] == [e["loss"] for e in state["log_history"] if "loss" in e]
        assert rec["eval_steps"] == [2, 4, 6]
        assert rec["learning_rate"] == LR and rec["alpha_policy"] == "proportional" and rec["effective_scale"] == 2.0
        assert rec["trainable_params"] == rank * rec["params_per_rank"]
        assert "final_eval_loss" in rec["source"]["measured"] and "train_losses" in rec["source"]["from_trainer"]
        assert len(rec["source"]["weights_sha256"]) == 64
        assert list(rec["measure_seconds"]) == ["accuracy", "general_loss", "spectra", "intruders", "eval_loss"]
    analysis = json.loads((analysed / "analysis.json").read_text())
    pol = analysis["policies"]["proportional"]
    assert pol["n_seeds"] == 3 and pol["recommendation"] is not None
    readme = (analysed / "README.md").read_text()
    assert "over 3 seeds" in readme and "(90% CI " in readme and (analysed / "which_rank.png").is_file()
    assert ("paired by the seed labels read from the adapters' paths (--seed-pattern):** the pairing is the user's"
            in readme)
    # a plain loop: trainer_state.json names no trainer; PEFT's model card gives its version
    assert "| Trained by | trainer not named (trainer_state.json), PEFT 0." in readme
    for fig in ("rank_comparison.png", "adapter_analysis.png", "subspace_similarity.png", "forgetting.png"):
        assert (analysed / fig).stat().st_size > 10_000, fig
    assert json.loads((analysed / "subspace.json").read_text())["proportional"]["seed_vs_seed"]["ranks"] == [8, 8]


def test_report_rebuilds_analysis_from_json(analysed):
    before = (analysed / "README.md").read_text()
    assert run_cli("report", str(analysed)) == 0
    assert (analysed / "README.md").read_text() == before


def test_analyze_again_keeps_records(analysed, runs):
    """A second run on the same directory finds every adapter recorded and rewrites no record."""
    before = {p: p.read_bytes() for p in analysed.glob("*/run_data.json")}
    assert run_cli("analyze", str(runs / "*"), *EVAL, "--seed-pattern", r"seed(\d+)",
                   "--output-dir", str(analysed)) == 0
    assert {p: p.read_bytes() for p in analysed.glob("*/run_data.json")} == before


def test_without_eval_data_the_trainers_eval_loss_is_used(runs, tmp_path):
    out = tmp_path / "out"
    assert run_cli("analyze", str(runs / "*"), "--base", "tiny-random", "--config", "tiny", FP32,
                   "--seed-pattern", r"seed(\d+)", "--output-dir", str(out)) == 0
    for f in out.glob("*/run_data.json"):
        rec = json.loads(f.read_text())
        assert rec["final_eval_loss"] == rec["eval_losses"][-1] and rec["accuracy"] is None
        assert "final_eval_loss" in rec["source"]["from_trainer"] and "final_eval_loss" not in rec["source"]["measured"]
        assert "accuracy" not in rec["measure_seconds"] and "eval_loss" not in rec["measure_seconds"]  # not measured
    assert not (out / "baseline.json").exists()
    readme = (out / "README.md").read_text()
    assert "| Eval set | none given: eval losses are the trainers' own (trainer_state.json) |" in readme


def test_without_any_eval_loss_refused(tmp_path, capsys):
    adapter = _save(_lora(), tmp_path / "plain-peft")  # no trainer_state.json, no --eval-data
    assert run_cli("analyze", str(adapter), "--base", "tiny-random", "--output-dir", str(tmp_path / "out")) == 2
    assert re.fullmatch(r"error: no eval loss for .*plain-peft: .* pass --eval-data with the eval set, e\.g\. "
                        r"--eval-data eval\.jsonl", capsys.readouterr().err.strip())
    assert not (tmp_path / "out").exists()


def test_analyze_trl_output_dirs(tmp_path):
    """Real TRL SFTTrainer runs (2 ranks x 3 seeds), each output_dir as TRL leaves it: the final adapter and
    model card in the output_dir (or none, for a run without a final save), checkpoint-N/ with
    trainer_state.json."""
    pytest.importorskip("trl")
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from lorarank.builtin_models import tiny_random_model, tiny_tokenizer
    from lorarank.data import suite

    tok = tiny_tokenizer()
    rows = [{"prompt": r["instruction"] + (f"\n{r['input']}" if r.get("input") else ""), "completion": r["output"]}
            for r in suite.generate(96, seed=42)]
    for rank in (2, 8):
        for seed in (1, 2, 3):
            args = SFTConfig(output_dir=str(tmp_path / "runs" / f"r{rank}-seed{seed}"), max_steps=4, save_steps=2,
                             logging_steps=1, eval_strategy="steps", eval_steps=2, per_device_train_batch_size=8,
                             learning_rate=LR, seed=seed, report_to=[], use_cpu=True, max_length=128)
            trainer = SFTTrainer(model=tiny_random_model(len(tok), torch.float32), args=args,
                                 train_dataset=Dataset.from_list(rows[:80]), eval_dataset=Dataset.from_list(rows[80:]),
                                 processing_class=tok,
                                 peft_config=LoraConfig(r=rank, lora_alpha=16, target_modules=TARGETS))
            trainer.train()
            if seed != 3:  # seed 3: checkpoints only, as a run stopped before its final save
                trainer.save_model()
    out = tmp_path / "analysed"
    assert run_cli("analyze", str(tmp_path / "runs" / "*"), *EVAL, "--seed-pattern", r"seed(\d+)",
                   "--output-dir", str(out)) == 0
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*/run_data.json"))]
    assert len(records) == 6 and {r["rank"] for r in records} == {2, 8} and {r["seed"] for r in records} == {1, 2, 3}
    import trl

    for rec in records:
        run_dir = tmp_path / "runs" / f"r{rec['rank']}-seed{rec['seed']}"
        final = rec["seed"] != 3
        assert Path(rec["source"]["adapter_path"]) == (run_dir if final else run_dir / "checkpoint-4")
        # TRL's model card in the output_dir (written at each checkpoint too), or the checkpoint's PEFT card tags
        assert rec["source"]["trainer"]["name"] == "TRL" and rec["source"]["trainer"]["version"] == trl.__version__
        assert rec["source"]["trainer_state"].endswith("checkpoint-4/trainer_state.json")
        assert rec["eval_steps"] == [2, 4] and len(rec["train_losses"]) == 4
        assert rec["alpha_policy"] == "constant" and rec["effective_scale"] == 16 / rec["rank"]
    readme = (out / "README.md").read_text()
    assert f"| Trained by | TRL {trl.__version__}, PEFT " in readme and "over 3 seeds" in readme and "(90% CI " in readme


def test_modules_to_save_analysed_on_lora_parts(tmp_path):
    """An adapter that also saves a full lm_head is evaluated with it, its spectra cover the LoRA layers,
    the report says so, and the next adapter is measured on the untouched base."""
    from peft import get_peft_model

    from lorarank.builtin_models import tiny_random_model, tiny_tokenizer

    model = get_peft_model(tiny_random_model(len(tiny_tokenizer()), torch.float32),
                           _lora(2, modules_to_save=["lm_head"]))
    with torch.no_grad():  # a "trained" head: different from the base's
        model.base_model.model.lm_head.modules_to_save["default"].weight.mul_(0.5)
    model.save_pretrained(tmp_path / "with-head")
    plain = _save(_lora(4, init_lora_weights=False), tmp_path / "plain")  # B random, so ΔW != 0
    both, alone = tmp_path / "both", tmp_path / "alone"
    assert run_cli("analyze", str(tmp_path / "with-head"), str(plain), *EVAL, "--output-dir", str(both)) == 0
    assert run_cli("analyze", str(plain), *EVAL, "--output-dir", str(alone)) == 0
    head = json.loads((both / "rank_2" / "run_data.json").read_text())
    assert head["source"]["lora_parts_only"] and head["source"]["modules_to_save"] == ["lm_head"]
    assert set(head["spectra"]["by_type"]) == set(TARGETS)
    assert "| modules_to_save | lm_head: evaluated with the adapter, but spectra and intruders cover the LoRA " \
           "layers only |" in (both / "README.md").read_text()
    after, single = (json.loads((d / "rank_4" / "run_data.json").read_text()) for d in (both, alone))
    assert after["final_eval_loss"] == single["final_eval_loss"]
    assert after["general_loss"] == single["general_loss"]


# ---------------------------------------------------------------------------------------------- round trip


def test_round_trip_matches_the_sweep(tmp_path):
    """Adapters of `lorarank run`, analysed against the same eval set, give the sweep's own numbers."""
    sweep = tmp_path / "sweep"
    assert run_cli("run", "--config", "tiny", "--no-progress", "--ranks", "2", "4", "--seeds", "2",
                   "--output-dir", str(sweep), FP32) == 0
    out = tmp_path / "analysed"
    assert run_cli("analyze", str(sweep / "rank_*" / "adapter"), *EVAL, "--seed-pattern", r"_s(\d+)",
                   "--output-dir", str(out)) == 0
    names = sorted(p.parent.name for p in sweep.glob("rank_*/run_data.json"))
    assert names == ["rank_2_s42", "rank_2_s43", "rank_4_s42", "rank_4_s43"]
    for name in names:
        ran, got = (json.loads((d / name / "run_data.json").read_text()) for d in (sweep, out))
        assert got["source"]["trainer"]["name"] == "lorarank"
        for key in ("trainable_params", "total_params", "params_per_rank"):
            assert got[key] == ran[key], key
        assert got["final_eval_loss"] == pytest.approx(ran["final_eval_loss"], abs=1e-5)
        assert got["general_loss"] == pytest.approx(ran["general_loss"], abs=1e-5)
        for kind, spec in ran["spectra"]["by_type"].items():
            assert got["spectra"]["by_type"][kind]["normalized_spectrum"] == pytest.approx(
                spec["normalized_spectrum"], abs=1e-5)
            assert got["spectra"]["by_type"][kind]["effective_rank"] == pytest.approx(spec["effective_rank"], abs=1e-5)
        assert got["intruders"]["by_type"] == ran["intruders"]["by_type"]
        assert got["accuracy"]["overall"] == ran["accuracy"]["overall"]
    phi_ran, phi_got = (json.loads((d / "subspace.json").read_text())["constant"] for d in (sweep, out))
    for kind in ("small_vs_large", "seed_vs_seed"):
        for space in ("A", "delta_out"):
            for module, m in phi_ran[kind]["spaces"][space].items():
                assert torch.allclose(torch.tensor(phi_got[kind]["spaces"][space][module]["phi"]),
                                      torch.tensor(m["phi"]), atol=1e-5)
    base_ran, base_got = (json.loads((d / "baseline.json").read_text()) for d in (sweep, out))
    assert base_got["eval_loss"] == pytest.approx(base_ran["eval_loss"], abs=1e-5)


# ---------------------------------------------------------------------------------------------- bad input


def _save(model_config, path: Path, base_name: str | None = None) -> Path:
    """A real PEFT adapter of the tiny model, saved with save_pretrained (untrained: errors need no training)."""
    from peft import get_peft_model

    from lorarank.builtin_models import tiny_random_model, tiny_tokenizer

    model = get_peft_model(tiny_random_model(len(tiny_tokenizer()), torch.float32), model_config)
    model.save_pretrained(path)
    if base_name is not None:  # as an adapter trained on a hub model records it
        cfg = json.loads((path / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = base_name
        (path / "adapter_config.json").write_text(json.dumps(cfg))
    return path


def _lora(rank: int = 2, **kw):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS, **kw)


def _truncated(path: Path) -> Path:
    f = path / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return path


def _renamed_module(path: Path) -> Path:
    """An adapter of a model whose attention projection is called query_key_value (GPT-NeoX style)."""
    from safetensors.torch import load_file, save_file

    f = path / "adapter_model.safetensors"
    save_file({k.replace("q_proj", "query_key_value"): v for k, v in load_file(str(f)).items()}, str(f))
    return path


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    from peft import AdaLoraConfig, IA3Config

    return {
        "dora": ([str(_save(_lora(use_dora=True), tmp / "dora"))], r"is a DoRA adapter \(use_dora: true\)"),
        "ia3": ([str(_save(IA3Config(target_modules=["k_proj", "v_proj", "down_proj"],
                                     feedforward_modules=["down_proj"]), tmp / "ia3"))], r"is a IA3 adapter, not LoRA"),
        "adalora": ([str(_save(AdaLoraConfig(r=2, target_modules=TARGETS, total_step=10), tmp / "adalora"))],
                    r"is a ADALORA adapter, not LoRA"),
        "unreadable": ([str(_truncated(_save(_lora(), tmp / "truncated")))], r"unreadable weights"),
        "bases": ([str(_save(_lora(), tmp / "a", "org/model-a")), str(_save(_lora(4), tmp / "b", "org/model-b"))],
                  r"adapters of different base models \(org/model-a: .*; org/model-b: .*\): analyse each base"),
        "targets": ([str(_renamed_module(_save(_lora(), tmp / "neox")))],
                    r"adapts model\.layers\.0\.self_attn\.query_key_value and 1 more, which this base model does "
                    r"not have"),
        "empty glob": ([str(tmp / "nothing-here-*")], r"no LoRA adapter found under .*nothing-here-\*"),
        "seed label": ([str(_save(_lora(), tmp / "no-label")), "--seed-pattern", r"seed(\d+)"],
                       r"--seed-pattern .* matches nothing in"),
        "no checkpoint": ([str(tmp)], r"no LoRA adapter found under"),  # a directory of runs, not an adapter
    }


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> dict[str, tuple[list[str], str]]:
    return _bad_inputs(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case", ["dora", "ia3", "adalora", "unreadable", "bases", "targets", "empty glob",
                                  "no checkpoint", "seed label"])
def test_bad_input_one_line_exit_2_nothing_written(case, bad_inputs, analysed, tmp_path, capsys):
    paths, message = bad_inputs[case]
    for out in (tmp_path / "new", analysed):  # a new directory stays absent; an earlier analysis unchanged
        before = _snapshot(out)
        capsys.readouterr()
        assert run_cli("analyze", *paths, *EVAL, "--output-dir", str(out)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(message, err[0]), err
        assert _snapshot(out) == before
