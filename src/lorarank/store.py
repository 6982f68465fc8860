"""Results on disk: atomic writes, write-once trial records, claims, and finding finished trials.

Every file is written to a temporary file in the same directory and renamed into place, so a
reader (or a rerun after `kill -9`) sees either the old complete file or the new complete file.
A trial's run_data.json is written once, last, and never replaced: a retried failed trial first
moves its failed attempt aside (`failed_attempts/<n>/`). Any OS error while writing (disk full,
permission denied, read-only disk) becomes a `StorageError`: one line naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from lorarank.errors import UserError

RUN_DATA = "run_data.json"
SWEEP_FILE = "sweep.json"
BASELINE_FILE = "baseline.json"
ALL_RESULTS = "all_results.json"
RESULTS_CSV = "results.csv"
ERROR_FILE = "error.txt"
LOCK_DIR = ".locks"
ATTEMPTS_DIR = "failed_attempts"

_FIXES = {errno.ENOSPC: "free space on that disk or pass --output-dir on another one",
          errno.EDQUOT: "free space within your quota or pass --output-dir on another disk",
          errno.EACCES: "make the directory writable for this user or pass --output-dir elsewhere",
          errno.EPERM: "make the directory writable for this user or pass --output-dir elsewhere",
          errno.EROFS: "the disk is read-only: pass --output-dir on a writable disk"}


class StorageError(UserError):
    """Writing a result failed for a reason outside lorarank (disk full, permissions, read-only disk)."""


def storage_error(path: Path, exc: OSError) -> StorageError:
    fix = _FIXES.get(exc.errno, "check that disk and directory")
    return StorageError(f"cannot write {path} ({exc.strerror or exc}): {fix}, then rerun the same command "
                        "(finished trials are kept and skipped)")


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an OSError raised while writing `path` into a one-line StorageError."""
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        raise storage_error(path, exc) from None


def _write_temp(path: Path, data: bytes) -> str:
    """Write `data` to a new temporary file beside `path`, flushed to disk; returns its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with writing(path):
        tmp = _write_temp(path, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise


def write_once(path: Path, data: bytes) -> None:
    """Create `path` with `data`, atomically, and refuse to replace an existing file: os.link fails
    with FileExistsError instead of overwriting, so a record can never be written twice."""
    with writing(path):
        tmp = _write_temp(path, data)
    try:
        try:
            os.link(tmp, path)  # FileExistsError propagates as itself: writing a record twice is a bug
        except OSError as exc:
            if exc.errno not in NO_HARD_LINKS:
                raise
            _replace_if_absent(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        raise storage_error(path, exc) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# Filesystems without hard links (some FUSE, SMB and object-store mounts) answer link() with these
NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}


def _replace_if_absent(tmp: str, path: Path) -> None:
    """write_once where link() is unsupported: check, then rename into place. Not atomic against a
    second writer by itself, but a record's only writer is the process holding its trial's claim."""
    if path.exists():
        raise FileExistsError(errno.EEXIST, "a record is written once", str(path))
    os.replace(tmp, path)


def _clean(obj: Any) -> Any:
    """JSON has no NaN/inf: store them as strings so the file stays valid JSON for every reader."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n").encode()


def write_json(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, json_bytes(obj))


def write_record(trial_dir: Path, run_data: dict) -> None:
    """A trial's run_data.json: written once, never replaced."""
    write_once(trial_dir / RUN_DATA, json_bytes(run_data))


