"""Every section of the README agrees with the comparison outcomes, on constructed sweeps whose
outcomes are known: the recommendation, Answer 1, Answer 2, the hypotheses and the price table."""

from __future__ import annotations

import pytest
from analysis_records import analyse

from lorarank.analysis.answers import item_test
from lorarank.analysis.model import Returns, Verdict
from lorarank.analysis.stats import Outcome
from lorarank.report import markdown
from lorarank.report.which_rank import LOSS, SHORT, recommendation_line


def readme(analysis) -> str:
    return markdown.render(analysis, [], "which_rank.png")


def line_of(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


def price_row(text: str, rank: int) -> list[str]:
    head = "| Rank | Trainable params |"
    table = text[text.index(head):].splitlines()
    return next(row.split(" | ") for row in table if row.startswith(f"| {rank} | "))


def hypothesis_row(text: str, rank: int) -> str:
    table = text[text.index("| Rank | Expectation |"):].splitlines()
    return next(row for row in table if row.startswith(f"| {rank} | "))


def check_coherent(analysis) -> None:
    """The README's sections are functions of the recommendation's comparisons (rank − best) and of
    the pair's comparison; nothing else decides."""
    pol = analysis.policies["constant"]
    rec, text = pol.recommendation, readme(analysis)
    assert text.index("![") < text.index("## Setup")  # the forest plot opens the answer
    for r in pol.ranks:  # the price table shows each rank's outcome against the best
        cell = price_row(text, r)[-1]
        c = rec.comparisons[r]
        assert cell.startswith("best" if r == rec.best else "untested" if c.outcome is Outcome.UNTESTED
                               else SHORT[c.outcome])
    answer1 = line_of(text, "1. ")
    if rec.recommended is not None and rec.recommended < max(pol.ranks):
        assert pol.returns.verdict is Returns.DIMINISH and f"returns diminish from rank {rec.recommended}." in answer1
    elif pol.returns.verdict is Returns.NONE_SHOWN:
        assert rec.recommended == rec.best == max(pol.ranks) and "No diminishing returns shown" in answer1
    else:
        assert "**Inconclusive.**" in answer1 or "**Untested with one seed.**" in answer1
    answer2 = line_of(text, "2. ")
    assert LOSS.outcome(pol.pair.loss) in answer2
    for h in pol.hypotheses:
        assert f"**{h.verdict.value}**" in hypothesis_row(text, h.rank)
        if h.rank in (16, 32):
            c = rec.comparisons[h.rank]
            shown = rec.tested and (h.rank == rec.best or rec.shown_equivalent(h.rank))
            expected = (Verdict.CONFIRMED if shown else Verdict.REFUTED if c.outcome is Outcome.WORSE
                        else Verdict.INCONCLUSIVE)
            assert h.verdict is expected
    assert f"**{pol.pair.low_rank_hypothesis.value}** on eval loss" in text


def test_small_but_clear_difference_inside_the_margin():
    """d = 0.04, 0.05, 0.06 between rank 8 and rank 64, δ = 0.05·(3.26 − 1.0) = 0.113: use rank 8;
    rank 8 is equivalent within δ and measurably worse by 0.05 (its 90% CI is 0.033 .. 0.067)."""
    analysis = analyse({8: [1.04, 1.05, 1.06], 16: [1.01, 1.0, 1.005], 32: [1.0, 1.01, 0.995], 64: [1.0, 1.0, 1.0]},
                       base=3.26)
    pol = analysis.policies["constant"]
    rec = pol.recommendation
    assert rec.margin == pytest.approx(0.113) and rec.recommended == 8
    c = rec.comparisons[8]
    assert c.outcome is Outcome.EQUIVALENT_AND_WORSE and (c.low, c.high) == pytest.approx((0.0331, 0.0669), abs=1e-4)
    assert recommendation_line(analysis).startswith("[lorarank] which rank: use rank 8")
    text = readme(analysis)
    assert "**Yes, within δ** on eval loss" in line_of(text, "2. ")
    assert "equivalent within δ, and measurably worse by 0.05 nats" in line_of(text, "2. ")
    assert "**Yes: returns diminish from rank 8.**" in line_of(text, "1. ")
    assert {h.rank: h.verdict for h in pol.hypotheses} == {8: Verdict.REFUTED, 16: Verdict.CONFIRMED,
                                                           32: Verdict.CONFIRMED, 64: Verdict.CONFIRMED}
    assert pol.pair.low_rank_hypothesis is Verdict.CONFIRMED
    check_coherent(analysis)


def test_noise_only_is_inconclusive_everywhere():
    analysis = analyse({8: [1.5, 0.9, 1.2], 16: [1.0, 1.4, 1.2], 32: [1.2, 1.0, 1.4], 64: [1.3, 1.1, 1.19]})
    pol = analysis.policies["constant"]
    rec = pol.recommendation
    assert all(rec.comparisons[r].outcome is Outcome.INCONCLUSIVE for r in (8, 16, 32))
    assert rec.recommended is None and rec.best == 64 and pol.returns.verdict is Returns.INCONCLUSIVE
    assert pol.pair.loss.outcome is Outcome.INCONCLUSIVE
    assert all(h.verdict is Verdict.INCONCLUSIVE for h in pol.hypotheses)
    assert pol.pair.low_rank_hypothesis is Verdict.INCONCLUSIVE
    text = readme(analysis)
    assert "**No recommendation on eval loss" in text and "**Undecided** on eval loss" in text
    assert "CONFIRMED" not in text and "REFUTED" not in text and "measurably" not in text
    check_coherent(analysis)


def test_every_smaller_rank_clearly_worse():
    analysis = analyse({8: [2.0, 2.02, 1.99], 16: [1.7, 1.71, 1.69], 32: [1.4, 1.42, 1.41], 64: [1.1, 1.1, 1.12]})
    pol = analysis.policies["constant"]
    rec = pol.recommendation
    assert rec.recommended == 64 and rec.stopped_at == 32 and rec.comparisons[32].outcome is Outcome.WORSE
    assert pol.returns.verdict is Returns.NONE_SHOWN
    assert {h.rank: h.verdict for h in pol.hypotheses} == {8: Verdict.CONFIRMED, 16: Verdict.REFUTED,
                                                           32: Verdict.REFUTED, 64: Verdict.REFUTED}
    text = readme(analysis)
    assert "**No** on eval loss" in line_of(text, "2. ") and recommendation_line(analysis).startswith(
        "[lorarank] which rank: use rank 64")
    check_coherent(analysis)


def test_fixed_sequence_stops_above_a_non_equivalent_middle_rank():
    """Rank 16's seeds scatter past δ, rank 8 is equivalent on its own: the pick stops at 32, and rank 8
    is neither recommended nor claimed as good as the best anywhere."""
    analysis = analyse({8: [1.01, 1.0, 0.995], 16: [1.3, 0.7, 1.0], 32: [1.0, 1.005, 0.998], 64: [1.0, 1.0, 0.999]},
                       base=3.0)
    pol = analysis.policies["constant"]
    rec = pol.recommendation
    assert rec.comparisons[8].outcome.equivalent and rec.comparisons[16].outcome is Outcome.INCONCLUSIVE
    assert rec.recommended == 32 and rec.stopped_at == 16
    text = readme(analysis)
    assert "not reached (the sequence stopped at rank 16)" in price_row(text, 8)[-1]
    assert "**Yes: returns diminish from rank 32.**" in line_of(text, "1. ")
    h8 = next(h for h in pol.hypotheses if h.rank == 8)
    assert h8.verdict is Verdict.INCONCLUSIVE and "stopped at rank 16 before reaching it" in h8.evidence
    check_coherent(analysis)


def test_one_seed_claims_nothing():
    analysis = analyse({8: [1.5], 16: [1.21], 32: [1.2], 64: [1.19]}, accuracy=0.5)
    pol = analysis.policies["constant"]
    assert not pol.recommendation.tested and pol.recommendation.provisional == 16
    assert all(c.outcome is Outcome.UNTESTED for r, c in pol.recommendation.comparisons.items() if r != 64)
    assert pol.returns.verdict is Returns.UNTESTED and pol.pair.loss.outcome is Outcome.UNTESTED
    text = readme(analysis)
    assert "measurably" not in text and "CONFIRMED" not in text and "REFUTED" not in text
    assert "provisional" in line_of(text, "On eval loss")
    # accuracy on one seed: the records hold no per-item correctness here, and the report says so
    assert "per-item correctness for 0 of 48 items" in line_of(text, "2. ")
    check_coherent(analysis)


def test_one_seed_accuracy_pairs_the_items_when_every_item_is_recorded():
    items = [{"reference": str(i), "correct": i < 6} for i in range(8)]  # the small rank: 6 of 8 right
    other = [{"reference": str(i), "correct": 1 <= i < 4} for i in range(8)]  # the large rank: 3 of 8
    first = {"overall": 6 / 8, "n": 8, "samples": items}
    test = item_test(first, {"overall": 3 / 8, "n": 8, "samples": other})
    # discordant: items 0, 4, 5 only the small rank gets right; none only the large one
    assert test.mcnemar.only_first == 3 and test.mcnemar.only_second == 0 and test.mcnemar.p == pytest.approx(0.25)
    partial = item_test({**first, "n": 48}, {"overall": 0.4, "n": 48, "samples": other})
    assert partial.mcnemar is None and partial.items_recorded == 8 and partial.unpaired.level == pytest.approx(0.9)


def test_no_base_model_gives_no_margin_and_no_equivalence():
    analysis = analyse({8: [1.5, 1.52, 1.48], 64: [1.2, 1.21, 1.19]}, base=None)
    pol = analysis.policies["constant"]
    assert pol.recommendation is None and pol.pair.loss.outcome is Outcome.WORSE and pol.pair.loss.margin is None
    assert all(h.verdict is Verdict.INCONCLUSIVE for h in pol.hypotheses)
    assert "no base model" in pol.hypotheses[0].evidence


def test_no_rank_improving_on_the_base_model_gives_no_margin():
    analysis = analyse({8: [1.5, 1.52, 1.48], 64: [1.2, 1.21, 1.19]}, base=1.0)
    pol = analysis.policies["constant"]
    assert pol.recommendation.recommended is None and "no rank improved" in pol.recommendation.reason
    assert pol.returns.verdict is Returns.INCONCLUSIVE
    text = readme(analysis)
    assert "**No recommendation: no rank improved on the base model" in text
    assert "**Inconclusive.** No equivalence can be tested: no rank improved" in line_of(text, "1. ")
