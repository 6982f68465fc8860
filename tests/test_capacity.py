"""Capacity diagnostics on constructed curves and spectra with known answers."""

from __future__ import annotations

import math

import pytest

from lorarank.analysis.capacity import gap_trajectories, gap_trajectory, params_per_token, stable_rank_scaling
from lorarank.analysis.stats import Outcome

STEPS = [10, 20, 30, 40, 50]
NOISE = {1: 0.0, 2: 0.01, 3: -0.01}  # the same per-seed offset at every step (shared data order)


def curve(losses: list[float], seed: int, wobble: float = 0.0) -> dict[int, float]:
    return {t: v + NOISE[seed] + wobble * ((t // 10 + seed) % 3 - 1) for t, v in zip(STEPS, losses)}


def test_params_per_token():
    assert params_per_token(2_442_240, 10_600) == pytest.approx(230.4, rel=1e-3)  # SmolLM2 r=8 on ~10.6k tokens
    assert params_per_token(100, 0) is None


def test_gap_per_step_and_the_first_significant_one():
    high = {s: curve([2.0, 1.5, 1.0, 0.6, 0.3], s, 0.002) for s in NOISE}
    # follows the high rank for two evals, then falls behind
    low = {s: curve([2.0, 1.5, 1.2, 1.0, 0.9], s, 0.003) for s in NOISE}
    g = gap_trajectory(low, high, 4, 64)
    assert g.steps == STEPS and g.n_seeds == 3 and g.tested
    assert [c.outcome for c in g.gaps][2:] == [Outcome.WORSE] * 3 and g.first_significant == 30
    assert g.gaps[2].mean == pytest.approx(0.2, abs=0.01) and g.gaps[2].level == pytest.approx(0.9)
    # a large gap that the seeds scatter around is not significant: the gap opens before it is shown
    wide = {s: {t: v + (0.3 * (s - 2) if t == 20 else 0.0) for t, v in c.items()} for s, c in low.items()}
    wide = {s: {**c, 20: c[20] + 0.25} for s, c in wide.items()}  # mean gap 0.25 at step 20, seeds ±0.3
    g = gap_trajectory(wide, high, 8, 64)
    assert g.gaps[1].mean == pytest.approx(0.25, abs=0.01) and g.gaps[1].outcome is Outcome.INCONCLUSIVE
    assert g.first_significant == 30
    # better than the reference is not "behind"
    ahead = gap_trajectory({s: curve([1.9, 1.2, 0.8, 0.5, 0.2], s) for s in NOISE}, high, 16, 64)
    assert ahead.first_significant is None


def test_gap_with_one_seed_is_untested():
    high, low = {1: curve([2.0, 1.5, 1.0, 0.6, 0.3], 1)}, {1: curve([2.0, 1.52, 1.1, 0.9, 0.8], 1)}
    g = gap_trajectory(low, high, 4, 64)
    assert not g.tested and g.first_significant is None and g.gaps[3].mean == pytest.approx(0.3)
    assert all(c.outcome is Outcome.UNTESTED for c in g.gaps)
    with pytest.raises(ValueError, match="share no seed"):
        gap_trajectory(low, {2: high[1]}, 4, 64)
    all_ranks = gap_trajectories({4: low, 64: high})
    assert list(all_ranks) == [4] and all_ranks[4].reference == 64


def test_stable_rank_scaling_recovers_the_exponent():
    # stable rank = 1.5 · r^0.27 with a little noise per trial: β ≈ 0.27 and the CI over seeds covers it
    per_seed = {r: {s: 1.5 * r ** 0.27 * (1 + 0.02 * ((r.bit_length() + s) % 3 - 1)) for s in (1, 2, 3)}
                for r in (4, 8, 16, 32, 64)}
    fit = stable_rank_scaling(per_seed)
    b = fit.beta
    assert b.mean == pytest.approx(0.27, abs=0.01) and b.low < 0.27 < b.high and b.n == 3
    assert fit.c == pytest.approx(1.5, rel=0.05) and fit.n_trials == 15
    # β per seed, then the t interval over seeds: one seed gives β but no interval
    exact = stable_rank_scaling({r: {1: 2.0 * r ** 0.3} for r in (8, 16, 32)})
    assert exact.beta.mean == pytest.approx(0.3) and exact.beta.low is None and exact.c == pytest.approx(2.0)
    assert stable_rank_scaling({8: {1: 2.0, 2: 2.1}}) is None  # one rank: no exponent
    assert stable_rank_scaling({8: {1: 2.0}, 16: {1: 0.0}, 32: {1: math.nan}}) is None  # untrained trials drop out
