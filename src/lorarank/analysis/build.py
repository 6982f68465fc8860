"""The entry point that builds a sweep's analysis model, once, from its saved JSON.

    analysis = build(out, sweep, baseline, runs)

out: the sweep directory; sweep: its sweep.json; baseline: its baseline.json (None when absent);
runs: the trials' run_data.json records, any status, in the schema trial.py writes (store.load_sweep
reads all three). Any tool that has such records, wherever the adapters were trained, gets the same
analysis by calling this function; report.build_report renders it.

Subspace similarity needs the saved adapters; its results are kept in subspace.json so that a report
rebuilt from JSON alone (adapters deleted) still has them.
"""

from __future__ import annotations

from pathlib import Path

from lorarank import store
from lorarank.analysis import subspace
from lorarank.analysis.model import Analysis, RankRow, SubspaceEntry, Thresholds
from lorarank.analysis.sweep_info import baseline_of, setup_of
from lorarank.analysis.summary import summarize

SUBSPACE_FILE = "subspace.json"


def build(out: Path, sweep: dict, baseline: dict | None, runs: list[dict]) -> Analysis:
    """The analysis model of the records `runs` of the sweep in `out` (sweep.json as `sweep`)."""
    thresholds = Thresholds(equivalence_margin=sweep["config"]["report"]["equivalence_margin"])
    sub_file = out / SUBSPACE_FILE
    previous = store.read_json(sub_file) if sub_file.is_file() else {}
    stored: dict[str, dict] = {}

    def subspace_of(policy: str, rows: dict[int, RankRow]) -> dict[str, SubspaceEntry]:
        found = subspace.similarity(out, rows, previous.get(policy))
        if found:
            stored[policy] = found
        return subspace.entries(found, thresholds)

    analysis = summarize(runs, thresholds, baseline_of(baseline), setup_of(sweep), subspace_of)
    if stored:
        store.write_json(sub_file, stored)
    return analysis
