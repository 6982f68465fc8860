"""How trials run: `local` (in this process, one after another) or `ray` (Ray workers, in parallel).

An executor gets the trials still to run and hands each one's run_data (None when another process
ran it) to `on_result`. Every executor writes
the same files into the same output directory, so resume and reports do not care which one ran.
"""

from __future__ import annotations

from typing import Callable

from lorarank.executors.local import run_local
from lorarank.executors.ray import run_ray

EXECUTORS: dict[str, Callable] = {"local": run_local, "ray": run_ray}
