"""Numeric answers: pull a number out of free text and compare it within a relative tolerance.

Used for GSM8K (gold after ``####``), the calculator benchmark and any numeric short answer. Model
text states its answer in many ways ("#### 18", "\\boxed{18}", "The answer is $18.00.", "18%"), so
extraction tries the explicit markers first and falls back to the last number in the text.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from atlas_router.core.answers import last_boxed

DEFAULT_REL_TOL = 1e-6
DEFAULT_ABS_TOL = 1e-9

# 1,234.5  -12  .5  3/4  1.5e-3 (thousands separators only in groups of three)
_NUM = r"[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?"
NUMBER_RE = re.compile(rf"(?<![\w.])({_NUM})(?:\s*/\s*(\d+))?")
_FRAC_RE = re.compile(r"\\[dt]?frac\{\s*([-+]?[\d.,]+)\s*\}\{\s*([-+]?[\d.,]+)\s*\}")
_HASHES_RE = re.compile(r"####\s*(.+)")
_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)  # TAPO-style replies
_ANSWER_PHRASE_RE = re.compile(
    r"(?:final answer|the answer is|answer is|answer:|answer\s*=)\s*[:：]?\s*(.*)", re.IGNORECASE
)


def parse_number(text: str) -> float | None:
    """The first number in ``text`` as a float ("$1,234.50" -> 1234.5, "\\frac{3}{4}" -> 0.75), or None."""
    if not text:
        return None
    frac = _FRAC_RE.search(text)
    if frac:
        num, den = _to_float(frac.group(1)), _to_float(frac.group(2))
        if num is not None and den:
            return num / den
    for m in NUMBER_RE.finditer(text):
        value = _match_value(m)
        if value is not None:
            return value
    return None


def _to_float(token: str) -> float | None:
    token = token.replace(",", "").replace("−", "-").strip()
    if not token or token in "+-":
        return None
    try:
        return float(token)
    except ValueError:
        return None


def _match_value(m: re.Match[str]) -> float | None:
    head = m.group(1)
    if not any(ch.isdigit() for ch in head):
        return None
    value = _to_float(head)
    if value is None:
        return None
    if m.group(2):
        den = int(m.group(2))
        if den == 0:
            return None
        try:
            return float(Fraction(head.replace(",", "").replace("−", "-")) / den)
        except (ValueError, ZeroDivisionError):
            return value / den
    return value


def last_number(text: str) -> float | None:
    """The last number in ``text``, or None."""
    value = None
    for m in NUMBER_RE.finditer(text or ""):
        v = _match_value(m)
        if v is not None:
            value = v
    return value


def _numbers(text: str) -> list[float]:
    frac = _FRAC_RE.search(text)
    if frac:
        value = parse_number(frac.group(0))
        return [] if value is None else [value]
    return [v for v in (_match_value(m) for m in NUMBER_RE.finditer(text)) if v is not None]


def extract_number_text(text: str) -> tuple[str, bool]:
    """The span that states the final answer and whether it is an explicit answer slot.

    Marker order: the last ``####``, ``<answer>...</answer>``, ``\\boxed{}``, the last "answer is"/"Final answer:"
    phrase that holds a number; otherwise the whole text (not a slot).
    """
    if not text:
        return "", False
    hashes = _HASHES_RE.findall(text)
    if hashes:
        return hashes[-1].strip(), True
    tags = _TAG_RE.findall(text)
    if tags:
        return tags[-1].strip(), True
    boxed = last_boxed(text)
    if boxed:
        return boxed, True
    phrases = [m.group(1) for m in _ANSWER_PHRASE_RE.finditer(text) if parse_number(m.group(1)) is not None]
    if phrases:
        return phrases[-1].strip().splitlines()[0], False
    return text, False


def extract_number(text: str) -> float | None:
    """The final numeric answer of a model reply, or None when it states none.

    An explicit answer slot (``#### ...``, ``<answer>...</answer>`` or ``\\boxed{...}``) that names several different numbers
    ("#### 7 packs and 2 extra", "#### 50% or 1/2") is a hedge and yields None, so it is graded wrong.
    An "answer is ..." phrase gives its first number; with no marker, the last number of the text counts.
    """
    span, slot = extract_number_text(text)
    if not span:
        return None
    if slot:
        values = _numbers(span)
        if not values:
            return last_number(text)
        first = values[0]
        return first if all(numbers_equal(v, first) for v in values[1:]) else None
    if span is text:
        return last_number(text)
    return parse_number(span)


def numbers_equal(a: float | None, b: float | None, rel_tol: float = DEFAULT_REL_TOL,
                  abs_tol: float = DEFAULT_ABS_TOL) -> bool:
    """True when both are numbers within the tolerance (NaN and None never match)."""
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return False
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)


def gsm8k_gold(reference: str) -> float | None:
    """GSM8K gold: the number after ``####`` (the whole reference when it is a bare number)."""
    tail = reference.split("####")[-1]
    return parse_number(tail)


def grade_number(prediction: str, reference: object, rel_tol: float = DEFAULT_REL_TOL) -> float:
    """1.0 when the reply's final number equals the reference number within ``rel_tol``."""
    gold = reference if isinstance(reference, (int, float)) else gsm8k_gold(str(reference))
    return float(numbers_equal(extract_number(prediction), None if gold is None else float(gold), rel_tol))
