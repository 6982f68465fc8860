"""The rank recommendation on constructed per-seed results with known answers."""

from __future__ import annotations

import json
import math

import pytest

from lorarank.analysis.recommend import recommend

BASE = 3.0  # base model eval loss; the best rank reaches ~1.0, so the improvement is ~2 nats


# per-seed eval losses: rank 32 is the best (mean 1.000); rank 16 differs by seed noise only, rank 8 is
# consistently ~0.02 worse (1% of the 2-nat gain), rank 4 0.5 worse (25% of the gain)
LOSSES = {4: {1: 1.50, 2: 1.505, 3: 1.497}, 8: {1: 1.022, 2: 1.021, 3: 1.019},
          16: {1: 1.002, 2: 1.003, 3: 0.998}, 32: {1: 1.000, 2: 1.004, 3: 0.996}}


def test_smallest_equivalent_rank_is_recommended():
    rec = recommend(LOSSES, BASE)
    assert rec.tested and rec.best == 32 and rec.recommended == 8
    assert rec.margin == pytest.approx(0.05 * (BASE - 1.0)) and rec.improvement == pytest.approx(2.0)
    # rank 8: d = (0.022, 0.017, 0.023), 90% CI about (0.015, 0.026), inside ±0.1
    assert rec.tests[8].equivalent is True and 0.0 < rec.tests[8].low < rec.tests[8].high < 0.03
    assert rec.tests[4].equivalent is False
    assert rec.tests[32].reason == "the best rank itself" and rec.tests[32].equivalent is True
    # a tighter margin (0.5% of the gain = 0.01 nats) no longer covers rank 8's 0.02
    assert recommend(LOSSES, BASE, share=0.005).recommended == 16
    assert json.loads(json.dumps(rec.to_dict()))["tests"]["8"]["equivalent"] is True


def test_noisy_rank_is_not_called_equivalent():
    # rank 8's mean equals the best's, but its seed noise is larger than the margin: not shown equivalent
    per_seed = {8: {1: 1.3, 2: 0.7, 3: 1.0}, 16: {1: 1.0, 2: 1.0, 3: 0.999}}
    rec = recommend(per_seed, BASE)
    assert rec.best == 16 and rec.tests[8].equivalent is False and rec.recommended == 16


def test_one_seed_gives_a_provisional_pick_and_the_settling_command():
    per_seed = {4: {1: 1.5}, 8: {1: 1.05}, 16: {1: 1.0}, 32: {1: 1.01}}  # gain 2.0: δ = 0.1
    rec = recommend(per_seed, BASE)
    assert not rec.tested and rec.recommended is None and rec.provisional == 8 and rec.best == 16
    assert "one seed" in rec.reason and rec.settle_seeds == 3 and rec.settle_command.endswith("--seeds 3")
    assert rec.tests[8].equivalent is None


def test_accuracy_higher_is_better():
    per_seed = {4: {1: 0.60, 2: 0.62, 3: 0.61}, 8: {1: 0.895, 2: 0.90, 3: 0.905}, 16: {1: 0.90, 2: 0.91, 3: 0.90}}
    rec = recommend(per_seed, base=0.10, higher_is_better=True, metric="accuracy")
    assert rec.best == 16 and rec.improvement == pytest.approx(0.9033333 - 0.10)
    assert rec.recommended == 8 and rec.tests[4].equivalent is False


def test_base_better_than_every_rank_and_single_rank():
    rec = recommend(LOSSES, base=0.9)
    assert rec.recommended is None and rec.margin is None and "no rank improved" in rec.reason
    single = recommend({8: {1: 1.0, 2: 1.1}}, BASE)
    assert single.recommended is None and single.best == 8 and "single rank (8)" in single.reason


def test_diverged_rank_cannot_be_best_or_equivalent():
    per_seed = {**LOSSES, 4: {1: math.nan, 2: 0.2, 3: 0.2}}  # "better" on two seeds, diverged on one
    rec = recommend(per_seed, BASE)
    assert rec.best == 32 and rec.tests[4].equivalent is None and rec.recommended == 8
    with pytest.raises(ValueError, match="share"):
        recommend(per_seed, BASE, share=0.0)
