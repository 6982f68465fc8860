"""Rebuild every aggregate output of a sweep directory from its JSON files alone.

Reads the sweep's records (store.load_sweep), builds the analysis model once (analysis/build.py) and
writes all_results.json, results.csv, analysis.json, the figures and README.md. No model, no data, no
training needed. The renderers (markdown.py, plots.py) only render the analysis model.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from lorarank import store
from lorarank.analysis.build import build
from lorarank.analysis.model import Analysis
from lorarank.report import markdown, plots, plots_forgetting, plots_which_rank

ANALYSIS_FILE = "analysis.json"


def save(fig: Figure, path: Path) -> None:
    """Write a figure as a PNG atomically (temp file + rename)."""
    store.write_bytes_atomic(path, plots.png(fig))


def build_report(out: Path | str) -> Analysis:
    out = Path(out)
    sweep, baseline, runs = store.load_sweep(out)  # the raw files are read here only: renderers get the model
    analysis = build(out, sweep, baseline, runs)
    store.write_aggregates(out, runs)
    store.write_json(out / ANALYSIS_FILE, analysis.to_dict())
    figures, forest = [], None
    for i, (policy, pol) in enumerate(analysis.policies.items()):
        suffix = "" if i == 0 else f"_{policy}"
        which = plots_which_rank.which_rank(pol)
        if which is not None:
            save(which, out / f"which_rank{suffix}.png")
            if forest is None:  # the first opens the README; the other policies' are listed with the figures
                forest = f"which_rank{suffix}.png"
            else:
                figures.append(f"which_rank{suffix}.png")
        for name, fig in (
            (f"rank_comparison{suffix}.png", plots.rank_comparison(pol, analysis.baseline)),
            (f"adapter_analysis{suffix}.png", plots.adapter_analysis(pol, analysis.full_finetune)),
            (f"subspace_similarity{suffix}.png", plots.subspace_similarity(pol)),
            (f"cost{suffix}.png", plots.cost(pol)),
            (f"forgetting{suffix}.png", plots_forgetting.forgetting(pol)),
            (f"intruders{suffix}.png", plots_forgetting.intruders(pol)),
        ):
            if fig is not None:
                save(fig, out / name)
                figures.append(name)
    store.write_text(out / "README.md", markdown.render(analysis, figures, forest))
    return analysis
