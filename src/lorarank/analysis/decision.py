"""Which rank should I use? The recommendation and the evidence around it, per alpha policy.

- Recommendation (analysis/recommend.py): fixed-sequence TOST downward from the best rank on eval
  loss and, on verifiable data, on task accuracy, within a share of the best rank's gain.
- Forgetting (Biderman et al. 2024): is "higher rank forgets more" borne out? The slope of the
  general-text loss increase against log2(rank), fitted per seed, with the t interval over seeds.
- Intruder dimensions (Shuttleworth et al. 2024): do they grow with rank (the same per-seed slope),
  and do they go with forgetting across trials (Spearman's ρ)?
- Capacity (LoRA Without Regret, 2025): each rank's eval-curve gap to the highest rank per eval step,
  and the stable-rank scaling exponent β.
All inputs are the chosen trials of each rank (RankRow.trials), so every number rests on the same runs.
"""

from __future__ import annotations

import math

from scipy import stats as sps

from lorarank.analysis.capacity import (GapTrajectory, RankScaling, gap_trajectories, params_per_token,
                                        stable_rank_scaling)
from lorarank.analysis.model import Association, AssociationVerdict, Intruders, Thresholds, Trend, TrendVerdict
from lorarank.analysis.recommend import Recommendation, recommend
from lorarank.analysis.sweep_info import Baseline
from lorarank.analysis.stats import ALPHA, mean_ci, slopes_over_seeds


def recommendations(chosen: dict[int, list[dict]], baseline: Baseline | None, thresholds: Thresholds,
                    argv: list[str] | None) -> tuple[Recommendation | None, Recommendation | None]:
    """(on eval loss, on task accuracy); None without a base model to measure the gain from."""
    if not baseline:
        return None, None
    eps = thresholds.equivalence_margin
    loss = {r: {t["seed"]: t["final_eval_loss"] for t in ts} for r, ts in chosen.items()}
    on_loss = recommend(loss, baseline.eval_loss, eps, argv=argv)
    acc = accuracy_per_seed(chosen)
    on_acc = None
    if baseline.accuracy is not None and all(acc.values()):
        on_acc = recommend(acc, baseline.accuracy, eps, higher_is_better=True, metric="accuracy", argv=argv)
    return on_loss, on_acc


def accuracy_per_seed(chosen: dict[int, list[dict]]) -> dict[int, dict[int, float]]:
    return {r: {t["seed"]: t["accuracy"]["overall"] for t in ts if t.get("accuracy")} for r, ts in chosen.items()}


def trend(quantity: str, points: list[tuple[int, int, float | None]]) -> Trend | None:
    """y against log2(rank), fitted per seed; points are (rank, seed, y) of the trials. The verdict
    needs the t interval of the mean slope over at least two seeds."""
    points = [(r, s, y) for r, s, y in points if y is not None and math.isfinite(y)]
    if len({r for r, _, _ in points}) < 2:
        return None
    if all(y == 0 for _, _, y in points):  # e.g. no intruder anywhere: nothing to trend
        return Trend(quantity, None, len(points), TrendVerdict.NONE)
    by_seed: dict[int, list[tuple[float, float]]] = {}
    for r, s, y in points:
        by_seed.setdefault(s, []).append((math.log2(r), y))
    slopes = slopes_over_seeds(by_seed)
    if slopes is None:
        return None
    if slopes.low is None:
        verdict = TrendVerdict.UNTESTED
    else:
        verdict = (TrendVerdict.GROWS if slopes.low > 0 else TrendVerdict.SHRINKS if slopes.high < 0
                   else TrendVerdict.NOT_SHOWN)
    return Trend(quantity, slopes, len(points), verdict)


def association(x: str, y: str, points: list[tuple[float, float]]) -> Association | None:
    """Spearman's ρ between two per-trial quantities, tested at α."""
    points = [(a, b) for a, b in points if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
    if len(points) < 3:
        return None
    xs, ys = zip(*points)
    if len(set(xs)) < 2 or len(set(ys)) < 2:  # a constant has no ranks to correlate
        return Association(x, y, None, None, len(points), AssociationVerdict.UNTESTED)
    res = sps.spearmanr(xs, ys)
    rho, p = float(res.statistic), float(res.pvalue)
    verdict = (AssociationVerdict.NO_ASSOCIATION if p >= ALPHA else
               AssociationVerdict.TOGETHER if rho > 0 else AssociationVerdict.OPPOSITE)
    return Association(x, y, rho, p, len(points), verdict)


def _intruders_per_module(t: dict) -> float | None:
    return ((t.get("intruders") or {}).get("overall") or {}).get("mean")


def forgetting_of(t: dict, baseline: Baseline | None) -> float | None:
    base = baseline.general_loss if baseline else None
    return None if base is None or t.get("general_loss") is None else t["general_loss"] - base


def forgetting_trend(chosen: dict[int, list[dict]], baseline: Baseline | None) -> Trend | None:
    points = [(t["rank"], t["seed"], forgetting_of(t, baseline)) for ts in chosen.values() for t in ts]
    return trend("forgetting", points)


def intruder_trend(chosen: dict[int, list[dict]]) -> Trend | None:
    return trend("intruders", [(t["rank"], t["seed"], _intruders_per_module(t)) for ts in chosen.values() for t in ts])


def intruders_vs_forgetting(chosen: dict[int, list[dict]], baseline: Baseline | None) -> Association | None:
    trials = [t for ts in chosen.values() for t in ts]
    return association("intruders per module", "forgetting",
                       [(_intruders_per_module(t), forgetting_of(t, baseline)) for t in trials])


def gaps(chosen: dict[int, list[dict]]) -> dict[int, GapTrajectory]:
    """Each rank's eval curve against the highest rank's, per eval step (capacity.gap_trajectories)."""
    if len(chosen) < 2:
        return {}
    return gap_trajectories({r: {t["seed"]: dict(zip(t["eval_steps"], t["eval_losses"])) for t in ts}
                             for r, ts in chosen.items()})


def rank_scaling(chosen: dict[int, list[dict]]) -> RankScaling | None:
    stable = {r: {t["seed"]: t["spectra"]["overall"]["stable_rank"] for t in ts if t.get("spectra")}
              for r, ts in chosen.items()}
    return stable_rank_scaling({r: v for r, v in stable.items() if v})


def row_extras(trials: list[dict], baseline: Baseline | None) -> dict:
    """The forgetting, intruder and capacity fields of one rank's row (means over its seeds)."""
    def est(values):
        values = [v for v in values if v is not None]
        return mean_ci(values) if values else None

    with_intr = [t["intruders"] for t in trials if t.get("intruders")]
    intruders = None
    if with_intr:
        types = sorted(with_intr[0]["by_type"])
        intruders = Intruders(with_intr[0]["k"], with_intr[0]["epsilon"],
                              sum(i["overall"]["mean"] for i in with_intr) / len(with_intr),
                              {ty: sum(i["by_type"][ty]["mean"] for i in with_intr) / len(with_intr) for ty in types})
    t0 = trials[0]
    return {
        "learning_gain": est([baseline.eval_loss - t["final_eval_loss"] for t in trials]) if baseline else None,
        "general_loss": est([t.get("general_loss") for t in trials]),
        "forgetting": est([forgetting_of(t, baseline) for t in trials]),
        "intruders": intruders,
        "params_per_token": params_per_token(t0["trainable_params"], t0.get("completion_tokens_trained") or 0),
        "a_relative_change": est([(t.get("a_relative_change") or {}).get("overall") for t in trials]),
    }
