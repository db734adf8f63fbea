"""One check shared by the tools: a misspelt setting is an error, not a silently ignored key."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def reject_unknown(settings: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Raise ValueError (the registry turns it into a ConfigError naming the tool) for unknown keys."""
    allowed = set(allowed)
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; this tool takes: {', '.join(sorted(allowed))}")
