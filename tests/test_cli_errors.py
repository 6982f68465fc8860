"""Bad input: one line `error: ...` that says how to fix it, exit code 2, no traceback, results kept."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from conftest import TINY_ARGS, run_cli, write_records

GOOD = [{"instruction": f"Say {i}", "input": "", "output": f"n{i}"} for i in range(12)]


def _data(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


CASES = {
    "missing data file": (lambda t: ["--dataset", str(t / "missing.json")], "data file not found"),
    "malformed json": (lambda t: ["--dataset", _data(t, "bad.json", "{oops")], "is not valid JSON"),
    "malformed jsonl": (lambda t: ["--dataset", _data(t, "bad.jsonl", '{"a": 1}\n{oops\n')], "line 2 is not valid JSON"),
    "wrong top-level type": (lambda t: ["--dataset", _data(t, "d.json", {"x": 1})], "must hold a JSON list"),
    "record without output": (lambda t: ["--dataset", _data(t, "d.json", [{"instruction": "a"}] * 3)],
                              "has no 'output' field"),
    "record without instruction": (lambda t: ["--dataset", _data(t, "d.json", [{"output": "a"}] * 3)],
                                   "has no 'instruction' field"),
    "empty after filtering": (lambda t: ["--dataset", _data(t, "d.json", [{"instruction": "", "output": "x"}] * 5)],
                              "0 usable record"),
    "rank zero": (lambda t: ["--ranks", "0", "8"], "rank 0 is not a positive integer"),
    "negative rank": (lambda t: ["--ranks", "-4"], "rank -4 is not a positive integer"),
    "float rank": (lambda t: ["--ranks", "8.5"], "sweep.ranks must be an integer, got '8.5'"),
    "rank wider than a layer": (lambda t: ["--ranks", "8", "128"], r"exceed min\(d_in, d_out\) = 64"),
    "duplicate ranks": (lambda t: ["--ranks", "8", "8"], "duplicate ranks"),
    "unknown target module": (lambda t: ["lora.target_modules=[q_proj,qkv]"], r"unknown target module\(s\) qkv"),
    "unknown config key": (lambda t: ["train.lerning_rate=1e-3"], "did you mean"),
    "bad override syntax": (lambda t: ["train.max_steps"], "must look like section.key=value"),
    "missing config file": (lambda t: ["--config", str(t / "none.yaml")], "config file not found"),
    "missing model dir": (lambda t: ["--model", str(t / "no_model")], "model directory not found"),
    "unknown hub model offline": (lambda t: ["--model", "no-such-org/no-such-model"],
                                  "cannot load model 'no-such-org/no-such-model' from the Hugging Face hub"),
    "output dir not writable": (lambda t: ["--output-dir", _data(t, "a_file", "x") + "/sub"], "is not writable"),
    "every example too long": (lambda t: ["data.max_length=20"], r"96 of 96 examples are longer than data.max_length=20"),
    "bad alpha policy": (lambda t: ["--alpha-policy", "sqrt"], "alpha policy 'sqrt' is unknown"),
    "non-string field": (lambda t: ["--dataset", _data(t, "d.json", [{"instruction": "a", "output": ["x"]}] * 3)],
                         "field 'output' is a list, not a string"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_one_line_exit_2(case, tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine without network (no retries)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    make_args, pattern = CASES[case]
    out_dir = tmp_path / "out"
    code = run_cli("run", *TINY_ARGS, "--output-dir", str(out_dir), *make_args(tmp_path))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2
    assert len(lines) == 1, err
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in err
    assert not out_dir.exists() or not (out_dir / "sweep.json").exists()  # nothing recorded for a bad run


def test_bad_data_leaves_no_output_directory(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\n')
    assert run_cli("run", *TINY_ARGS, "--dataset", str(bad), "--output-dir", str(tmp_path / "new")) == 2
    assert "messages" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_results_on_disk_survive_bad_input(tiny_sweep, tmp_path, capsys):
    before = {p: p.read_bytes() for p in tiny_sweep.rglob("*.json")}
    code = run_cli("run", *TINY_ARGS, "--output-dir", str(tiny_sweep), "--ranks", "0")
    assert code == 2
    code = run_cli("run", *TINY_ARGS, "--output-dir", str(tiny_sweep), "--dataset", str(tmp_path / "nope.json"))
    assert code == 2
    assert {p: p.read_bytes() for p in tiny_sweep.rglob("*.json")} == before


def test_changed_config_in_same_dir_is_refused(tiny_sweep, capsys):
    code = run_cli("run", *TINY_ARGS, "--output-dir", str(tiny_sweep), "train.batch_size=2")
    err = capsys.readouterr().err
    assert code == 2 and "different config (changed: train.batch_size)" in err and "new --output-dir" in err


def test_a_directory_from_an_earlier_version_is_refused_with_the_reason(tiny_sweep, tmp_path, capsys):
    import json
    import shutil

    old = tmp_path / "old"
    shutil.copytree(tiny_sweep, old)
    sweep = json.loads((old / "sweep.json").read_text())
    del sweep["fixed_config"]["eval"]  # as written before the eval section existed
    sweep["fingerprint"] = "older"
    (old / "sweep.json").write_text(json.dumps(sweep))
    assert run_cli("run", *TINY_ARGS, "--output-dir", str(old)) == 2
    assert "written by an earlier lorarank, whose config had no eval" in capsys.readouterr().err


def test_real_process_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lorarank", "run", *TINY_ARGS, "--output-dir", str(tmp_path / "o"),
                           "--ranks", "x"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: sweep.ranks must be an integer, got 'x'"


def test_report_on_non_sweep_dir(tmp_path, capsys):
    assert run_cli("report", str(tmp_path)) == 2
    assert "is not a lorarank sweep directory" in capsys.readouterr().err


def test_4bit_without_cuda(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = run_cli("run", *TINY_ARGS, "--output-dir", str(tmp_path / "o"), "--model", "smollm2-135m", "--load-in-4bit")
    assert code == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "o" / "sweep.json").exists()
