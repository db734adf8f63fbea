"""The record of one pair execution: what came out and what it cost."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class PairRecord:
    """One (model, tool) run on one question. ``error`` is None on success, else "Kind: cause"."""

    model: str
    tool: str
    question: str
    answer: str = ""
    response: str = ""
    transcript: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    latency_s: float = 0.0
    calls: int = 0
    error: str | None = None
    finish_reason: str | None = None  # of the final model call: "length" when max_tokens cut it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
