"""The Ray executor: trials spread over Ray workers, on one machine or a cluster.

Each worker is a Ray actor holding a TrialRunner (base model loaded once per worker) with the
resources one trial needs (`sweep.cpus_per_trial`, `sweep.gpus_per_trial`, fractions allowed).
Workers write each trial's files straight into the sweep's output directory, so on a multi-node
cluster that directory must be on storage every node mounts at the same path (NFS, a shared disk);
trial ids, file layout and resume are the same as the local executor's.

    lorarank run --executor ray                        # a local Ray runtime on this machine
    lorarank run --executor ray --address auto         # the running cluster (or RAY_ADDRESS)
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Callable

from lorarank.config import Config
from lorarank.errors import UserError
from lorarank.progress import SweepBar
from lorarank.runner import TrialRunner
from lorarank.trial import Trial


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray, which is not installed: pip install 'lorarank[ray]' "
                        "(or use --executor local)") from None
    return ray


def _init(ray, cfg: Config) -> None:
    if ray.is_initialized():
        return
    address = cfg.sweep.ray_address or os.environ.get("RAY_ADDRESS") or None
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
    except ConnectionError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address} ({exc}): start it with `ray start --head`, "
                        "or drop --address to run a local Ray runtime") from None


def fitting_workers(resources: dict, cfg: Config) -> int:
    """How many workers the cluster can hold at once; more would wait forever for resources
    (the pool hands each worker a trial up front)."""
    s = cfg.sweep
    fits = int(resources.get("CPU", 0) // s.cpus_per_trial)
    if s.gpus_per_trial > 0:
        fits = min(fits, int(resources.get("GPU", 0) // s.gpus_per_trial))
    if fits < 1:
        need = f"{s.cpus_per_trial:g} CPU" + (f" and {s.gpus_per_trial:g} GPU" if s.gpus_per_trial else "")
        raise UserError(f"the Ray cluster cannot fit one trial ({need}; it has {resources.get('CPU', 0):g} CPU, "
                        f"{resources.get('GPU', 0):g} GPU): lower sweep.cpus_per_trial / sweep.gpus_per_trial")
    return fits


def _get(ray, ref):
    """ray.get that re-raises a worker's UserError as itself, so bad input still ends in one line."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        cause = exc
        while cause is not None and not isinstance(cause, UserError):
            cause = getattr(cause, "cause", None) or cause.__cause__
        if cause is not None:
            raise UserError(str(cause)) from None
        raise


def run_ray(cfg: Config, out: Path, todo: list[tuple[Trial, dict]], progress: bool,
            on_setup: Callable[[dict], None], on_result: Callable[[Trial, dict | None], None]) -> None:
    ray = _import_ray()
    from ray.util import ActorPool

    _init(ray, cfg)
    if not cfg.train.num_threads:  # torch in a worker uses the cores the worker reserved
        cfg = copy.deepcopy(cfg)
        cfg.train.num_threads = max(1, int(cfg.sweep.cpus_per_trial))
    s = cfg.sweep
    worker = ray.remote(num_cpus=s.cpus_per_trial, num_gpus=s.gpus_per_trial)(TrialRunner)
    n_workers = max(1, min(s.workers or len(todo), len(todo) or 1, fitting_workers(ray.cluster_resources(), cfg)))
    actors = [worker.remote(cfg) for _ in range(n_workers)]
    try:
        on_setup(_get(ray, actors[0].describe.remote()))
        _get(ray, actors[0].baseline.remote(str(out)))
        bar = SweepBar([t for t, _ in todo], _get(ray, actors[0].sweep_cost.remote()), disable=not progress,
                       desc=f"sweep ({n_workers} Ray workers)")
        pool = ActorPool(actors)
        for outcome in pool.map_unordered(lambda a, t: a.run.remote(t[0], t[1], str(out)), todo):
            bar.finished(outcome[0])
            on_result(*outcome)
        bar.close()
    finally:
        for a in actors:
            ray.kill(a)
