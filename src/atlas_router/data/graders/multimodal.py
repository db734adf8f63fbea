"""Graders of the image benchmarks: ChartQA relaxed accuracy, exact counts, geometry choices/values.

- ``relaxed`` (ChartQA, TableVQA): a numeric answer is right within 5% of the gold number (the ChartQA
  paper's relaxed accuracy; "45%" and "45" are the same number); any other answer must match exactly
  after normalisation (case, punctuation, articles). Several gold answers: the best counts.
- ``count`` (TallyQA, CountBench): the stated count must equal the gold integer; number words up to
  twenty ("five") are read as numbers.
- ``geometry`` (Geometry3K): with options, the committed letter must be the gold letter, or the stated
  value must equal the gold option's value; without options, the value must be mathematically equal.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from atlas_router.data.graders.choice import LETTERS, extract_choice, reference_letter
from atlas_router.data.graders.numeric import extract_number, parse_number
from atlas_router.data.graders.short_answer import normalize_answer, references_of
from atlas_router.core.answers import extract_answer

RELAXED_TOLERANCE = 0.05
_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_WORD_RE = re.compile(rf"\b({'|'.join(_WORDS)})\b", re.IGNORECASE)


def _number(text: str) -> float | None:
    """A number stated as the whole answer ("1,234", "45%", "$3.5", "-2"), else None."""
    t = text.strip().replace("−", "-")
    if not re.fullmatch(r"[-+]?[$€£]?\s*[-+]?[\d,]*\.?\d+(?:[eE][-+]?\d+)?\s*%?", t):
        return None
    return parse_number(t.replace("$", "").replace("€", "").replace("£", "").replace("%", ""))


def relaxed_match(prediction: str, gold: str, tolerance: float = RELAXED_TOLERANCE) -> bool:
    """ChartQA relaxed accuracy for one gold answer."""
    p, g = _number(prediction), _number(gold)
    if g is not None:
        if p is None:
            return False
        if g == 0:
            return p == 0
        return abs(p - g) / abs(g) <= tolerance
    return normalize_answer(prediction) == normalize_answer(gold) and normalize_answer(gold) != ""


def grade_relaxed(prediction: str, reference: object, tolerance: float = RELAXED_TOLERANCE) -> float:
    """1.0 when the reply's final answer matches any gold answer under relaxed accuracy."""
    said = extract_answer(prediction or "")
    return float(any(relaxed_match(said, str(g), tolerance) for g in references_of(reference)))


def extract_count(text: str) -> int | None:
    """The count a reply states: its final number, or a number word ("There are five.")."""
    value = extract_number(text or "")
    if value is not None:
        return int(value) if float(value).is_integer() else None
    said = extract_answer(text or "")
    words = _WORD_RE.findall(said) or _WORD_RE.findall(text or "")
    return _WORDS[words[-1].lower()] if words else None


def grade_count(prediction: str, reference: object) -> float:
    """1.0 when the stated count equals the gold integer exactly."""
    gold = reference if isinstance(reference, int) else parse_number(str(reference))
    said = extract_count(prediction)
    return float(said is not None and gold is not None and float(gold).is_integer() and said == int(gold))


def _values_equal(said: str, gold: str) -> bool:
    a, b = parse_number(said), parse_number(gold)
    if a is not None and b is not None and _number(said) is not None and _number(gold) is not None:
        return math.isclose(a, b, rel_tol=1e-2, abs_tol=1e-6)
    from atlas_router.data.graders.math import grade_math

    return bool(said) and grade_math(f"\\boxed{{{said}}}", gold) == 1.0


def grade_geometry(prediction: str, reference: object, choices: Sequence[str] | None = None) -> float:
    """Options: the gold letter, or the gold option's value stated; no options: the value itself."""
    if choices:
        gold_letter = reference_letter(reference, choices)
        letter = extract_choice(prediction or "", choices)
        if letter:
            return float(letter == gold_letter)
        if gold_letter in LETTERS[: len(choices)]:
            gold_value = str(choices[LETTERS.index(gold_letter)])
            return float(_values_equal(extract_answer(prediction or ""), gold_value))
        return 0.0
    return float(_values_equal(extract_answer(prediction or ""), str(reference)))


def extract_geometry(text: str, choices: Sequence[str] | None = None) -> str:
    return (extract_choice(text, choices) if choices else "") or extract_answer(text)


def count_text(text: str) -> str:
    value = extract_count(text)
    return "" if value is None else str(value)
