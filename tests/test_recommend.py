"""The rank recommendation on constructed per-seed results with known answers."""

from __future__ import annotations

import json
import math

import pytest

from lorarank.analysis.model import to_jsonable
from lorarank.analysis.recommend import recommend, settle_command
from lorarank.analysis.stats import Outcome

BASE = 3.0  # base model eval loss; the best rank reaches ~1.0, so the improvement is ~2 nats


# per-seed eval losses: rank 32 is the best (mean 1.000); rank 16 differs by seed noise only, rank 8 is
# consistently ~0.02 worse (1% of the 2-nat gain), rank 4 0.5 worse (25% of the gain)
LOSSES = {4: {1: 1.50, 2: 1.505, 3: 1.497}, 8: {1: 1.022, 2: 1.021, 3: 1.019},
          16: {1: 1.002, 2: 1.003, 3: 0.998}, 32: {1: 1.000, 2: 1.004, 3: 0.996}}


def test_smallest_equivalent_rank_is_recommended():
    rec = recommend(LOSSES, BASE)
    assert rec.tested and rec.best == 32 and rec.recommended == 8
    assert rec.sequence == [32, 16, 8, 4] and rec.stopped_at == 4
    assert rec.margin == pytest.approx(0.05 * (BASE - 1.0)) and rec.improvement == pytest.approx(2.0)
    # rank 8: d = (0.022, 0.017, 0.023), 90% CI about (0.015, 0.026): inside ±0.1 and above 0
    c8 = rec.comparisons[8]
    assert c8.outcome is Outcome.EQUIVALENT_AND_WORSE and 0.0 < c8.low < c8.high < 0.03
    assert rec.comparisons[4].outcome is Outcome.WORSE
    assert rec.comparisons[32].reason == "the reference itself" and rec.comparisons[32].outcome is Outcome.EQUIVALENT
    assert rec.lead.startswith("**Rank 8**: the smallest rank equivalent to the best rank (32)")
    # a tighter margin (0.5% of the gain = 0.01 nats) no longer covers rank 8's 0.02
    assert recommend(LOSSES, BASE, share=0.005).recommended == 16
    assert json.loads(json.dumps(to_jsonable(rec)))["comparisons"]["8"]["outcome"] == "equivalent_and_worse"


def test_fixed_sequence_stops_above_a_gap():
    """Rank 16 is not equivalent (its seeds scatter) but rank 8 is: testing downward from the best
    stops at 16, so the pick is 32 and rank 8, though equivalent on its own, is not reached."""
    per_seed = {8: {1: 1.01, 2: 1.0, 3: 0.995}, 16: {1: 1.3, 2: 0.7, 3: 1.0},
                32: {1: 1.0, 2: 1.005, 3: 0.998}, 64: {1: 1.0, 2: 1.0, 3: 0.999}}
    rec = recommend(per_seed, BASE)
    assert rec.best == 64 and rec.comparisons[8].outcome.equivalent
    assert rec.comparisons[16].outcome is Outcome.INCONCLUSIVE
    assert rec.recommended == 32 and rec.stopped_at == 16 and rec.sequence == [64, 32, 16]
    assert rec.shown_equivalent(32) and not rec.shown_equivalent(8) and not rec.shown_equivalent(16)
    assert "The sequence stopped at rank 16" in rec.lead


def test_a_lead_that_is_not_significant_gives_no_recommendation():
    # rank 8's mean is worse than 16's but its seeds scatter past δ on both sides: neither worse nor equivalent
    per_seed = {8: {1: 1.3, 2: 0.75, 3: 1.05}, 16: {1: 1.0, 2: 1.0, 3: 0.999}}
    rec = recommend(per_seed, BASE, argv=["run", "--ranks", "8", "16", "--seeds", "3"])
    assert rec.tested and rec.best == 16 and rec.recommended is None and rec.stopped_at == 8
    assert rec.lead.startswith("**No recommendation on eval loss: the best rank's lead over rank 8 is not significant")
    # a clear lead over the next rank down makes the best rank the pick
    clear = recommend({8: {1: 1.5, 2: 1.52, 3: 1.49}, 16: {1: 1.0, 2: 1.0, 3: 0.999}}, BASE)
    assert clear.recommended == 16 and clear.comparisons[8].outcome is Outcome.WORSE
    assert clear.lead.startswith("**Rank 16**, the best rank over 3 seeds: the next smaller rank is not within δ")


def test_noise_says_what_the_seeds_could_show():
    rec = recommend(LOSSES, BASE)
    assert rec.noise.seeds == 3 and rec.noise.sd > 0
    assert rec.noise.detectable == pytest.approx(2.919986 * rec.noise.sd / math.sqrt(3), rel=1e-5)


def test_noisy_rank_is_not_called_equivalent():
    # rank 8's mean equals the best's, but its seed noise is larger than the margin: not shown equivalent
    per_seed = {8: {1: 1.3, 2: 0.7, 3: 1.0}, 16: {1: 1.0, 2: 1.0, 3: 0.999}}
    rec = recommend(per_seed, BASE)
    assert rec.best == 16 and rec.comparisons[8].outcome is Outcome.INCONCLUSIVE and rec.recommended is None


def test_one_seed_gives_a_provisional_pick_and_the_settling_command():
    per_seed = {4: {1: 1.5}, 8: {1: 1.05}, 16: {1: 1.0}, 32: {1: 1.01}}  # gain 2.0: δ = 0.1
    rec = recommend(per_seed, BASE, argv=["run", "--ranks", "4", "8", "16", "32", "--seeds", "1"])
    assert not rec.tested and rec.recommended is None and rec.provisional == 8 and rec.best == 16
    assert "one seed" in rec.reason and rec.settle_seeds == 3
    assert rec.settle_command == "lorarank run --ranks 4 8 16 32 --seeds 3"
    assert rec.comparisons[8].outcome is Outcome.UNTESTED and rec.comparisons[8].provisional_within_margin
    assert "measurably" not in rec.lead and f"`{rec.settle_command}`" in rec.lead


def test_settle_command_replaces_the_seeds():
    assert settle_command(["run", "--seeds=1", "--ranks", "8"], 3) == "lorarank run --ranks 8 --seeds 3"
    assert settle_command(None, 3) == "lorarank run <the same options> --seeds 3"


def test_accuracy_higher_is_better():
    per_seed = {4: {1: 0.60, 2: 0.62, 3: 0.61}, 8: {1: 0.895, 2: 0.90, 3: 0.905}, 16: {1: 0.90, 2: 0.91, 3: 0.90}}
    rec = recommend(per_seed, base=0.10, higher_is_better=True, metric="accuracy")
    assert rec.best == 16 and rec.improvement == pytest.approx(0.9033333 - 0.10)
    assert rec.recommended == 8 and rec.comparisons[4].outcome is Outcome.WORSE


def test_base_better_than_every_rank_and_single_rank():
    rec = recommend(LOSSES, base=0.9)
    assert rec.recommended is None and rec.margin is None and "no rank improved" in rec.reason
    single = recommend({8: {1: 1.0, 2: 1.1}}, BASE)
    assert single.recommended is None and single.best == 8 and "single rank (8)" in single.reason


def test_diverged_rank_cannot_be_best_or_equivalent():
    per_seed = {**LOSSES, 4: {1: math.nan, 2: 0.2, 3: 0.2}}  # "better" on two seeds, diverged on one
    rec = recommend(per_seed, BASE)
    assert rec.best == 32 and rec.comparisons[4].outcome is Outcome.UNTESTED and rec.recommended == 8
    with pytest.raises(ValueError, match="share"):
        recommend(per_seed, BASE, share=0.0)
