"""Checks on questions before any model is called: empty, oversized or undecodable input is refused."""

from __future__ import annotations

from atlas_router.errors import AtlasError

MAX_QUESTION_CHARS = 100_000


def validate_question(text: str, max_chars: int = MAX_QUESTION_CHARS) -> str:
    """The question, stripped; an AtlasError saying what is wrong otherwise."""
    if not isinstance(text, str):
        raise AtlasError(f"question must be text, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise AtlasError("question is not valid UTF-8 text") from None
    stripped = text.strip()
    if not stripped:
        raise AtlasError("question is empty")
    if len(stripped) > max_chars:
        raise AtlasError(f"question is {len(stripped):,} characters; the limit is {max_chars:,}")
    return stripped


def read_question(arg: str) -> str:
    """The question from a CLI argument; ``-`` reads standard input (long questions exceed argv limits)."""
    if arg != "-":
        return arg
    import sys

    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise AtlasError(f"question is not valid UTF-8 text (byte {err.start})") from None
