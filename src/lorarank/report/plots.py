"""Figures, built only from saved JSON. Each function returns a matplotlib Figure; none calls show()."""

from __future__ import annotations

from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lorarank.report.markdown import line_text  # noqa: E402


def _colors(ranks: list[int]) -> dict[int, tuple]:
    cmap = plt.get_cmap("viridis")
    n = max(1, len(ranks) - 1)
    return {r: cmap(0.1 + 0.8 * i / n) for i, r in enumerate(sorted(ranks))}


def _mean_curve(trials: list[dict], xkey: str, ykey: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """Mean, min and max across seeds at each logged step (steps present in every seed)."""
    per_step = defaultdict(list)
    for t in trials:
        for x, y in zip(t[xkey], t[ykey]):
            per_step[x].append(y)
    xs = sorted(x for x, ys in per_step.items() if len(ys) == len(trials))
    return (xs, [sum(per_step[x]) / len(per_step[x]) for x in xs],
            [min(per_step[x]) for x in xs], [max(per_step[x]) for x in xs])


def _errorbars(ests: list[dict | None], scale: float = 1.0) -> list[float] | None:
    """Half-widths of 95% CIs for bar/point error bars; None (no bars at all) with one seed."""
    if not any(e and e.get("low") is not None for e in ests):
        return None
    return [0.0 if not e or e.get("low") is None else scale * (e["high"] - e["low"]) / 2 for e in ests]


def _log_steps(ax) -> None:
    """Log-scaled step axis with plain integer tick labels (10, 20, 50), not 2x10^1."""
    from matplotlib.ticker import LogLocator, ScalarFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    fmt = ScalarFormatter()
    fmt.set_scientific(False)
    ax.xaxis.set_major_formatter(fmt)


def _curves(ax, chosen: dict[int, list[dict]], colors, xkey: str, ykey: str, title: str, ylabel: str):
    for r, trials in sorted(chosen.items()):
        xs, mean, lo, hi = _mean_curve(trials, xkey, ykey)
        if not xs:
            continue
        n = len(trials)
        ax.plot(xs, mean, color=colors[r], lw=1.8, marker="o" if len(xs) < 8 else None, ms=3,
                label=f"r={r}" + (f" (mean of {n})" if n > 1 else ""))
        if n > 1:
            ax.fill_between(xs, lo, hi, color=colors[r], alpha=0.15)
    _log_steps(ax)
    ax.set_xlabel("optimizer step (log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3, which="both")


def rank_comparison(summary: dict, chosen: dict[int, list[dict]], baseline: dict | None, policy: str) -> Figure:
    """The original's four panels (loss curves, params vs loss, final losses, time) plus eval
    curves and task accuracy, for one alpha policy."""
    ranks = sorted(chosen)
    colors = _colors(ranks)
    rows = {int(k): v for k, v in summary["rows"].items()}
    fig, axes = plt.subplots(2, 3, figsize=(18, 10))
    fig.suptitle(f"LoRA rank comparison (alpha policy: {policy}; bands = min..max over seeds, bars = 95% CI)",
                 fontsize=13)

    ax = axes[0, 0]
    _curves(ax, chosen, colors, "steps", "train_losses", "Training loss vs LoRA rank", "train loss (completion tokens)")
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    _curves(ax, chosen, colors, "eval_steps", "eval_losses", "Eval loss vs LoRA rank", "eval loss (held-out)")
    if baseline:
        ax.axhline(baseline["eval_loss"], color="gray", ls="--", lw=1, label=f"base model {baseline['eval_loss']:.3f}")
    ax.legend(fontsize=8)

    ax = axes[0, 2]
    params = [rows[r]["trainable_params"] / 1e6 for r in ranks]
    evals = [rows[r]["final_eval_loss"]["mean"] for r in ranks]
    yerr = _errorbars([rows[r]["final_eval_loss"] for r in ranks])
    if yerr:
        ax.errorbar(params, evals, yerr=yerr, fmt="none", ecolor="gray", capsize=3)
    ax.scatter(params, evals, c=[colors[r] for r in ranks], s=80, zorder=3)
    for r, x, y in zip(ranks, params, evals):
        ax.annotate(f"r={r}", (x, y), xytext=(5, 5), textcoords="offset points")
    ax.set_xlabel("trainable parameters (M)")
    ax.set_ylabel("final eval loss")
    ax.set_title("Parameter count vs performance")
    ax.grid(True, alpha=0.3)

    ax = axes[1, 0]
    x = list(range(len(ranks)))
    w = 0.38
    train = [rows[r]["final_train_loss"]["mean"] for r in ranks]
    ax.bar([i - w / 2 for i in x], train, w, yerr=_errorbars([rows[r]["final_train_loss"] for r in ranks]),
           label="train", color="steelblue", capsize=3)
    ax.bar([i + w / 2 for i in x], evals, w, yerr=_errorbars([rows[r]["final_eval_loss"] for r in ranks]),
           label="eval", color="coral", capsize=3)
    ax.set_xticks(x, [str(r) for r in ranks])
    ax.set_xlabel("LoRA rank")
    ax.set_ylabel("final loss")
    ax.set_title("Final loss by rank")
    ax.legend()
    ax.grid(True, alpha=0.3, axis="y")

    ax = axes[1, 1]
    times = [rows[r]["training_time_seconds"]["mean"] for r in ranks]
    ax.bar(x, times, color=[colors[r] for r in ranks], yerr=_errorbars([rows[r]["training_time_seconds"] for r in ranks]),
           capsize=3)
    fit = summary.get("time") and summary["time"]["fit"]
    if fit:
        ax.plot(x, [fit["intercept"] + fit["slope"] * r for r in ranks], "k--", lw=1,
                label=f"fit {line_text(fit['intercept'], fit['slope'], 's', 3)}")
        ax.legend(fontsize=8)
    ax.set_xticks(x, [str(r) for r in ranks])
    ax.set_xlabel("LoRA rank")
    ax.set_ylabel("training time (s)")
    ax.set_title("Training time by rank")
    ax.grid(True, alpha=0.3, axis="y")

    ax = axes[1, 2]
    _accuracy_panel(ax, rows, ranks, colors, baseline)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def _accuracy_panel(ax, rows: dict[int, dict], ranks: list[int], colors, baseline: dict | None) -> None:
    if not any(rows[r]["accuracy"] for r in ranks):
        ax.bar(range(len(ranks)), [rows[r]["tokens_per_second"]["mean"] for r in ranks],
               color=[colors[r] for r in ranks])
        ax.set_xticks(range(len(ranks)), [str(r) for r in ranks])
        ax.set_xlabel("LoRA rank")
        ax.set_ylabel("training tokens / s")
        ax.set_title("Throughput by rank (no verifiable tasks in this dataset)")
        ax.grid(True, alpha=0.3, axis="y")
        return
    labels = (["base"] if baseline and baseline.get("accuracy") else []) + [str(r) for r in ranks]
    overall = ([baseline["accuracy"]["overall"]] if labels[0] == "base" else []) + \
              [rows[r]["accuracy"]["mean"] for r in ranks]
    errs = _errorbars(([None] if labels[0] == "base" else []) + [rows[r]["accuracy"] for r in ranks], scale=100)
    cols = (["lightgray"] if labels[0] == "base" else []) + [colors[r] for r in ranks]
    ax.bar(range(len(labels)), [100 * v for v in overall], yerr=errs, color=cols, capsize=3)
    fams = sorted(rows[ranks[0]]["per_family"] or {})
    markers = "osD^v<>ph*"
    for j, fam in enumerate(fams):
        vals = ([baseline["accuracy"]["per_family"].get(fam, 0.0)] if labels[0] == "base" else []) + \
               [rows[r]["per_family"][fam] for r in ranks]
        ax.plot(range(len(labels)), [100 * v for v in vals], marker=markers[j % len(markers)], lw=0.8,
                ms=4, alpha=0.8, label=fam)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylim(0, 105)
    ax.set_xlabel("LoRA rank (base = no adapter)")
    ax.set_ylabel("exact-match accuracy (%)")
    ax.set_title("Task accuracy: overall (bars) and per family (lines)")
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    ax.grid(True, alpha=0.3, axis="y")


def save(fig: Figure, path) -> None:
    """Write a PNG atomically (temp file + rename) and free the figure."""
    import io

    from lorarank.store import write_bytes_atomic

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
