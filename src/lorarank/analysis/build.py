"""Build a sweep's analysis model once: the trials' summary plus subspace similarity.

Subspace similarity needs the saved adapters; its results are kept in subspace.json so that a report
rebuilt from JSON alone (adapters deleted) still has them.
"""

from __future__ import annotations

from pathlib import Path

from lorarank import store
from lorarank.analysis import subspace
from lorarank.analysis.model import Analysis, Thresholds
from lorarank.analysis.summary import summarize

SUBSPACE_FILE = "subspace.json"


def build(out: Path, sweep: dict, baseline: dict | None, runs: list[dict]) -> Analysis:
    """The analysis model of the records `runs` of the sweep in `out` (sweep.json as `sweep`)."""
    report = sweep["config"]["report"]
    thresholds = Thresholds(tolerance=report["tolerance"], equivalence_margin=report["equivalence_margin"])
    analysis = summarize(runs, thresholds, baseline)
    sub_file = out / SUBSPACE_FILE
    previous = store.read_json(sub_file) if sub_file.is_file() else {}
    stored = {policy: subspace.similarity(out, pol, previous.get(policy)) for policy, pol in analysis.policies.items()}
    stored = {policy: s for policy, s in stored.items() if s}
    for policy, s in stored.items():
        analysis.policies[policy].subspace = subspace.entries(s, analysis.thresholds)
    if stored:
        store.write_json(sub_file, stored)
    return analysis
