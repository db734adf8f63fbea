"""Final-answer extraction from free model text, shared by the runner, voting and graders.

Order of preference: the last \\boxed{...}, an explicit "Final answer:" / "answer is" line, the last
number, else the last non-empty line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

_FINAL = re.compile(r"(?:final answer|the answer is|answer)\s*[:：]?\s*(?:is\s+)?(.+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), with nested braces balanced."""
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    start = text.find("{", idx)
    if start < 0:
        return None
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i].strip()
    return None


def _clean(answer: str) -> str:
    answer = answer.strip().strip("*").strip()
    answer = re.sub(r"\s+", " ", answer)
    return answer.rstrip(".").strip()


def extract_answer(text: str) -> str:
    """The final answer stated in ``text`` ("" for empty text)."""
    if not text or not text.strip():
        return ""
    boxed = last_boxed(text)
    if boxed:
        return _clean(boxed)
    finals = [m.group(1) for m in _FINAL.finditer(text)]
    if finals:
        return _clean(finals[-1].splitlines()[0])
    numbers = _NUMBER.findall(text)
    if numbers:
        return numbers[-1].replace(",", "")
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return _clean(lines[-1]) if lines else ""


def json_objects(text: str) -> Iterator[tuple[dict[str, Any], int, int]]:
    """Every JSON object embedded in model text, in order, with its (start, end) offsets: models wrap
    structured replies in chatter and code fences, so the objects are found by decoding at each '{'."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            obj, end = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(obj, dict):
            yield obj, match.start(), end


def first_json_object(text: str, accept: Callable[[dict[str, Any]], bool] = lambda obj: True
                      ) -> tuple[dict[str, Any], int, int] | None:
    """The first embedded JSON object that ``accept`` takes, with its offsets (None when there is none)."""
    return next((found for found in json_objects(text) if accept(found[0])), None)
