"""Figures of the analysis model (analysis/model.py), built only from saved JSON. Each function
returns a matplotlib Figure and never calls show(); none filters trials or judges a result."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator, ScalarFormatter  # noqa: E402

from lorarank.analysis.model import Curve, PolicySummary, RankRow  # noqa: E402
from lorarank.analysis.sweep_info import Baseline  # noqa: E402
from lorarank.analysis.stats import Estimate  # noqa: E402
from lorarank.report.fmt import line_text  # noqa: E402


def _colors(ranks: list[int]) -> dict[int, tuple]:
    cmap = plt.get_cmap("viridis")
    n = max(1, len(ranks) - 1)
    return {r: cmap(0.1 + 0.8 * i / n) for i, r in enumerate(sorted(ranks))}


def _errorbars(ests: list[Estimate | None], scale: float = 1.0) -> list[float] | None:
    """Half-widths of 95% CIs for bar/point error bars; None (no bars at all) with one seed."""
    if not any(e and e.low is not None for e in ests):
        return None
    return [0.0 if not e or e.low is None else scale * (e.high - e.low) / 2 for e in ests]


def _means(ests: list[Estimate | None]) -> list[float]:
    """Means for bars and points; NaN (nothing drawn) where a number was not recorded, e.g. the
    training time of an adapter whose trainer logged none (`lorarank analyze`)."""
    return [e.mean if e else float("nan") for e in ests]


def _log_steps(ax) -> None:
    """Log-scaled step axis with plain integer tick labels (10, 20, 50), not 2x10^1."""
    from matplotlib.ticker import LogLocator

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    fmt = ScalarFormatter()
    fmt.set_scientific(False)
    ax.xaxis.set_major_formatter(fmt)


def _curves(ax, curves: dict[int, Curve], colors, title: str, ylabel: str):
    for r, c in sorted(curves.items()):
        if not c.steps:
            continue
        ax.plot(c.steps, c.mean, color=colors[r], lw=1.8, marker="o" if len(c.steps) < 8 else None, ms=3,
                label=f"r={r}" + (f" (mean of {c.n})" if c.n > 1 else ""))
        if c.n > 1:
            ax.fill_between(c.steps, c.low, c.high, color=colors[r], alpha=0.15)
    _log_steps(ax)
    ax.set_xlabel("optimizer step (log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3, which="both")


def _ranges(means: list[float], ranges: list[tuple[float, float] | None]) -> list[list[float]] | None:
    """Asymmetric error bars from min..max over seeds (never below the smallest value seen, so never
    below zero for a loss); None with one seed. The paired comparisons that decide are in the
    which-rank figure, not here."""
    if not any(r and r[1] > r[0] for r in ranges):
        return None
    below = [m - r[0] if r else 0.0 for m, r in zip(means, ranges)]
    return [below, [r[1] - m if r else 0.0 for m, r in zip(means, ranges)]]


def rank_comparison(pol: PolicySummary, baseline: Baseline | None) -> Figure:
    """The original's four panels (loss curves, params vs loss, final losses, time) plus eval
    curves and task accuracy, for one alpha policy."""
    ranks, rows = pol.ranks, pol.rows
    colors = _colors(ranks)
    fig, axes = plt.subplots(2, 3, figsize=(18, 10))
    fig.suptitle(f"LoRA rank comparison (alpha policy: {pol.policy}; bands and loss bars = min..max over seeds)",
                 fontsize=13)

    ax = axes[0, 0]
    _curves(ax, {r: rows[r].train_curve for r in ranks}, colors, "Training loss vs LoRA rank",
            "train loss (completion tokens)")
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    _curves(ax, {r: rows[r].eval_curve for r in ranks}, colors, "Eval loss vs LoRA rank", "eval loss (held-out)")
    if baseline:
        ax.axhline(baseline.eval_loss, color="gray", ls="--", lw=1, label=f"base model {baseline.eval_loss:.3f}")
    ax.legend(fontsize=8)

    ax = axes[0, 2]
    params = [rows[r].trainable_params / 1e6 for r in ranks]
    evals = [rows[r].final_eval_loss.mean for r in ranks]
    yerr = _ranges(evals, [rows[r].eval_loss_range for r in ranks])
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
    train = _means([rows[r].train_loss for r in ranks])
    ax.bar([i - w / 2 for i in x], train, w, yerr=_ranges(train, [rows[r].train_loss_range for r in ranks]),
           label="train (mean of the last logged windows)", color="steelblue", capsize=3)
    ax.bar([i + w / 2 for i in x], evals, w, yerr=_ranges(evals, [rows[r].eval_loss_range for r in ranks]),
           label="eval (final)", color="coral", capsize=3)
    ax.set_xticks(x, [str(r) for r in ranks])
    ax.set_xlabel("LoRA rank")
    ax.set_ylabel("loss at the end of training")
    ax.set_title("Loss at the end of training by rank")
    ax.legend()
    ax.grid(True, alpha=0.3, axis="y")

    ax = axes[1, 1]
    _time_vs_rank(ax, pol)

    ax = axes[1, 2]
    _accuracy_panel(ax, rows, ranks, colors, baseline)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def _accuracy_panel(ax, rows: dict[int, RankRow], ranks: list[int], colors, baseline: Baseline | None) -> None:
    if not any(rows[r].accuracy for r in ranks):
        ax.bar(range(len(ranks)), _means([rows[r].tokens_per_second for r in ranks]),
               color=[colors[r] for r in ranks])
        ax.set_xticks(range(len(ranks)), [str(r) for r in ranks])
        ax.set_xlabel("LoRA rank")
        ax.set_ylabel("training tokens / s")
        ax.set_title("Throughput by rank (no verifiable tasks in this dataset)")
        ax.grid(True, alpha=0.3, axis="y")
        return
    labels = (["base"] if baseline and baseline.accuracy is not None else []) + [str(r) for r in ranks]
    overall = ([baseline.accuracy] if labels[0] == "base" else []) + \
              [rows[r].accuracy.mean for r in ranks]
    errs = _errorbars(([None] if labels[0] == "base" else []) + [rows[r].accuracy for r in ranks], scale=100)
    cols = (["lightgray"] if labels[0] == "base" else []) + [colors[r] for r in ranks]
    ax.bar(range(len(labels)), [100 * v for v in overall], yerr=errs, color=cols, capsize=3)
    fams = sorted(rows[ranks[0]].per_family or {})
    markers = "osD^v<>ph*"
    for j, fam in enumerate(fams):
        vals = ([baseline.accuracy_per_family.get(fam, 0.0)] if labels[0] == "base" else []) + \
               [rows[r].per_family[fam] for r in ranks]
        ax.plot(range(len(labels)), [100 * v for v in vals], marker=markers[j % len(markers)], lw=0.8,
                ms=4, alpha=0.8, label=fam)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylim(0, 105)
    ax.set_xlabel("LoRA rank (base = no adapter)")
    ax.set_ylabel("exact-match accuracy (%)")
    ax.set_title("Task accuracy: overall (bars, mean ± 95% CI) and per family (lines)")
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    ax.grid(True, alpha=0.3, axis="y")


def _by_type_lines(ax, spec_rows: dict[int, dict], key: str, ranks: list[int]) -> None:
    types = sorted(spec_rows[ranks[0]]["by_type"])
    cmap = plt.get_cmap("tab10")
    for i, t in enumerate(types):
        ax.plot(ranks, [spec_rows[r]["by_type"][t][key] for r in ranks], marker="o", ms=4, color=cmap(i), label=t)
    ax.plot(ranks, ranks, "k:", lw=1, label="= r (every direction used)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xticks(ranks, [str(r) for r in ranks])
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("LoRA rank r")
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)


def adapter_analysis(pol: PolicySummary, full_ft: RankRow | None) -> Figure | None:
    """What the adapters learned: how many directions ΔW really uses, its spectrum, where it acts."""
    ranks = [r for r in pol.ranks if pol.rows[r].spectra]
    if not ranks:
        return None
    spec = {r: pol.rows[r].spectra for r in ranks}
    full_spec = full_ft.spectra if full_ft else None
    policy = pol.policy
    colors = _colors(ranks)
    fig, axes = plt.subplots(2, 2, figsize=(14, 10))
    fig.suptitle(f"What the adapters learned: spectrum of ΔW = γ·B·A per module (alpha policy: {policy})",
                 fontsize=13)

    ax = axes[0, 0]
    _by_type_lines(ax, spec, "effective_rank", ranks)
    ax.set_ylabel("effective rank (Roy & Vetterli), mean over layers")
    ax.set_title("Effective rank of ΔW vs LoRA rank")

    ax = axes[0, 1]
    _by_type_lines(ax, spec, "energy_rank_90", ranks)
    ax.set_ylabel("directions holding 90% of ‖ΔW‖²")
    ax.set_title("Energy rank (90%) of ΔW vs LoRA rank")

    ax = axes[1, 0]
    for r in ranks:
        sv = spec[r]["normalized_spectrum"]
        ax.plot(range(1, len(sv) + 1), sv, color=colors[r], lw=1.8, label=f"r={r}")
    if full_spec:
        sv = full_spec["normalized_spectrum"]
        ax.plot(range(1, len(sv) + 1), sv, color="gray", ls="--", lw=1.2, label="full fine-tuning (top 64)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("singular value index k")
    ax.set_ylabel("σ_k / σ_1 (mean over modules)")
    ax.set_title("Singular value spectra of ΔW")
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8)

    ax = axes[1, 1]
    for r in ranks:
        layers = sorted(spec[r]["by_layer"], key=int)
        ax.plot([int(i) for i in layers], [spec[r]["by_layer"][i]["frobenius"] for i in layers], color=colors[r],
                marker="o", ms=3, label=f"r={r}")
    if full_spec:
        layers = sorted(full_spec["by_layer"], key=int)
        ax.plot([int(i) for i in layers], [full_spec["by_layer"][i]["frobenius"] for i in layers], color="gray",
                ls="--", label="full fine-tuning")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("‖ΔW‖_F (mean over module types)")
    ax.set_title("Size of the update per layer")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def subspace_similarity(pol: PolicySummary) -> Figure | None:
    """φ(i, j) heatmaps (Hu et al. 2021, Fig. 3): rows = comparison x space, columns = q_proj, v_proj."""
    sub, policy = pol.subspace, pol.policy
    if not sub:
        return None
    rows = [(kind, space) for kind in ("small_vs_large", "seed_vs_seed") if kind in sub
            for space in ("A", "delta_out")]
    types = [t for t in ("q_proj", "v_proj") if t in sub[rows[0][0]].spaces["A"]] or \
        sorted(sub[rows[0][0]].spaces["A"])[:2]
    fig, axes = plt.subplots(len(rows), len(types), figsize=(6 * len(types), 4.2 * len(rows)), squeeze=False)
    fig.suptitle(f"Subspace similarity φ(i, j), mean over layers (Hu et al. 2021 §7.2; alpha policy: {policy})",
                 fontsize=12)
    space_name = {"A": "A (input directions)", "delta_out": "ΔW output directions"}
    for (kind, space), ax_row in zip(rows, axes):
        entry = sub[kind]
        r1, r2 = entry.ranks
        for ax, t in zip(ax_row, types):
            d = entry.spaces[space][t]
            im = ax.imshow(d["phi"], vmin=0, vmax=1, cmap="viridis", aspect="auto",
                           extent=(0.5, len(d["phi"][0]) + 0.5, len(d["phi"]) + 0.5, 0.5))
            if kind == "small_vs_large":
                ax.set_ylabel(f"i: top-i of r={r1}")
                ax.set_xlabel(f"j: top-j of r={r2}")
                what = f"r={r1} vs r={r2}, seed {entry.seeds[0]}"
            else:
                ax.set_ylabel(f"i: seed {entry.seeds[0]}")
                ax.set_xlabel(f"j: seed {entry.seeds[1]}")
                what = f"r={r1}, seed vs seed"
            ax.set_title(f"{t}, {space_name[space]}: {what}\nφ(1,1) = {d['top1']:.2f} "
                         f"(random {d['top1_random']:.3f})", fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def _time_vs_rank(ax, pol: PolicySummary) -> None:
    """Training time against rank on a numeric rank axis (the fit time = a + b·r is a straight line
    only there), mean ± 95% CI over seeds, with the FLOP prediction for comparison."""
    ranks, rows = pol.ranks, pol.rows
    times = _means([rows[r].training_time_seconds for r in ranks])
    ax.errorbar(ranks, times, yerr=_errorbars([rows[r].training_time_seconds for r in ranks]), fmt="o",
                color="black", capsize=3, zorder=3)
    t = pol.time
    if t:
        fit = t.fit
        xs = [0] + ranks
        ax.plot(xs, [fit.intercept + fit.slope * x for x in xs], "k--", lw=1,
                label=f"measured: {line_text(fit.intercept, fit.slope, 's', 3)}")
        if t.predicted_overhead is not None:
            per_r = fit.intercept * t.predicted_overhead / t.r_max
            ax.plot(xs, [fit.intercept + per_r * x for x in xs], color="tab:red", ls=":", lw=1.5,
                    label=f"FLOP prediction: +{t.predicted_overhead:.0%} at r={t.r_max}")
        ax.legend(fontsize=8)
    ax.set_xlabel("LoRA rank r")
    ax.set_ylabel("training time (s)")
    ax.set_title("Training time vs rank")
    ax.grid(True, alpha=0.3)


def cost(pol: PolicySummary) -> Figure:
    """What rank costs: parameters (exactly linear), training time (fit vs FLOP prediction), memory."""
    ranks, rows, policy = pol.ranks, pol.rows, pol.policy
    colors = _colors(ranks)
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    fig.suptitle(f"Cost of rank (alpha policy: {policy})", fontsize=13)

    ax = axes[0]
    ax.scatter(ranks, [rows[r].trainable_params / 1e6 for r in ranks], c=[colors[r] for r in ranks], s=60, zorder=3)
    per_rank = pol.params.per_rank_formula
    if per_rank:
        ax.plot(ranks, [r * per_rank / 1e6 for r in ranks], "k--", lw=1, label=f"r × {per_rank:,}")
        ax.legend(fontsize=8)
    ax.set_xlabel("LoRA rank r")
    ax.set_ylabel("trainable parameters (M)")
    ax.set_title("Trainable parameters vs rank")
    ax.grid(True, alpha=0.3)

    _time_vs_rank(axes[1], pol)

    ax = axes[2]
    mem = [m / 2 ** 30 for m in _means([rows[r].peak_memory_bytes for r in ranks])]  # NaN (no point) when not recorded
    state = [rows[r].state_bytes / 2 ** 30 for r in ranks]
    ax.plot(ranks, mem, "o-", color="tab:blue", label="peak memory of the process")
    ax.plot(ranks, state, "s--", color="tab:orange", label="adapter + gradient + AdamW state (fp32)")
    ax.set_xlabel("LoRA rank r")
    ax.set_ylabel("GiB")
    ax.set_title("Memory vs rank")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes; the figure is freed."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
