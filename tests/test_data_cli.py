"""Every record shape end to end through the CLI on the tiny model; bad data leaves results untouched."""

from __future__ import annotations

import json
import math
import re
import shutil

import pytest

from conftest import ROOT, TINY_ARGS, run_cli, write_records

EXAMPLES = ROOT / "examples" / "data"
FAST = ["--ranks", "2", "--max-steps", "2", "train.batch_size=2", "train.grad_accum=1", "train.eval_every=2",
        "data.num_examples=20"]


@pytest.mark.parametrize("name, record_format, extra", [
    ("chat.jsonl", "conversational", [f"data.eval_dataset={EXAMPLES / 'chat_eval.jsonl'}"]),
    ("sharegpt.json", "sharegpt", []),
    ("prompt_completion.json", "prompt-completion", []),
    ("prompt_completion_messages.json", "prompt-completion", ["data.exact_match=true"]),
    ("text.jsonl", "text", []),
])
def test_each_format_runs_end_to_end(name, record_format, extra, tmp_path):
    out = tmp_path / "out"
    assert run_cli("run", *TINY_ARGS, "--dataset", str(EXAMPLES / name), "--output-dir", str(out), *FAST, *extra) == 0
    data = json.loads((out / "sweep.json").read_text())["data"]
    assert data["record_format"] == record_format
    (trial,) = json.loads((out / "all_results.json").read_text()).values()
    assert trial["status"] == "ok" and math.isfinite(trial["final_eval_loss"])
    if name == "chat.jsonl":  # a separate eval file: all of it evaluated, nothing held out of training
        assert (data["eval_source"], data["n_eval"], data["n_train"]) == (str(EXAMPLES / "chat_eval.jsonl"), 40, 20)
    else:
        assert data["eval_source"].startswith(f"held out from {EXAMPLES / name}: 2 of 20 records")
    if name == "text.jsonl":
        assert data["trained_on"] == "every token (language modelling)"
    if extra == ["data.exact_match=true"]:  # user data scored as one family
        assert list(trial["accuracy"]["per_family"]) == ["all"]
        assert json.loads((out / "baseline.json").read_text())["accuracy"]["n"] == 2


def test_bad_data_leaves_an_existing_output_dir_byte_identical(tmp_path, capsys):
    data = shutil.copy(EXAMPLES / "text.jsonl", tmp_path / "data.jsonl")
    out = tmp_path / "out"
    args = ["run", *TINY_ARGS, "--dataset", str(data), "--output-dir", str(out), *FAST]
    assert run_cli(*args) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = {  # the same file, edited into a bad shape; the config (and so the output dir) is unchanged
        "mixed formats": ([{"text": "a b c"}, {"messages": [{"role": "user", "content": "a"}]}], "record 1 is conversational"),
        "empty messages": ([{"messages": []}], "record 0 has an empty 'messages' list"),
        "content not a string": ([{"messages": [{"role": "user", "content": 3}]}], r"messages\[0\] content is a int"),
    }
    for records, pattern in bad.values():
        write_records(data, records, jsonl=True)
        capsys.readouterr()
        assert run_cli(*args) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and re.search(pattern, errors[0]), errors
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_an_eval_file_of_another_format_is_refused_before_any_output(tmp_path, capsys):
    out = tmp_path / "out"
    code = run_cli("run", *TINY_ARGS, "--dataset", str(EXAMPLES / "chat.jsonl"), "--output-dir", str(out), *FAST,
                   f"data.eval_dataset={EXAMPLES / 'text.jsonl'}")
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "holds text records but" in errors[0]
    assert not out.exists()  # refused before the output directory is created
