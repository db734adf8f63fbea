"""What the gateway's answer to one request holds: the text (finished, or still streaming), the pair and
router that gave it, cost and tokens, every attempt made, and how it shows in the response."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from atlas_router.execution.record import PairRecord
from atlas_router.models.base import ChatModel, Completion, Delta
from atlas_router.serve.registry import format_pair
from atlas_router.serve.request import Overrides


@dataclass
class Attempt:
    """One pair tried (or skipped) for a request."""

    model: str
    tool: str
    outcome: str  # ok | failed | timeout | skipped
    error: str | None = None
    latency_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Its fields (all flat values: dataclasses.asdict's deep copy cost more than the rest of the
        response body on the gateway's hot path)."""
        return dict(vars(self))


@dataclass
class Answer:
    """What the gateway sends back: the final text, the pair that produced it, and how it was chosen."""

    requested: str
    text: str
    model: str
    tool: str | None
    router: str | None
    input_tokens: int
    output_tokens: int
    cost: float
    latency_s: float
    finish_reason: str | None = "stop"
    utility: float | None = None
    explanation: dict[str, Any] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    estimated_cost: float | None = None
    overrides: Overrides = Overrides()
    alpha_applied: bool | None = None
    tool_calls: list[dict[str, Any]] | None = None
    logprobs: dict[str, Any] | None = None
    alternatives: list[Completion] = field(default_factory=list)
    live: "LiveText | None" = None  # the rest of a streamed reply, still being generated
    question: str = ""  # what the router saw: the last user message, plus its images' descriptions
    # the answering pair's run, made when first asked for (atlas ask shows it; the gateway never asks, so its
    # requests do not pay for it); None for a live reply, a policy or a passthrough
    pair_record: Callable[[], PairRecord] | None = None

    def take(self, c: Completion, cost: float) -> None:
        """Adopt a finished completion's text, tokens, finish reason and extras."""
        self.text, self.input_tokens, self.output_tokens, self.cost = c.text, c.input_tokens, c.output_tokens, cost
        self.finish_reason = c.finish_reason or "stop"
        self.tool_calls, self.logprobs, self.alternatives = c.tool_calls, c.logprobs, list(c.alternatives)

    def adopt(self, model: ChatModel, c: Completion | None, first: Delta | None, rest: AsyncIterator[Delta] | None) -> None:
        """A finished completion (priced by ``model``), or a live reply: its first delta and the rest."""
        if c is not None:
            self.take(c, model.cost(c.input_tokens, c.output_tokens))
        else:
            assert first is not None and rest is not None
            self.text, self.live = first.text, LiveText(model, rest)

    async def pieces(self, piece_chars: int) -> AsyncIterator[str]:
        """The reply's text in order: as generated for a live reply (which then fills in tokens and cost),
        else the finished text cut into pieces."""
        if self.live is None:
            for i in range(0, len(self.text), piece_chars):
                yield self.text[i:i + piece_chars]
            return
        live, self.live = self.live, None
        if self.text:
            yield self.text
        async for delta in live.rest:
            if delta.text:
                yield delta.text
            if delta.completion is not None:
                self.take(delta.completion, live.model.cost(delta.completion.input_tokens, delta.completion.output_tokens))

    def atlas_field(self) -> dict[str, Any]:
        """The ``atlas`` object of the response body: pair, cluster, cost and the attempts made."""
        out: dict[str, Any] = {
            "router": self.router,
            "model": self.model,
            "tool": self.tool,
            "pair": format_pair((self.model, self.tool)) if self.tool else None,
            "cost": self.cost,
            "latency_s": round(self.latency_s, 4),
            "attempts": [a.as_dict() for a in self.attempts],
            "fallbacks": sum(1 for a in self.attempts if a.outcome != "ok"),
        }
        if self.router is not None:
            out.update(utility=self.utility, cluster=self.explanation.get("cluster"), explanation=self.explanation,
                       estimated_cost=self.estimated_cost, alpha=self.overrides.alpha, alpha_applied=self.alpha_applied,
                       max_cost=self.overrides.max_cost)
            if self.overrides.tolerance is not None:
                out["tolerance"] = self.overrides.tolerance
        return out

    def headers(self) -> dict[str, str]:
        h = {"x-atlas-model": self.model, "x-atlas-attempts": str(len(self.attempts))}
        if self.live is None:  # a live reply's cost is known only at its end (the final chunk's atlas object)
            h["x-atlas-cost"] = f"{self.cost:.10g}"
        if self.tool:
            h["x-atlas-tool"] = self.tool
            h["x-atlas-pair"] = format_pair((self.model, self.tool))
        if self.router:
            h["x-atlas-router"] = self.router
        cluster = self.explanation.get("cluster")
        if cluster is not None:
            h["x-atlas-cluster"] = str(cluster)
        return h


@dataclass
class LiveText:
    """A reply still streaming from ``model``: the deltas after the first."""

    model: ChatModel
    rest: AsyncIterator[Delta]


async def open_first(stream: AsyncIterator[Delta]
                     ) -> tuple[Completion | None, Delta | None, AsyncIterator[Delta] | None]:
    """Wait for a stream's first delta, so that a failing model or pair fails here (and can be replaced)
    rather than after the response has started; the stream is closed if that fails. Returns (completion, None, None) when
    it is already the whole reply, else (None, first delta, the rest)."""
    try:
        first = await anext(stream)
    except BaseException:
        await stream.aclose()
        raise
    if first.completion is not None:
        await stream.aclose()
        return first.completion, None, None
    return None, first, stream
