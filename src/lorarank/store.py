"""Results on disk: atomic writes, and finding trials that are already finished.

Every file is written to a temporary file in the same directory and renamed into place, so a
reader (or a rerun after `kill -9`) sees either the old complete file or the new complete file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

RUN_DATA = "run_data.json"
SWEEP_FILE = "sweep.json"
BASELINE_FILE = "baseline.json"
ALL_RESULTS = "all_results.json"
RESULTS_CSV = "results.csv"


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _clean(obj: Any) -> Any:
    """JSON has no NaN/inf: store them as strings so the file stays valid JSON for every reader."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n").encode())


def write_text(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_text(path, buf.getvalue())


FINAL_STATUSES = ("ok", "diverged")  # a rerun would reproduce these; `failed` trials are retried


def recorded_trials(out_dir: Path) -> dict[str, dict]:
    """trial_id -> run_data for every readable run_data.json under out_dir (any status).

    A trial counts as recorded only through its run_data.json, which is written last and
    atomically; a directory without one is an interrupted trial."""
    found: dict[str, dict] = {}
    for f in sorted(out_dir.glob(f"*/{RUN_DATA}")):
        try:
            data = read_json(f)
        except (json.JSONDecodeError, OSError):
            continue
        if isinstance(data, dict) and data.get("trial_id"):
            found[data["trial_id"]] = {**data, "_dir": f.parent.name}
    return found
