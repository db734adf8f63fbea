"""Multiple-choice answers (GPQA, LogiQA 2.0): find the option letter a reply commits to.

Replies name their choice in many ways: "(B)", "Answer: B", "B.", "\\boxed{B}", "The answer is B",
or by repeating the option's text. Explicit statements win over letters mentioned in passing.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from atlas_router.data.graders.short_answer import normalize_answer
from atlas_router.core.answers import last_boxed

LETTERS = string.ascii_uppercase[:10]


def _letters(n_choices: int | None) -> str:
    return LETTERS[: n_choices] if n_choices else LETTERS


def _patterns(valid: str) -> list[re.Pattern[str]]:
    up, anycase = f"[{valid}]", f"[{valid}{valid.lower()}]"
    return [
        # "Answer: B", "answer is (B)", "Final answer: B.", "the correct option is B" (a capital letter, so
        # "the answer is a prime" is not read as option A)
        re.compile(rf"(?i:answer|correct option|correct choice)\s*(?i:is|:|=)?\s*[:：]?\s*(?i:option\s+)?"
                   rf"(?:\(({anycase})\)|\**({up})\**(?![\w']))"),
        # a line that is only the letter: "B", "(B)", "B.", "B)", "**B**"
        re.compile(rf"^\s*\**\(?({anycase})\)?[.:)]?\**\s*$", re.M),
        # a line that starts with the letter and its punctuation: "B. Paris", "(B) Paris"
        re.compile(rf"^\s*\**\(?({up})[.)]\s", re.M),
        # "**B**" or "(B)" anywhere
        re.compile(rf"\*\*\(?({up})\)?\*\*|\(({up})\)"),
    ]


def extract_choice(text: str, choices: Sequence[str] | None = None) -> str:
    """The option letter the reply commits to ("" if none); letters beyond the choices are ignored."""
    if not text:
        return ""
    n = len(choices) if choices else None
    valid = _letters(n)
    boxed = last_boxed(text)
    if boxed:
        m = re.fullmatch(rf"\s*(?:\\text\{{)?\(?([{valid}{valid.lower()}])\)?\}}?[.]?\s*", boxed)
        if m:
            return m.group(1).upper()
    for pattern in _patterns(valid):
        found = [next(g for g in groups if g) if isinstance(groups, tuple) else groups
                 for groups in pattern.findall(text)]
        if found:
            return found[-1].upper()
    if choices:
        said = normalize_answer(text.strip().splitlines()[-1]) if text.strip() else ""
        for i, option in enumerate(choices):
            if said and said == normalize_answer(str(option)):
                return LETTERS[i]
    return ""


def reference_letter(reference: object, choices: Sequence[str] | None = None) -> str:
    """The gold letter from a letter ("B", "(B)"), an index (1 -> "B") or the option text itself."""
    if isinstance(reference, bool):
        raise ValueError("a multiple-choice reference cannot be a boolean")
    if isinstance(reference, int):
        return LETTERS[reference]
    ref = str(reference).strip()
    m = re.fullmatch(r"\(?([A-Ja-j])\)?[.]?", ref)
    if m:
        return m.group(1).upper()
    if ref.isdigit():
        return LETTERS[int(ref)]
    if choices:
        for i, option in enumerate(choices):
            if normalize_answer(ref) == normalize_answer(str(option)):
                return LETTERS[i]
    return ref.upper()


def grade_choice(prediction: str, reference: object, choices: Sequence[str] | None = None) -> float:
    """1.0 when the reply's letter is the gold letter."""
    said = extract_choice(prediction or "", choices)
    return float(bool(said) and said == reference_letter(reference, choices))
