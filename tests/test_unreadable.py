"""One rule for every reader of a sweep directory: an unreadable run_data.json, sweep.json or
baseline.json (truncated, empty, binary, or not the shape lorarank writes) ends in one line naming
the file, exit 2, with every file on disk unchanged, or, where the command can go on without it, one
warning line and the command goes on (a run retrains that trial, or computes the base model's
scores again), with every other record unchanged. Never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lorarank import store

from conftest import TINY_ARGS, run_cli

FILES = {"run_data": "rank_4/run_data.json", "sweep": store.SWEEP_FILE, "baseline": store.BASELINE_FILE}


def truncated(raw: bytes) -> bytes:
    return raw[: len(raw) // 2]


def empty(raw: bytes) -> bytes:  # noqa: ARG001
    return b""


def binary(raw: bytes) -> bytes:  # noqa: ARG001
    return bytes(range(128, 256)) * 4  # no valid UTF-8 text


def wrong_schema(raw: bytes) -> bytes:
    """Valid JSON of the right kind, without the first key its readers need (trial_id, fingerprint, eval_loss)."""
    doc = json.loads(raw)
    doc.pop(next(iter(k for k in ("trial_id", "fingerprint", "eval_loss") if k in doc)))
    return json.dumps(doc).encode()


CORRUPTIONS = [truncated, empty, binary, wrong_schema]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".locks" not in p.parts}


@pytest.fixture
def corrupted(tiny_sweep, tmp_path):
    """A copy of the finished tiny sweep with one file corrupted: (dir, relative path, bad bytes)."""

    def make(which: str, corrupt) -> tuple[Path, str, bytes]:
        out = tmp_path / "sweep"
        shutil.copytree(tiny_sweep, out)
        rel = FILES[which]
        bad = corrupt((out / rel).read_bytes())
        (out / rel).write_bytes(bad)
        return out, rel, bad

    return make


def one_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


@pytest.mark.parametrize("corrupt", CORRUPTIONS)
@pytest.mark.parametrize("which", FILES)
def test_report_stops_in_one_line_and_changes_nothing(corrupted, capsys, which, corrupt):
    out, rel, _ = corrupted(which, corrupt)
    before = snapshot(out)
    assert run_cli("report", str(out)) == 2
    line = one_line(capsys.readouterr().err)
    assert str(out / rel) in line and "unreadable" in line and "rerun the command that made this directory" in line
    assert snapshot(out) == before


@pytest.mark.parametrize("corrupt", CORRUPTIONS)
def test_run_into_a_bad_sweep_file_stops_in_one_line_and_changes_nothing(corrupted, capsys, corrupt):
    out, rel, _ = corrupted("sweep", corrupt)
    before = snapshot(out)
    assert run_cli("run", *TINY_ARGS, "--output-dir", str(out)) == 2
    line = one_line(capsys.readouterr().err)
    assert str(out / rel) in line and "delete it and rerun" in line
    assert snapshot(out) == before


def records(root: Path) -> dict[str, bytes]:
    return {k: v for k, v in snapshot(root).items() if k.endswith(store.RUN_DATA)}


def rerun_warning(out: Path, capsys, says: str) -> str:
    """Run the tiny sweep into `out` again: it succeeds with one warning line, which says `says`."""
    assert run_cli("run", *TINY_ARGS, "--output-dir", str(out)) == 0
    warning = one_line("\n".join(ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln))
    assert says in warning
    return warning


@pytest.mark.parametrize("corrupt", CORRUPTIONS)
def test_run_with_a_bad_baseline_warns_and_computes_it_again(corrupted, capsys, corrupt):
    out, rel, _ = corrupted("baseline", corrupt)
    before = records(out)
    assert str(out / rel) in rerun_warning(out, capsys, "computing it again")
    assert store.read_checked(out / rel)["eval_loss"] > 0
    assert records(out) == before  # no trial trained again


@pytest.mark.parametrize("corrupt", CORRUPTIONS)
def test_run_with_a_bad_record_warns_and_trains_that_trial_again(corrupted, capsys, corrupt):
    out, rel, bad = corrupted("run_data", corrupt)
    before = records(out)
    assert str(out / rel) in rerun_warning(out, capsys, "trained again")
    after = records(out)
    assert store.read_checked(out / rel)["status"] == "ok"  # a fresh record, where the trial was
    assert (out / "rank_4" / store.ATTEMPTS_DIR / "1" / store.RUN_DATA).read_bytes() == bad  # kept as it was
    assert {k: v for k, v in after.items() if "rank_4" not in k} == {k: v for k, v in before.items() if k != rel}


def test_a_finished_record_missing_keys_is_never_moved_and_the_run_stops_on_it(corrupted, capsys):
    """A record that still names its trial as finished but lacks a key (say, of another version) is
    kept as it is: the run trains nothing and ends in one line, with every record unchanged."""

    def without_config(raw: bytes) -> bytes:
        doc = json.loads(raw)
        del doc["config"]
        return json.dumps(doc).encode()

    out, rel, bad = corrupted("run_data", without_config)
    before = records(out)
    assert run_cli("run", *TINY_ARGS, "--output-dir", str(out)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    warning, error = [ln for ln in err.splitlines() if ln.strip()]
    assert str(out / rel) in warning and "left as it is" in warning
    assert error.startswith("error: ") and str(out / rel) in error and "move that trial's directory out" in error
    assert records(out) == before and (out / rel).read_bytes() == bad
