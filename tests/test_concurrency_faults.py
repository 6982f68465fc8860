"""Write-once records, concurrent runs on one directory, and storage faults that end in one line."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LEAN, TINY_ARGS, run_cli
from lorarank import store


@pytest.mark.parametrize("hard_links", [True, False])
def test_a_record_is_written_once(tmp_path, monkeypatch, hard_links):
    """Also where the filesystem has no hard links (some FUSE, SMB, object-store mounts)."""
    if not hard_links:
        def no_links(src, dst):
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_links)
    store.write_record(tmp_path, {"status": "ok"})
    with pytest.raises(FileExistsError):
        store.write_record(tmp_path, {"status": "changed"})
    assert json.loads((tmp_path / "run_data.json").read_text()) == {"status": "ok"}
    assert [p.name for p in tmp_path.iterdir()] == ["run_data.json"]  # no temp file left


def test_a_held_claim_is_refused_and_released_with_its_holder(tmp_path):
    with store.claim(tmp_path, "trial-a") as first:
        with store.claim(tmp_path, "trial-a") as second:  # a second open file description: another holder
            assert first and not second
        assert store.holder(tmp_path, "trial-a") == str(os.getpid())
        with store.claim(tmp_path, "trial-b") as other:
            assert other  # claims are per trial
    with store.claim(tmp_path, "trial-a") as again:
        assert again


# two processes on two cores: one torch thread each, or their OpenMP threads spin against each other
# (two-thread processes side by side ran this test 4x slower)
ONE_THREAD = ["train.num_threads=1"]


def _names_trained(stdout: str) -> set[str]:
    return set(re.findall(r"^\[lorarank\] (rank_\d+): \d[\d,]* trainable params", stdout, re.M))


def test_two_concurrent_runs_never_train_a_trial_twice(tmp_path):
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "lorarank", "run", *TINY_ARGS, "--ranks", "2", "4", "8", "16", "--max-steps", "20",
           "train.eval_every=20", *LEAN, *ONE_THREAD, "--output-dir", str(out)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trained = [_names_trained(o) for o in outputs]
    assert not trained[0] & trained[1], outputs  # no trial trained by both
    assert trained[0] | trained[1] == {"rank_2", "rank_4", "rank_8", "rank_16"}
    writers = {json.loads((out / n / "run_data.json").read_text())["writer"]["pid"] for n in trained[0] | trained[1]}
    assert writers <= {procs[0].pid, procs[1].pid}
    assert not list(out.rglob("failed_attempts")) and not list(out.rglob("*.tmp"))
    invocations = json.loads((out / "sweep.json").read_text())["invocations"]
    assert {i["pid"] for i in invocations} == {p.pid for p, t in zip(procs, trained) if t}  # none lost


def test_concurrent_runs_with_other_axes_keep_every_record(tmp_path, capsys):
    """Two processes on one new directory at different learning rates: both plan rank_2 and rank_4
    under the same names, with different trial ids. Each trial gets a directory of its own and no
    record is moved or written twice; a third run with both rates finds all four and trains none."""
    out = tmp_path / "sweep"
    base = [sys.executable, "-m", "lorarank", "run", *TINY_ARGS, "--ranks", "2", "4", "--max-steps", "4",
            "train.eval_every=4", *LEAN, "--output-dir", str(out)]
    procs = [subprocess.Popen([*base, *ONE_THREAD, "--lr", lr], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for lr in ("1e-3", "1e-4")]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    records = [json.loads(f.read_text()) for f in out.glob("*/run_data.json")]
    assert sorted((r["rank"], r["learning_rate"]) for r in records) == [(2, 1e-4), (2, 1e-3), (4, 1e-4), (4, 1e-3)]
    assert {r["status"] for r in records} == {"ok"} and len({r["trial_id"] for r in records}) == 4
    assert not list(out.rglob("failed_attempts"))
    for f in out.glob("*/run_data.json"):  # each directory holds its own trial
        assert (f.parent / store.OWNER_FILE).read_text() == json.loads(f.read_text())["trial_id"]
    capsys.readouterr()
    assert run_cli(*base[3:], "--lr", "1e-3", "1e-4") == 0  # in process: no concurrency left to test
    assert "4 trials (0 to run, 4 already done)" in capsys.readouterr().out


def test_disk_full_while_writing_the_report_ends_in_one_line(tmp_path, monkeypatch, capsys):
    out = tmp_path / "sweep"
    real = store._write_temp

    def full_for_figures(path: Path, data: bytes) -> str:
        if path.suffix == ".png":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(store, "_write_temp", full_for_figures)
    assert run_cli("run", *TINY_ARGS, "--output-dir", str(out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot write ") and "No space left on device" in err[0]
    assert "free space" in err[0] and "rerun the same command" in err[0]
    records = {r: (out / f"rank_{r}" / "run_data.json").read_bytes() for r in (2, 4, 8)}  # finished and kept
    monkeypatch.setattr(store, "_write_temp", real)  # space freed: the same command completes
    assert run_cli("run", *TINY_ARGS, "--output-dir", str(out)) == 0
    assert (out / "README.md").is_file() and (out / "rank_comparison.png").is_file()
    assert {r: (out / f"rank_{r}" / "run_data.json").read_bytes() for r in (2, 4, 8)} == records


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_a_full_disk_for_real_then_freed(tmp_path, capsys):
    """A sweep into a 300 KB tmpfs: trials that cannot save are failed, the run ends in one line
    without a traceback; after the disk is enlarged the same command finishes with no stale errors.
    In process: the disk is what is tested, and the CLI's handling is the same."""
    disk = tmp_path / "disk"
    if shutil.which("mount") is None or not _mount_tmpfs(disk, "300k"):
        pytest.skip("mounting a tmpfs needs root")
    try:
        out = disk / "sweep"
        first = run_cli("run", *TINY_ARGS, "--output-dir", str(out))
        err = capsys.readouterr().err
        assert first in (2, 3), err
        assert "Traceback" not in err
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == (1 if first == 2 else 0), err
        assert subprocess.run(["mount", "-o", "remount,size=64m", str(disk)]).returncode == 0
        second = run_cli("run", *TINY_ARGS, "--output-dir", str(out))
        assert second == 0, capsys.readouterr().err
        for r in (2, 4, 8):
            assert json.loads((out / f"rank_{r}" / "run_data.json").read_text())["status"] == "ok"
            assert not (out / f"rank_{r}" / "error.txt").exists()
        assert (out / "README.md").is_file()
    finally:
        subprocess.run(["umount", str(disk)])


