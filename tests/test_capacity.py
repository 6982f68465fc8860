"""Capacity diagnostics on constructed curves and spectra with known answers."""

from __future__ import annotations

import math

import pytest

from lorarank.analysis.capacity import divergence_step, divergence_steps, params_per_token, stable_rank_scaling

STEPS = [10, 20, 30, 40, 50]
NOISE = {1: 0.0, 2: 0.01, 3: -0.01}  # the same per-seed offset at every step (shared data order)


def curve(losses: list[float], seed: int, wobble: float = 0.0) -> dict[int, float]:
    return {t: v + NOISE[seed] + wobble * ((t // 10 + seed) % 3 - 1) for t, v in zip(STEPS, losses)}


def test_params_per_token():
    assert params_per_token(2_442_240, 10_600) == pytest.approx(230.4, rel=1e-3)  # SmolLM2 r=8 on ~10.6k tokens
    assert params_per_token(100, 0) is None


def test_divergence_is_where_the_curve_stays_apart():
    high = {s: curve([2.0, 1.5, 1.0, 0.6, 0.3], s, 0.002) for s in NOISE}
    # follows the high rank for two evals, then falls behind for good
    low = {s: curve([2.0, 1.5, 1.2, 1.0, 0.9], s, 0.003) for s in NOISE}
    div = divergence_step(low, high, 4, 64)
    assert div.step == 30 and div.first_apart == 30 and div.n_seeds == 3 and "paired 95% CI" in div.rule
    assert [g["apart"] for g in div.gaps] == [False, False, True, True, True]
    # apart at step 20 by chance, together again at 30, then behind from 40 on: the step is 40
    blip = {s: curve([2.0, 1.6, 1.0, 1.0, 0.9], s, 0.003) for s in NOISE}
    div = divergence_step(blip, high, 8, 64)
    assert div.first_apart == 20 and div.step == 40
    # better than the reference is not "behind"; and a curve that rejoins at the end never diverged
    assert divergence_step({s: curve([1.9, 1.2, 0.8, 0.5, 0.2], s) for s in NOISE}, high, 16, 64).step is None
    rejoin = {s: curve([2.0, 1.8, 1.4, 1.0, 0.3], s, 0.003) for s in NOISE}
    out = divergence_step(rejoin, high, 32, 64)
    assert out.step is None and out.first_apart == 20


def test_divergence_with_one_seed_uses_the_tolerance():
    high, low = {1: curve([2.0, 1.5, 1.0, 0.6, 0.3], 1)}, {1: curve([2.0, 1.52, 1.1, 0.9, 0.8], 1)}
    div = divergence_step(low, high, 4, 64, margin=0.05)  # differences 0, 0.02, 0.1, 0.3, 0.5
    assert div.step == 30 and "one seed" in div.rule and div.gaps[1]["low"] is None
    with pytest.raises(ValueError, match="margin"):
        divergence_step(low, high, 4, 64)
    all_ranks = divergence_steps({4: low, 64: high}, margin=0.05)
    assert list(all_ranks) == [4] and all_ranks[4].reference == 64


def test_stable_rank_scaling_recovers_the_exponent():
    # stable rank = 1.5 · r^0.27 with a little seed noise: β ≈ 0.27 and the CI covers it
    per_seed = {r: {s: 1.5 * r ** 0.27 * (1 + e) for s, e in zip((1, 2, 3), (0.0, 0.02, -0.02))}
                for r in (4, 8, 16, 32, 64)}
    fit = stable_rank_scaling(per_seed)
    assert fit.beta == pytest.approx(0.27, abs=0.01) and fit.low < 0.27 < fit.high and fit.high - fit.low < 0.05
    assert fit.c == pytest.approx(1.5, rel=0.05) and fit.n_points == 15 and "per trial" in fit.points
    exact = stable_rank_scaling({r: {1: 2.0 * r ** 0.3} for r in (8, 16, 32)})
    assert exact.beta == pytest.approx(0.3) and exact.high - exact.low == pytest.approx(0, abs=1e-9)
    assert stable_rank_scaling({8: {1: 2.0, 2: 2.1}}) is None  # one rank: no exponent
    assert stable_rank_scaling({8: {1: 2.0}, 16: {1: 0.0}, 32: {1: math.nan}}) is None  # untrained trials drop out
