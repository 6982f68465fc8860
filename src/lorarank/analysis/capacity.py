"""Capacity diagnostics: when does a rank run out of room?

LoRA Without Regret (Schulman et al., Thinking Machines 2025): LoRA learns as fast as full
fine-tuning while it is not capacity-constrained, i.e. while its trainable parameters exceed what the
data has to teach; low ranks follow the high-rank loss curve at first and fall behind later, at a step
that grows with rank. Three numbers per sweep:

- params per trained token = trainable parameters ÷ completion tokens trained on (a rough gauge of
  how much room a rank has per unit of data; a small value is where the paper sees low ranks fall
  behind, not a sharp threshold);
- the divergence step: the eval step from which a rank's eval curve stays above the highest rank's
  by more than the seed noise;
- the stable-rank scaling exponent β in  stable rank ≈ c · r^β  (Yazidi et al. report β ≈ 0.23-0.30
  across models): how much of the extra room a higher rank actually uses.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from lorarank.analysis.stats import fit_line, mean_ci


def params_per_token(trainable_params: int, completion_tokens_trained: int) -> float | None:
    """Trainable parameters per completion token trained on (every epoch counts: the tokens the
    optimiser saw). None when no token was trained."""
    return trainable_params / completion_tokens_trained if completion_tokens_trained > 0 else None


# ---------------------------------------------------------------------------------------------- divergence


@dataclass(frozen=True)
class Divergence:
    rank: int
    reference: int  # the highest rank, whose curve the rank is compared with
    step: int | None  # first eval step from which the rank stays apart through the last step; None: never
    first_apart: int | None  # the first eval step apart at all (it may rejoin later)
    rule: str
    n_seeds: int
    gaps: list[dict]  # per eval step: step, mean difference (rank − reference), CI low/high, apart

    def to_dict(self) -> dict:
        return asdict(self)


def divergence_step(curves: dict[int, dict[int, float]], reference: dict[int, dict[int, float]], rank: int,
                    reference_rank: int, margin: float | None = None) -> Divergence:
    """When does `rank`'s eval curve leave the reference (highest-rank) curve for good?

    curves, reference: seed -> {eval step: eval loss}. At each eval step that every shared seed has,
    d_s(t) = L_rank(s, t) − L_ref(s, t), paired over seeds (same data order per seed).
    - Several seeds: apart(t) when the 95% CI of mean d(t) lies above 0 (worse by more than the seed
      noise; a rank *better* than the reference is not "behind").
    - One shared seed (one seed swept, or the other seeds' trials failed): no seed noise exists, so
      apart(t) when d(t) > margin, a tolerance in nats given by the caller (the report passes its
      one-seed tolerance, a share of the highest rank's final loss); the rule says so.
    The divergence step is the first step from which apart(t) holds at every later eval step, not the
    first step apart at all: tested at many steps, a 95% CI excludes 0 by chance now and then, and
    the capacity limit the paper describes is lasting (once a rank falls behind it stays behind).
    The first step apart is reported too."""
    seeds = sorted(set(curves) & set(reference))
    if not seeds:
        raise ValueError(f"rank {rank} and rank {reference_rank} share no seed")
    if len(seeds) == 1 and margin is None:
        raise ValueError("one seed: give a margin (a tolerance in nats) to decide when curves are apart")
    steps = sorted(set.intersection(*(set(curves[s]) & set(reference[s]) for s in seeds)))
    gaps = [_gap(t, [curves[s][t] - reference[s][t] for s in seeds], margin) for t in steps]
    first_apart = next((g["step"] for g in gaps if g["apart"]), None)
    step = None
    for g in reversed(gaps):
        if not g["apart"]:
            break
        step = g["step"]
    rule = ("first eval step from which the paired 95% CI across seeds of (rank − highest rank) stays above 0"
            if len(seeds) > 1 else
            f"one seed shared with the highest rank, no seed noise: first eval step from which (rank − highest rank) "
            f"stays above a "
            f"tolerance of {margin:.4g} nats")
    return Divergence(rank, reference_rank, step, first_apart, rule, len(seeds), gaps)


def _gap(step: int, diffs: list[float], margin: float | None) -> dict:
    est = mean_ci(diffs)
    finite = all(math.isfinite(d) for d in diffs)
    apart = finite and (est.low > 0 if est.low is not None else est.mean > margin)
    return {"step": step, "mean": est.mean, "low": est.low, "high": est.high, "apart": bool(apart)}


def divergence_steps(curves: dict[int, dict[int, dict[int, float]]],
                     margin: float | None = None) -> dict[int, Divergence]:
    """divergence_step of every rank against the highest rank; curves: rank -> seed -> {step: loss}.
    A rank that shares no seed with the highest rank (its trials failed where the other's succeeded)
    cannot be paired and is left out; the report shows it as n/a."""
    top = max(curves)
    return {r: divergence_step(curves[r], curves[top], r, top, margin) for r in sorted(curves)
            if r != top and set(curves[r]) & set(curves[top])}


# ---------------------------------------------------------------------------------------------- stable rank


@dataclass(frozen=True)
class RankScaling:
    beta: float  # exponent in stable rank ≈ c·r^β
    low: float | None  # 95% CI of β (None with two points)
    high: float | None
    c: float
    r2: float
    n_points: int
    points: str  # which points entered the fit

    def to_dict(self) -> dict:
        return asdict(self)


def stable_rank_scaling(per_seed: dict[int, dict[int, float]]) -> RankScaling | None:
    """Fit log(stable rank) = log c + β·log r by least squares, with a t CI on β.

    per_seed: rank -> {seed: the trial's stable rank, its mean over modules}. One point per trial:
    seeds are independent replicates, so their scatter is the noise the CI should reflect. Fitting one
    point per module instead (hundreds per trial) would shrink the CI by about √modules without new
    evidence, since a trial's modules share its data, seed and optimiser path (pseudo-replication), and
    module types differ systematically. With one seed the CI rests only on the scatter of the ranks
    around the line. Trials with a stable rank <= 0 or non-finite (no update) are left out.
    None with fewer than two distinct ranks."""
    pts = [(r, v) for r, seeds in per_seed.items() for v in seeds.values() if math.isfinite(v) and v > 0]
    if len({r for r, _ in pts}) < 2:
        return None
    fit = fit_line([math.log(r) for r, _ in pts], [math.log(v) for _, v in pts])
    return RankScaling(fit.slope, fit.slope_low, fit.slope_high, math.exp(fit.intercept), fit.r2, len(pts),
                       "one point per trial (rank, seed): the trial's mean stable rank over its modules")
