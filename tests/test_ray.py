"""The Ray executor on a real local Ray runtime: same trials, files and losses as the local executor."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import TINY_ARGS, run_cli

ray = pytest.importorskip("ray")

FOUR_TRIALS = ["--ranks", "2", "4", "--seeds", "2", "train.num_threads=1"]  # one thread, as each Ray worker


@pytest.fixture(scope="module")
def ray_runtime():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _runs(out):
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/run_data.json"))}


def test_ray_matches_local(ray_runtime, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert run_cli("run", *TINY_ARGS, *FOUR_TRIALS, "--output-dir", str(local)) == 0
    assert run_cli("run", *TINY_ARGS, *FOUR_TRIALS, "--output-dir", str(remote), "--executor", "ray",
                   "sweep.workers=2") == 0
    a, b = _runs(local), _runs(remote)
    assert sorted(a) == sorted(b) == ["rank_2_s42", "rank_2_s43", "rank_4_s42", "rank_4_s43"]
    for name in a:
        assert a[name]["trial_id"] == b[name]["trial_id"]
        assert b[name]["final_eval_loss"] == pytest.approx(a[name]["final_eval_loss"], abs=1e-6)
        assert b[name]["final_train_loss"] == pytest.approx(a[name]["final_train_loss"], abs=1e-6)
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())  # noqa: E731
    assert files(local) == files(remote)


def test_ray_resume_skips_finished_trials(ray_runtime, tmp_path, capsys):
    out = tmp_path / "ray"
    assert run_cli("run", *TINY_ARGS, "--ranks", "2", "train.num_threads=1", "--output-dir", str(out),
                   "--executor", "ray") == 0
    first = _runs(out)["rank_2"]
    capsys.readouterr()
    assert run_cli("run", *TINY_ARGS, "--ranks", "2", "4", "train.num_threads=1", "--output-dir", str(out),
                   "--executor", "ray") == 0
    captured = capsys.readouterr()
    assert "2 trials (1 to run, 1 already done)" in captured.out + captured.err
    runs = _runs(out)
    assert runs["rank_2"]["finished_at"] == first["finished_at"]  # not retrained
    assert runs["rank_4"]["status"] == "ok"


def test_missing_ray_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert run_cli("run", *TINY_ARGS, "--executor", "ray", "--output-dir", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --executor ray needs Ray, which is not installed: pip install 'lorarank[ray]' "
                   "(or use --executor local)"]


def test_workers_fit_the_cluster():
    from lorarank.config import load_config
    from lorarank.errors import UserError
    from lorarank.executors.ray import fitting_workers

    cfg = load_config(None, {"sweep.cpus_per_trial": 2, "sweep.gpus_per_trial": 0.5})
    assert fitting_workers({"CPU": 16, "GPU": 1}, cfg) == 2  # two half-GPU trials share the GPU
    assert fitting_workers({"CPU": 3, "GPU": 8}, cfg) == 1
    with pytest.raises(UserError, match="cannot fit one trial"):
        fitting_workers({"CPU": 16}, cfg)
