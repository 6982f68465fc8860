"""Capacity diagnostics: when does a rank run out of room?

LoRA Without Regret (Schulman et al., Thinking Machines 2025): LoRA learns as fast as full
fine-tuning while it is not capacity-constrained, i.e. while its trainable parameters exceed what the
data has to teach; low ranks follow the high-rank loss curve at first and fall behind later, at a step
that grows with rank. Three numbers per sweep:

- params per trained token = trainable parameters ÷ completion tokens trained on (a rough gauge of
  how much room a rank has per unit of data; a small value is where the paper sees low ranks fall
  behind, not a sharp threshold);
- the gap of each rank's eval curve to the highest rank's at every eval step, paired over seeds with
  its 90% CI, and the first step with a significant gap: when the gap becomes visible through the
  seed noise, not when it opens (a gap can be large and still not significant);
- the stable-rank scaling exponent β in  stable rank ≈ c · r^β  (Yazidi et al. report β ≈ 0.23-0.30
  across models), fitted per seed: how much of the extra room a higher rank actually uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lorarank.analysis.stats import Comparison, Outcome, SeedSlopes, compare, slopes_over_seeds


def params_per_token(trainable_params: int, completion_tokens_trained: int) -> float | None:
    """Trainable parameters per completion token trained on (every epoch counts: the tokens the
    optimiser saw). None when no token was trained."""
    return trainable_params / completion_tokens_trained if completion_tokens_trained > 0 else None


# ---------------------------------------------------------------------------------------------- gap per eval step


@dataclass(frozen=True)
class GapTrajectory:
    """A rank's eval curve against the highest rank's: at every eval step both have on every shared
    seed, the paired comparison of d_s(t) = L_rank(s, t) − L_ref(s, t) (stats.compare, 90% CI)."""

    rank: int
    reference: int  # the highest rank
    steps: list[int]
    gaps: list[Comparison]  # one per step; the comparison's outcome says whether the gap is significant
    first_significant: int | None  # the first eval step whose gap is shown (worse); None: none, or untested

    @property
    def n_seeds(self) -> int:
        return self.gaps[0].n if self.gaps else 0

    @property
    def tested(self) -> bool:
        return any(g.outcome is not Outcome.UNTESTED for g in self.gaps)


def gap_trajectory(curves: dict[int, dict[int, float]], reference: dict[int, dict[int, float]], rank: int,
                   reference_rank: int) -> GapTrajectory:
    """curves, reference: seed -> {eval step: eval loss}. A step's gap is significant when its 90% CI
    lies above 0 (a one-sided test at 5%; a rank *better* than the reference is not "behind"). With
    one shared seed nothing is tested: the gaps are point estimates only."""
    seeds = sorted(set(curves) & set(reference))
    if not seeds:
        raise ValueError(f"rank {rank} and rank {reference_rank} share no seed")
    steps = sorted(set.intersection(*(set(curves[s]) & set(reference[s]) for s in seeds)))
    gaps = [compare({s: curves[s][t] for s in seeds}, {s: reference[s][t] for s in seeds}, None, rank=rank,
                    reference_rank=reference_rank) for t in steps]
    first = next((t for t, g in zip(steps, gaps) if g.outcome is Outcome.WORSE), None)
    return GapTrajectory(rank, reference_rank, steps, gaps, first)


def gap_trajectories(curves: dict[int, dict[int, dict[int, float]]]) -> dict[int, GapTrajectory]:
    """gap_trajectory of every rank against the highest rank; curves: rank -> seed -> {step: loss}.
    A rank that shares no seed with the highest rank (its trials failed where the other's succeeded)
    cannot be paired and is left out; the report shows it as n/a."""
    top = max(curves)
    return {r: gap_trajectory(curves[r], curves[top], r, top) for r in sorted(curves)
            if r != top and set(curves[r]) & set(curves[top])}


# ---------------------------------------------------------------------------------------------- stable rank


@dataclass(frozen=True)
class RankScaling:
    """stable rank ≈ c·r^β, fitted per seed (log stable rank = log c + β·log r over that seed's
    ranks), then β's mean and t interval over the seeds (stats.slopes_over_seeds)."""

    beta: SeedSlopes
    c: float  # exp of the mean intercept over seeds
    n_trials: int


def stable_rank_scaling(per_seed: dict[int, dict[int, float]]) -> RankScaling | None:
    """per_seed: rank -> {seed: the trial's stable rank, its mean over modules}.

    The seeds are the replicates: a seed's ranks share its data order and initialisation, so one
    least-squares fit over every trial (or over every module, hundreds per trial) would count
    dependent points as independent evidence and shrink the interval without new evidence. Trials with
    a stable rank <= 0 or non-finite (no update) are left out. None when no seed has two ranks."""
    by_seed: dict[int, list[tuple[float, float]]] = {}
    for r, seeds in sorted(per_seed.items()):
        for s, v in seeds.items():
            if math.isfinite(v) and v > 0:
                by_seed.setdefault(s, []).append((math.log(r), math.log(v)))
    beta = slopes_over_seeds(by_seed)
    if beta is None:
        return None
    c = math.exp(sum(beta.intercepts.values()) / beta.n)
    return RankScaling(beta, c, sum(len(by_seed[s]) for s in beta.per_seed))