def test_a_second_config_is_refused_where_sweep_json_is_written(tmp_path):
    """Two processes with different configs start on one new directory: both pass the start-up check
    (no sweep.json yet); the one that writes sweep.json second is refused, under the lock, before it
    trains anything."""
    from lorarank.config import load_config
    from lorarank.errors import UserError
    from lorarank.sweep import _write_sweep_file, prepare_output_dir

    first = load_config(None, {"sweep.output_dir": str(tmp_path), "train.max_steps": 5})
    second = load_config(None, {"sweep.output_dir": str(tmp_path), "train.max_steps": 6})
    assert prepare_output_dir(first) == prepare_output_dir(second) == tmp_path  # both started
    info = {"data": {}, "environment": {}}
    _write_sweep_file(tmp_path, first, info)
    before = (tmp_path / "sweep.json").read_bytes()
    with pytest.raises(UserError, match=r"different config \(changed: train.max_steps\)"):
        _write_sweep_file(tmp_path, second, info)
    assert (tmp_path / "sweep.json").read_bytes() == before


def test_only_a_trials_own_failed_or_unreadable_record_is_archived(tmp_path):
    (tmp_path / "run_data.json").write_text('{"trial_id": "a", "sta')  # cut short: not a record
    assert store.archive_failed_attempt(tmp_path, "a") == tmp_path / "failed_attempts" / "1"
    store.write_record(tmp_path, {"trial_id": "a", "status": "ok"})
    with pytest.raises(RuntimeError, match="never moved"):  # a finished record stays where it is
        store.archive_failed_attempt(tmp_path, "a")
    other = tmp_path / "other"
    store.write_record(other, {"trial_id": "b", "status": "failed"})
    with pytest.raises(RuntimeError, match="trial b"):  # another trial's record is not this trial's to move
        store.archive_failed_attempt(other, "a")
    assert json.loads((tmp_path / "run_data.json").read_text())["status"] == "ok"


def test_a_directory_holding_a_foreign_record_is_left_alone(tmp_path):
    """rank_2 holds a run_data.json without a trial id (not lorarank's, or cut short): the trial
    takes a directory of its own and the file is neither moved nor rewritten."""
    foreign = tmp_path / "rank_2" / "run_data.json"
    foreign.parent.mkdir(parents=True)
    foreign.write_text('{"rank": 2, "final_eval_loss": 1.0}')
    name = store.reserve(tmp_path, "abcdef1234567890", "rank_2")
    assert name == "rank_2_abcdef12" and (tmp_path / name / store.OWNER_FILE).read_text() == "abcdef1234567890"
    assert store.reserve(tmp_path, "abcdef1234567890", "rank_2") == name  # the same trial again: its own
    assert foreign.read_text() == '{"rank": 2, "final_eval_loss": 1.0}'
    assert not (tmp_path / "rank_2" / store.OWNER_FILE).exists()