def write_text(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


class UnreadableFile(UserError):
    """One of a sweep's own files cannot be used: truncated, empty, not text, or not the shape lorarank
    writes. Commands that cannot go on without it stop with this one line; those that can (a run
    retrains the trial, recomputes the base model's scores) warn with `what` and go on."""

    def __init__(self, path: Path, problem: str):
        self.what = f"{path} is unreadable: {problem}"
        super().__init__(f"{self.what}; {_WHAT_TO_DO[path.name]}")


# What each reader indexes without checking, by file; a record of another shape is unreadable.
# (name, type) with type None = any value, present (a failed trial's losses are null).
_REQUIRED = {
    RUN_DATA: [("trial_id", str), ("name", str), ("rank", int), ("seed", int), ("status", str), ("config", dict),
               ("learning_rate", (int, float)), ("alpha_policy", str), ("train_losses", list), ("eval_losses", list),
               ("final_eval_loss", None), ("trainable_params", None)],
    SWEEP_FILE: [("fingerprint", str), ("fixed_config", dict), ("config", dict), ("axes", dict)],
    BASELINE_FILE: [("eval_loss", (int, float))],
}

_RERUN = "rerun the command that made this directory (`lorarank run` or `lorarank analyze`) with the same arguments"
_WHAT_TO_DO = {
    RUN_DATA: f"move that trial's directory out of the sweep directory, then {_RERUN} to measure it again, "
              "or `lorarank report` to report without it",
    SWEEP_FILE: f"delete it and {_RERUN}: it is written anew, and finished trials are kept and skipped",
    BASELINE_FILE: f"{_RERUN} to compute it again (finished trials are skipped), or delete it to report without "
                   "the base model's row",
}


def _parse(path: Path) -> tuple[dict | None, str | None]:
    """(the file's JSON object, None) or (None, why it is not one)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, f"cannot read it: {exc.strerror or exc}"
    if not raw.strip():
        return None, "it is empty"
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "it is not text"
    except json.JSONDecodeError as exc:
        return None, f"it is not valid JSON ({exc.msg} at line {exc.lineno}; truncated?)"
    if not isinstance(doc, dict):
        return None, f"it holds a JSON {type(doc).__name__}, not an object"
    return doc, None


def _problem(path: Path) -> tuple[Any, str | None]:
    """(the parsed file, None) or (None, what is wrong with it): a JSON object with the keys its
    readers use (_REQUIRED)."""
    doc, problem = _parse(path)
    if problem:
        return None, problem
    for key, kind in _REQUIRED[path.name]:
        if key not in doc:
            return None, f"it has no '{key}'"
        if kind is not None and (not isinstance(doc[key], kind) or isinstance(doc[key], bool)):
            return None, f"its '{key}' is not a {getattr(kind, '__name__', 'number')}"
    return doc, None


def _claimed_by(path: Path) -> dict | None:
    """A run_data.json that names its trial, even if it lacks other keys (a record of an earlier
    version): deciding whose a directory is, or whether a record may move, needs only that. Such a
    record moves only as its own trial's unfinished attempt (archive_failed_attempt)."""
    doc, _ = _parse(path)
    return doc if doc and isinstance(doc.get("trial_id"), str) and doc["trial_id"] else None


def read_checked(path: Path) -> dict:
    """A sweep's run_data.json, sweep.json or baseline.json, parsed and checked for the keys its
    readers use; UnreadableFile (one line: the file, what is wrong, what to do) otherwise. The one
    rule every reader of a sweep directory follows."""
    path = Path(path)
    doc, problem = _problem(path)
    if problem:
        raise UnreadableFile(path, problem)
    return doc


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_text(path, buf.getvalue())


FINAL_STATUSES = ("ok", "diverged")  # a rerun would reproduce these; `failed` trials are retried


def archive_failed_attempt(trial_dir: Path, trial_id: str) -> Path | None:
    """Move a failed attempt's run_data.json and error.txt into failed_attempts/<n>/ before a retry,
    so the retry writes a fresh record and no stale error.txt sits beside a good one. Only this
    trial's failed record moves: a final record, or another trial's, is never touched (`reserve`
    gives every trial a directory of its own)."""
    files = [trial_dir / n for n in (RUN_DATA, ERROR_FILE) if (trial_dir / n).exists()]
    if not files:
        return None
    if (trial_dir / RUN_DATA).exists():
        rec = _claimed_by(trial_dir / RUN_DATA)  # None: no trial's record, archived like a failed attempt
        if rec and (rec["trial_id"] != trial_id or rec.get("status") in FINAL_STATUSES):
            raise RuntimeError(f"{trial_dir} holds the record of trial {rec['trial_id']} "
                               f"({rec.get('status')}); it is never moved")
    root = trial_dir / ATTEMPTS_DIR
    target = root / str(len(list(root.iterdir())) + 1 if root.is_dir() else 1)
    with writing(target):
        target.mkdir(parents=True)
        for f in files:
            os.replace(f, target / f.name)
    return target


@contextlib.contextmanager
def locked(path: Path, block: bool = True) -> Iterator[bool]:
    """An exclusive advisory lock on `path` (created if missing) for the duration of the block.
    Yields False at once instead of waiting when `block` is False and another process holds it.
    The kernel releases a lock when its process dies, so a killed run never leaves a stale lock."""
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+")
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def claim(out_dir: Path, trial_id: str) -> contextlib.AbstractContextManager[bool]:
    """Claim one trial for this process: True if it may run it, False while another process does.
    Several `lorarank run` processes on one output directory thus split the trials between them."""
    return locked(out_dir / LOCK_DIR / f"{trial_id}.lock", block=False)


OWNER_FILE = ".trial_id"  # in a trial directory: the id of the one trial that writes there


UNKNOWN_OWNER = "?"


def _owner(trial_dir: Path) -> str | None:
    """The trial a directory belongs to: its owner file; else its record's trial id (directories of
    earlier versions), or UNKNOWN_OWNER for a record without a readable one (someone else's file,
    never to be moved); else None: free, or an interrupted trial of an earlier version."""
    try:
        owner = (trial_dir / OWNER_FILE).read_text().strip()
        if owner:
            return owner
    except OSError:
        pass
    if not (trial_dir / RUN_DATA).exists():
        return None
    rec = _claimed_by(trial_dir / RUN_DATA)
    return rec["trial_id"] if rec else UNKNOWN_OWNER


def reserve(out_dir: Path, trial_id: str, name: str) -> str | None:
    """The directory this (claimed) trial writes to, reserved for it; None when it is already
    recorded with a final status, by this or another process. Decided under the directory lock
    against what is on disk now, not against the plan a process made when it started: processes
    with other axes on one output directory (another learning rate, a second seed) never share a
    directory, and a trial recorded under another name is not trained twice."""
    with locked(out_dir / LOCK_DIR / "dirs.lock"):
        recorded = recorded_trials(out_dir).get(trial_id)
        if recorded and recorded.get("status") in FINAL_STATUSES:
            return None
        for candidate in (recorded["_dir"] if recorded else name, f"{name}_{trial_id[:8]}"):
            owner = _owner(out_dir / candidate)
            if owner in (None, trial_id):
                if owner is None:
                    _write_owner(out_dir / candidate, trial_id)
                return candidate
    raise RuntimeError(f"no free directory for trial {trial_id} ({name}) in {out_dir}")


def _write_owner(trial_dir: Path, trial_id: str) -> None:
    """One small write() in place, under the directory lock: no temp file that a process killed at
    this moment would leave behind (an empty file reads as free and is written again)."""
    with writing(trial_dir):
        trial_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(trial_dir / OWNER_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, trial_id.encode())
        finally:
            os.close(fd)


def holder(out_dir: Path, trial_id: str) -> str:
    """The pid written into a trial's lock by the process holding it (for messages)."""
    try:
        return (out_dir / LOCK_DIR / f"{trial_id}.lock").read_text().strip() or "?"
    except OSError:
        return "?"


def recorded_trials(out_dir: Path, on_unreadable: Callable[[UnreadableFile, bool], None] | None = None
                    ) -> dict[str, dict]:
    """trial_id -> run_data for every readable run_data.json under out_dir (any status).

    A trial counts as recorded only through its run_data.json, which is written last and
    atomically; a directory without one is an interrupted trial. Each unreadable record goes to
    `on_unreadable(error, kept)`: one that still names its trial and a final status is `kept`
    (counted as recorded, since a finished record is never moved, so the trial is not run again);
    any other is not counted, and its trial runs again."""
    found: dict[str, dict] = {}
    for f in sorted(out_dir.glob(f"*/{RUN_DATA}")):
        try:
            data = read_checked(f)
        except UnreadableFile as exc:
            data = _claimed_by(f)
            kept = bool(data and data.get("status") in FINAL_STATUSES)
            if on_unreadable:
                on_unreadable(exc, kept)
            if not kept:
                continue
        found[data["trial_id"]] = {**data, "_dir": f.parent.name}
    return found


CSV_KEYS = ["name", "method", "rank", "seed", "learning_rate", "alpha_policy", "lora_alpha", "effective_scale", "status",
            "trainable_params", "total_params", "final_train_loss", "final_eval_loss", "training_time_seconds",
            "tokens_per_second", "tokens_trained", "peak_memory_bytes", "adapter_bytes", "trial_id"]


def load_sweep(out: Path) -> tuple[dict, dict | None, list[dict]]:
    """(sweep.json, baseline.json or None, run_data of this sweep's trials sorted by policy, lr, seed, rank).

    A record belongs to the sweep when its config, without the swept axes, is the sweep's fixed config:
    results of another config in the same directory are never mixed into a report."""
    sweep_file = out / SWEEP_FILE
    if not sweep_file.is_file():
        raise UserError(f"{out} is not a lorarank sweep directory (no {SWEEP_FILE}): "
                        "pass the --output-dir of a finished `lorarank run`")
    sweep = read_checked(sweep_file)
    base_file = out / BASELINE_FILE
    baseline = read_checked(base_file) if base_file.is_file() else None
    runs = []
    for f in sorted(out.glob(f"*/{RUN_DATA}")):
        rd = read_checked(f)
        fixed = {k: v for k, v in rd["config"].items() if k != "trial"}
        if fixed == sweep["fixed_config"]:
            runs.append(rd)
    if not runs:
        raise UserError(f"{out} has no finished trials yet: run `lorarank run` with --output-dir {out}")
    policies = {p: i for i, p in enumerate(sweep["axes"]["alpha_policies"])}
    runs.sort(key=lambda r: (r.get("method", "lora") != "lora", policies.get(r["alpha_policy"], 99),
                             r["learning_rate"], r["seed"], r["rank"]))
    return sweep, baseline, runs


def write_aggregates(out: Path, runs: list[dict]) -> dict[str, dict]:
    """all_results.json (every record, keyed by rank plus suffixes, as the original) and results.csv."""
    all_results = {r["name"].removeprefix("rank_"): r for r in runs}
    write_json(out / ALL_RESULTS, all_results)
    write_csv(out / RESULTS_CSV, [{k: r.get(k) for k in CSV_KEYS} for r in runs])
    return all_results
