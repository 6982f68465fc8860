"""`instruct-suite`: an embedded, deterministic instruction dataset whose answers can be checked.

Alpaca cannot be downloaded offline, and a loss alone does not say whether a model learned the task.
Each record here has exactly one correct answer, so after training we greedy-decode held-out prompts
and score exact match per task family. Families run from easy to hard:

| family         | level  | example instruction                                  | answer                  |
|----------------|--------|------------------------------------------------------|-------------------------|
| uppercase      | easy   | Write in upper case: red fox runs                    | RED FOX RUNS            |
| last_word      | easy   | Reply with only the last word: cat sun map bell      | bell                    |
| reverse_words  | medium | Reverse the word order: red blue green               | green blue red          |
| sort_numbers   | medium | Sort ascending, space separated: 42 7 19 3           | 3 7 19 42               |
| date_format    | medium | Rewrite the date 2023-07-04 as DD/MM/YYYY.           | 04/07/2023              |
| number_words   | medium | Write 347 in words.                                  | three hundred forty-seven |
| caesar         | hard   | Shift every letter forward by one: cat dog           | dbu eph                 |
| pig_latin      | hard   | Translate to Pig Latin: pig smile eat                | igpay ilesmay eatway    |

Easy families test output format; medium ones a known operation; hard ones a symbol mapping the base
model has never been taught, which is where adapter capacity matters (LoRA Without Regret, 2025:
capacity-limited regime). Families are interleaved so every slice of the data has the same mix.
"""

from __future__ import annotations

import random
import re
from typing import Callable

NAME = "instruct-suite"

WORDS = (
    "red blue green cat dog sun map bell fox hat cup pen box car tree lake road fish bird star "
    "moon rain snow wind fire milk rice salt gold ship frog duck lamp door wall desk book song "
    "game ring coin leaf rock sand hill farm king cake bread apple smile plant train chair table "
    "stone river cloud light night black white brown happy quick small large sweet "
    "eat ask egg ice oak owl arm ink end old open use"
).split()


def _words(rng: random.Random, n: int) -> list[str]:
    return rng.sample(WORDS, n)


# ---------------------------------------------------------------------------------------------- families
# each returns (instruction, output)


def _uppercase(rng):
    w = _words(rng, 3)
    return f"Write in upper case: {' '.join(w)}", " ".join(w).upper()


def _last_word(rng):
    w = _words(rng, 4)
    return f"Reply with only the last word: {' '.join(w)}", w[-1]


def _reverse_words(rng):
    w = _words(rng, 3)
    return f"Reverse the word order: {' '.join(w)}", " ".join(reversed(w))


def _sort_numbers(rng):
    nums = rng.sample(range(1, 100), 4)
    return f"Sort ascending, space separated: {' '.join(map(str, nums))}", " ".join(map(str, sorted(nums)))


def _date_format(rng):
    y, m, d = rng.randint(1950, 2030), rng.randint(1, 12), rng.randint(1, 28)
    return f"Rewrite the date {y:04d}-{m:02d}-{d:02d} as DD/MM/YYYY.", f"{d:02d}/{m:02d}/{y:04d}"


def _number_words(rng):
    n = rng.randint(1, 999)
    return f"Write {n} in words.", number_to_words(n)


def _caesar(rng):
    w = _words(rng, 2)
    return f"Shift every letter forward by one: {' '.join(w)}", " ".join(caesar(x, 1) for x in w)


def _pig_latin(rng):
    w = _words(rng, 3)
    return f"Translate to Pig Latin: {' '.join(w)}", " ".join(pig_latin(x) for x in w)


FAMILIES: dict[str, tuple[str, Callable[[random.Random], tuple[str, str]]]] = {
    "uppercase": ("easy", _uppercase),
    "last_word": ("easy", _last_word),
    "reverse_words": ("medium", _reverse_words),
    "sort_numbers": ("medium", _sort_numbers),
    "date_format": ("medium", _date_format),
    "number_words": ("medium", _number_words),
    "caesar": ("hard", _caesar),
    "pig_latin": ("hard", _pig_latin),
}


def generate(n: int, seed: int = 42, families: list[str] | None = None) -> list[dict[str, str]]:
    """`n` unique records, families interleaved round-robin; the same (n, seed) gives the same list.

    Each family draws from its own RNG stream (seeded by seed and family name) so adding a family
    does not change the records of the others."""
    names = list(families or FAMILIES)
    rngs = {f: random.Random(f"{seed}:{f}") for f in names}
    seen: set[str] = set()
    out: list[dict[str, str]] = []
    i = 0
    while len(out) < n:
        fam = names[i % len(names)]
        i += 1
        for _ in range(1000):  # redraw on a duplicate instruction; the spaces are large
            instruction, output = FAMILIES[fam][1](rngs[fam])
            if instruction not in seen:
                break
        else:
            raise ValueError(f"family {fam} cannot produce more unique records")
        seen.add(instruction)
        out.append({"instruction": instruction, "input": "", "output": output, "family": fam})
    return out


# ---------------------------------------------------------------------------------------------- answers


def normalize(text: str) -> str:
    """Strip and collapse whitespace; case and punctuation stay significant."""
    return re.sub(r"\s+", " ", text).strip()


def is_correct(prediction: str, reference: str) -> bool:
    return normalize(prediction) == normalize(reference)


_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen " \
        "fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_to_words(n: int) -> str:
    """0..999 in American English, hyphenated tens: 347 -> 'three hundred forty-seven'."""
    if not 0 <= n <= 999:
        raise ValueError(n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")
    hundreds, rest = divmod(n, 100)
    return f"{_ONES[hundreds]} hundred" + (f" {number_to_words(rest)}" if rest else "")


def caesar(word: str, shift: int) -> str:
    return "".join(chr((ord(c) - 97 + shift) % 26 + 97) if "a" <= c <= "z" else c for c in word)


def pig_latin(word: str) -> str:
    """Vowel-initial words add 'way'; otherwise the leading consonant cluster moves to the end + 'ay'."""
    m = re.match(r"^([^aeiou]+)(.*)$", word)
    if m is None:
        return word + "way"
    cluster, rest = m.groups()
    return (rest + cluster + "ay") if rest else (word + "ay")
