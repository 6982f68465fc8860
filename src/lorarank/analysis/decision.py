"""Which rank should I use? The recommendation and the evidence around it, per alpha policy.

- Recommendation (analysis/recommend.py): the smallest rank TOST-equivalent to the best on eval loss,
  and, on verifiable data, on task accuracy, within a share of the best rank's gain over the base model.
- Forgetting (Biderman et al. 2024): is "higher rank forgets more" borne out? Slope of the general-text
  loss increase against log2(rank) over trials, with its CI.
- Intruder dimensions (Shuttleworth et al. 2024): do they grow with rank, and do they go with forgetting
  across trials (Spearman's ρ)?
- Capacity (LoRA Without Regret, 2025): the step each rank's eval curve leaves the highest rank's, and
  the stable-rank scaling exponent β.
All inputs are the chosen trials of each rank (RankRow.trials), so every number rests on the same runs.
"""

from __future__ import annotations

import math

from scipy import stats as sps

from lorarank.analysis.capacity import divergence_steps, params_per_token, stable_rank_scaling
from lorarank.analysis.model import Association, Thresholds, Trend
from lorarank.analysis.recommend import Recommendation, recommend
from lorarank.analysis.stats import fit_line, mean_ci


def recommendations(chosen: dict[int, list[dict]], baseline: dict | None,
                    thresholds: Thresholds) -> tuple[Recommendation | None, Recommendation | None]:
    """(on eval loss, on task accuracy); None without a base model to measure the gain from."""
    if not baseline:
        return None, None
    eps = thresholds.equivalence_margin
    loss = {r: {t["seed"]: t["final_eval_loss"] for t in ts} for r, ts in chosen.items()}
    on_loss = recommend(loss, baseline["eval_loss"], eps)
    acc = {r: {t["seed"]: t["accuracy"]["overall"] for t in ts if t.get("accuracy")} for r, ts in chosen.items()}
    on_acc = None
    if baseline.get("accuracy") and all(acc.values()):
        on_acc = recommend(acc, baseline["accuracy"]["overall"], eps, higher_is_better=True, metric="accuracy")
    return on_loss, on_acc


def trend(quantity: str, points: list[tuple[int, float]], level: float) -> Trend | None:
    """y against log2(rank) over trials; the verdict needs the slope's CI (three or more trials)."""
    points = [(r, y) for r, y in points if y is not None and math.isfinite(y)]
    if len({r for r, _ in points}) < 2:
        return None
    fit = fit_line([math.log2(r) for r, _ in points], [y for _, y in points], level)
    if all(y == 0 for _, y in points):  # e.g. no intruder anywhere: nothing to trend
        verdict = "none"
    elif fit.slope_low is None:
        verdict = "untested"
    else:
        verdict = "grows" if fit.slope_low > 0 else "shrinks" if fit.slope_high < 0 else "no trend"
    return Trend(quantity, fit.slope, fit.slope_low, fit.slope_high, len(points), verdict, level)


def association(x: str, y: str, points: list[tuple[float, float]], level: float) -> Association | None:
    """Spearman's ρ between two per-trial quantities, tested at 1 − level."""
    points = [(a, b) for a, b in points if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
    if len(points) < 3:
        return None
    xs, ys = zip(*points)
    if len(set(xs)) < 2 or len(set(ys)) < 2:  # a constant has no ranks to correlate
        return Association(x, y, None, None, len(points), "untested")
    res = sps.spearmanr(xs, ys)
    rho, p = float(res.statistic), float(res.pvalue)
    verdict = ("no association" if p >= 1 - level else "together" if rho > 0 else "opposite")
    return Association(x, y, rho, p, len(points), verdict)


def _intruders_per_module(t: dict) -> float | None:
    return ((t.get("intruders") or {}).get("overall") or {}).get("mean")


def forgetting_of(t: dict, baseline: dict | None) -> float | None:
    base = (baseline or {}).get("general_loss")
    return None if base is None or t.get("general_loss") is None else t["general_loss"] - base


def evidence(chosen: dict[int, list[dict]], baseline: dict | None, thresholds: Thresholds) -> dict:
    """Trends, association, divergence and β for one policy's chosen trials."""
    trials = [t for ts in chosen.values() for t in ts]
    level = thresholds.trend_level
    forget = [(t["rank"], forgetting_of(t, baseline)) for t in trials]
    intr = [(t["rank"], _intruders_per_module(t)) for t in trials]
    curves = {r: {t["seed"]: dict(zip(t["eval_steps"], t["eval_losses"])) for t in ts} for r, ts in chosen.items()}
    # Where a rank shares one seed with the highest rank (one seed swept, or failed trials left one),
    # there is no seed noise: a curve is apart when it trails by more than the one-seed tolerance.
    top = chosen[max(chosen)]
    margin = thresholds.tolerance * abs(sum(t["final_eval_loss"] for t in top) / len(top))
    stable = {r: {t["seed"]: t["spectra"]["overall"]["stable_rank"] for t in ts if t.get("spectra")}
              for r, ts in chosen.items()}
    return {
        "forgetting_trend": trend("forgetting", forget, level),
        "intruder_trend": trend("intruders", intr, level),
        "intruders_vs_forgetting": association("intruders per module", "forgetting",
                                               [(i, f) for (_, i), (_, f) in zip(intr, forget)], level),
        "divergence": divergence_steps(curves, margin) if len(chosen) > 1 else {},
        "rank_scaling": stable_rank_scaling({r: v for r, v in stable.items() if v}),
    }


def row_extras(trials: list[dict], baseline: dict | None) -> dict:
    """The forgetting, intruder and capacity fields of one rank's row (means over its seeds)."""
    def est(values):
        values = [v for v in values if v is not None]
        return mean_ci(values) if values else None

    base_eval = (baseline or {}).get("eval_loss")
    with_intr = [t["intruders"] for t in trials if t.get("intruders")]
    intruders = None
    if with_intr:
        types = sorted(with_intr[0]["by_type"])
        intruders = {"k": with_intr[0]["k"], "epsilon": with_intr[0]["epsilon"],
                     "per_module": sum(i["overall"]["mean"] for i in with_intr) / len(with_intr),
                     "by_type": {ty: sum(i["by_type"][ty]["mean"] for i in with_intr) / len(with_intr) for ty in types}}
    t0 = trials[0]
    return {
        "learning_gain": est([base_eval - t["final_eval_loss"] for t in trials]) if base_eval is not None else None,
        "general_loss": est([t.get("general_loss") for t in trials]),
        "forgetting": est([forgetting_of(t, baseline) for t in trials]),
        "intruders": intruders,
        "params_per_token": params_per_token(t0["trainable_params"], t0.get("completion_tokens_trained") or 0),
        "a_relative_change": est([(t.get("a_relative_change") or {}).get("overall") for t in trials]),
    }
