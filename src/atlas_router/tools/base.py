"""The tool interface: every tool of the pool takes a text input and returns a ToolResult.

The pair runner (``atlas_router.execution``) drives a model with a tool through three hooks that each
tool defines: ``usage`` (how the model should call it), ``extract_call`` (find a call in model text)
and ``run`` (execute it). Tools never import model backends; a tool that samples a model (prm) gets
the model through ``ToolContext``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from atlas_router.config import ToolSpec
    from atlas_router.models.base import ChatModel


@dataclass
class ToolResult:
    """What one tool call gave: ``ok`` and ``output`` on success, ``error`` (one line) on failure."""

    ok: bool
    output: str
    error: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    latency_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ToolContext:
    """What a tool may need from the pair it serves: the question and the pair's model."""

    question: str = ""
    model: "ChatModel | None" = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    images: list[Any] = field(default_factory=list)  # the question's ImageInputs (multimodal tools read them)


class Tool(ABC):
    """A tool of the pool. ``mode`` tells the runner how a pair uses it:

    - ``direct``: the model answers alone (the "none" tool);
    - ``loop``: the model writes calls that the runner executes and feeds back, a bounded number of times;
    - ``best_of_n``: the tool samples the pair's model several times and picks one answer (prm).
    """

    kind: ClassVar[str]
    mode: ClassVar[Literal["direct", "loop", "best_of_n"]] = "loop"
    sample_input: ClassVar[str] = ""
    # text (lower case) with which a call can begin in a model's turn: a streamed turn is shown up to the
    # first of them and held back from there until the turn is complete (no openers: held back whole)
    call_openers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: "ToolSpec") -> None:
        self.spec = spec
        self.name = spec.name
        settings = dict(spec.settings)
        # ``prefetch: true`` runs the tool on the question before the model's first turn (retrieve-then-read),
        # for models too small to write tool calls themselves.
        self.prefetch = bool(settings.pop("prefetch", False))
        self.settings = settings

    def usage(self) -> str:
        """Instructions added to the system prompt telling the model how to call this tool."""
        return ""

    def shown_while_writing(self, text: str) -> int:
        """How much of a turn still being written can be shown: everything before the first place a call
        could begin (a whole opener, or the start of one at the end of the text)."""
        if not self.call_openers:
            return 0
        low, cut = text.lower(), len(text)
        for opener in self.call_openers:
            at = low.find(opener)
            if at >= 0:
                cut = min(cut, at)
            for k in range(min(len(opener) - 1, len(low)), 0, -1):
                if low.endswith(opener[:k]):
                    cut = min(cut, len(low) - k)
                    break
        return cut

    def extract_call(self, text: str) -> str | None:
        """The tool input found in a model's reply, or None when the reply calls no tool."""
        return None

    def demonstration(self) -> list[dict[str, str]]:
        """A short worked exchange shown before the question: small models copy examples, not instructions."""
        return []

    def worked_example(self, question: str, call: str, output: str, answer: str) -> list[dict[str, str]]:
        """The messages of one demonstrated call: question, call, the tool's output, final answer."""
        return [
            {"role": "user", "content": question},
            {"role": "assistant", "content": call},
            {"role": "user", "content": self.format_observation(ToolResult(ok=True, output=output))},
            {"role": "assistant", "content": f"Final answer: {answer}"},
        ]

    @abstractmethod
    async def _run(self, tool_input: str, context: ToolContext) -> ToolResult:
        """Execute one call; may raise, ``run`` turns exceptions into failed results."""

    async def run(self, tool_input: str, context: ToolContext | None = None) -> ToolResult:
        """Execute one call and never raise: a crash becomes ``ok=False`` with its cause."""
        start = time.perf_counter()
        try:
            result = await self._run(tool_input, context or ToolContext())
        except Exception as err:  # a tool crash must not lose the record
            result = ToolResult(ok=False, output="", error=f"{type(err).__name__}: {err}")
        result.latency_s = time.perf_counter() - start
        return result

    def format_observation(self, result: ToolResult) -> str:
        """How a result is shown back to the model."""
        if result.ok:
            return f"[{self.name} output]\n{result.output}"
        return f"[{self.name} error]\n{result.error}\n{result.output}".rstrip()
