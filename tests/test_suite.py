"""The embedded instruct-suite: deterministic, well-formed, verifiable."""

from __future__ import annotations

import pytest

from lorarank.data import suite


def test_deterministic_per_seed():
    assert suite.generate(64, seed=1) == suite.generate(64, seed=1)
    assert suite.generate(64, seed=1) != suite.generate(64, seed=2)
    # a longer run extends a shorter one: the first records do not depend on n
    assert suite.generate(100, seed=1)[:64] == suite.generate(64, seed=1)


def test_records_are_well_formed_and_unique():
    recs = suite.generate(480, seed=42)
    assert len({r["instruction"] for r in recs}) == 480
    assert {r["family"] for r in recs} == set(suite.FAMILIES)
    counts = {f: sum(r["family"] == f for r in recs) for f in suite.FAMILIES}
    assert set(counts.values()) == {60}  # interleaved: every family equally often
    for r in recs:
        assert set(r) == {"instruction", "input", "output", "family"}
        assert r["instruction"].strip() and r["output"].strip() and r["input"] == ""


def test_references_follow_their_rules():
    for r in suite.generate(160, seed=7):
        words = r["instruction"].split(": ", 1)[-1].split()
        fam, out = r["family"], r["output"]
        if fam == "uppercase":
            assert out == " ".join(words).upper()
        elif fam == "reverse_words":
            assert out.split() == words[::-1]
        elif fam == "sort_numbers":
            assert out.split() == [str(n) for n in sorted(map(int, words))]
        elif fam == "last_word":
            assert out == words[-1]
        elif fam == "caesar":
            assert all(len(a) == len(b) for a, b in zip(out.split(), words))


@pytest.mark.parametrize("n, words", [(0, "zero"), (7, "seven"), (13, "thirteen"), (40, "forty"),
                                      (47, "forty-seven"), (100, "one hundred"), (347, "three hundred forty-seven"),
                                      (910, "nine hundred ten"), (999, "nine hundred ninety-nine")])
def test_number_to_words(n, words):
    assert suite.number_to_words(n) == words


def test_pig_latin_and_caesar():
    assert [suite.pig_latin(w) for w in ("pig", "smile", "eat", "string", "owl")] == \
        ["igpay", "ilesmay", "eatway", "ingstray", "owlway"]
    assert suite.caesar("zebra", 1) == "afcsb"
    assert suite.caesar(suite.caesar("hello", 3), -3) == "hello"


def test_scorer_accepts_references_and_rejects_perturbations():
    for r in suite.generate(80, seed=3):
        ref = r["output"]
        assert suite.is_correct(ref, ref)
        assert suite.is_correct(f"  {ref}\n", ref)  # surrounding whitespace is not an error
        assert not suite.is_correct(ref + " extra", ref)
        assert not suite.is_correct(ref[:-1], ref)
        assert not suite.is_correct(ref.swapcase(), ref) or ref.swapcase() == ref
        assert not suite.is_correct("", ref)
