"""Final-answer extraction from free model text, shared by the runner, voting and graders.

Order of preference: the last \\boxed{...}, an explicit "Final answer:" / "answer is" line, the last
number, else the last non-empty line.
"""

from __future__ import annotations

import re

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
