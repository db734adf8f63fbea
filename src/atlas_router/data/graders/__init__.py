"""Graders: turn a model's reply to a benchmark example into a score in [0, 1].

Each benchmark names its grader (``Benchmark.grader``) and options; ``Benchmark.grade(text, example)``
(or ``data.benchmarks.grade(name, text, example)``) looks both up. Every grader also has an ``extract`` that gives the short answer stored in records.
Graders that need no gold answer (LLM judge, reward model, reference pair) live in ``judge``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from atlas_router.data.graders.choice import extract_choice, grade_choice
from atlas_router.data.graders.code import extract_code, grade_code
from atlas_router.data.graders.judge import GRADER_KINDS as LABEL_FREE_GRADERS, build_label_free_grader
from atlas_router.data.graders.math import grade_math
from atlas_router.data.graders.multimodal import count_text, extract_geometry, grade_count, grade_geometry, grade_relaxed
from atlas_router.data.graders.numeric import extract_number, grade_number
from atlas_router.data.graders.short_answer import exact_match, grade_short_answer, token_f1
from atlas_router.errors import AtlasError
from atlas_router.core.answers import extract_answer



class Example(Protocol):
    """What a grader reads of a benchmark example (``data.benchmarks.Example`` has it)."""

    reference: Any
    choices: Any


def _number_text(text: str, _example: Any) -> str:
    value = extract_number(text)
    if value is None:
        return ""
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


@dataclass(frozen=True)
class Grader:
    """How one kind of answer is extracted and scored."""

    name: str
    extract: Callable[[str, "Example"], str]
    score: Callable[..., float]  # (prediction, example, **options) -> [0, 1]


GRADERS: dict[str, Grader] = {
    g.name: g
    for g in (
        Grader("math", lambda t, e: extract_answer(t), lambda p, e, **o: grade_math(p, e.reference, **o)),
        Grader("gsm8k", _number_text, lambda p, e, **o: grade_number(p, e.reference, **o)),
        Grader("number", _number_text, lambda p, e, **o: grade_number(p, e.reference, **o)),
        Grader("code", lambda t, e: extract_code(t), lambda p, e, **o: grade_code(p, e.reference, **o)),
        Grader("short_answer", lambda t, e: extract_answer(t),
               lambda p, e, **o: grade_short_answer(p, e.reference, **o)),
        Grader("choice", lambda t, e: extract_choice(t, e.choices),
               lambda p, e, **o: grade_choice(p, e.reference, e.choices)),
        Grader("relaxed", lambda t, e: extract_answer(t), lambda p, e, **o: grade_relaxed(p, e.reference, **o)),
        Grader("count", lambda t, e: count_text(t), lambda p, e, **o: grade_count(p, e.reference)),
        Grader("geometry", lambda t, e: extract_geometry(t, e.choices),
               lambda p, e, **o: grade_geometry(p, e.reference, e.choices)),
    )
}


def get_grader(name: str) -> Grader:
    try:
        return GRADERS[name]
    except KeyError:
        raise AtlasError(f"unknown grader '{name}'; known: {', '.join(sorted(GRADERS))}") from None


__all__ = ["GRADERS", "LABEL_FREE_GRADERS", "Grader", "build_label_free_grader", "exact_match", "get_grader",
           "token_f1"]
