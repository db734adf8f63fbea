"""The model interface: one async ``chat`` call returning text and token usage, and ``stream`` for the
same reply piece by piece.

Backends (OpenAI-compatible HTTP, in-process GGUF) implement ``_chat`` (and ``_stream`` when they can
produce text incrementally); the base class adds the disk cache and cost accounting, so every backend
counts cost the same way. Request features beyond plain sampling (tools, response_format, n, logprobs,
penalties) are served only by backends that list them in ``features``; callers ask ``unsupported``
first and refuse the rest, so nothing is silently ignored.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from atlas_router.config import ModelSpec

Message = dict[str, Any]


@dataclass
class Completion:
    """One model reply with the tokens it cost; ``cached`` replies cost nothing on rerun."""

    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str | None = None
    cached: bool = False
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI's shape, as the backend returned them
    logprobs: dict[str, Any] | None = None  # OpenAI's choice.logprobs object
    alternatives: list["Completion"] = field(default_factory=list)  # choices 2..n when n > 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Delta:
    """A piece of a streamed reply; the last one carries the whole ``completion`` (its text may be empty)."""

    text: str
    completion: Completion | None = None


@dataclass(frozen=True)
class SamplingParams:
    """Per-call sampling; unset fields take the model's configured defaults."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    n: int = 1
    logprobs: bool = False
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None  # OpenAI's shape: {"type": "json_object" | "json_schema", ...}
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None

    def features(self) -> list[str]:
        """The request parameters beyond plain sampling that these params use (named as in the API)."""
        used = {
            "tools": bool(self.tools),
            "response_format": bool(self.response_format) and self.response_format.get("type") != "text",
            "n": self.n > 1,
            "logprobs": self.logprobs,
            "presence_penalty": bool(self.presence_penalty),
            "frequency_penalty": bool(self.frequency_penalty),
        }
        return [name for name, on in used.items() if on]


class CompletionCache(Protocol):
    """What a model needs of a response cache (``models.cache.ResponseCache`` is the one we ship)."""

    def key(self, spec: ModelSpec, params: "SamplingParams", messages: list[Message]) -> str: ...

    def get(self, key: str) -> "Completion | None": ...

    def put(self, key: str, completion: "Completion") -> None: ...


class ChatModel(ABC):
    """A pool model. ``chat`` is safe to call concurrently; backends bound their own concurrency."""

    features: frozenset[str] = frozenset()  # which of SamplingParams.features() this backend serves

    def __init__(self, spec: ModelSpec, cache: "CompletionCache | None" = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.cache = cache

    def resolve(self, params: SamplingParams | None) -> SamplingParams:
        """Fill unset sampling fields from the model's defaults."""
        d = self.spec.sampling
        p = params or SamplingParams()
        filled = (d.temperature if p.temperature is None else p.temperature, d.top_p if p.top_p is None else p.top_p,
                  d.max_tokens if p.max_tokens is None else p.max_tokens, d.seed if p.seed is None else p.seed)
        if filled == (p.temperature, p.top_p, p.max_tokens, p.seed):
            return p  # nothing to fill: no copy (this runs on every model call)
        return replace(p, temperature=filled[0], top_p=filled[1], max_tokens=filled[2], seed=filled[3])

    def unsupported(self, params: SamplingParams | None) -> list[str]:
        """The request parameters in ``params`` this model cannot serve (empty when it can serve them all)."""
        return [f for f in (params.features() if params else []) if f not in self.features]

    def _cache_key(self, resolved: SamplingParams, messages: list[Message]) -> str | None:
        # the cache key covers plain sampling only, so replies shaped by tools, formats or n are not cached
        if self.cache is None or resolved.features():
            return None
        return self.cache.key(self.spec, resolved, messages)

    async def chat(self, messages: list[Message], params: SamplingParams | None = None) -> Completion:
        """Answer a conversation, from the cache when the same call was made before."""
        resolved = self.resolve(params)
        key = self._cache_key(resolved, messages)
        if key is not None and self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return hit
        completion = await self._chat(messages, resolved)
        if key is not None and self.cache is not None:
            self.cache.put(key, completion)
        return completion

    async def stream(self, messages: list[Message], params: SamplingParams | None = None) -> AsyncIterator[Delta]:
        """The reply as it is produced: text pieces, then a Delta carrying the whole Completion."""
        resolved = self.resolve(params)
        key = self._cache_key(resolved, messages)
        hit = self.cache.get(key) if key is not None and self.cache is not None else None
        if hit is not None:
            yield Delta(hit.text, hit)
            return
        async for delta in self._stream(messages, resolved):
            if delta.completion is not None and key is not None and self.cache is not None:
                self.cache.put(key, delta.completion)
            yield delta

    async def _stream(self, messages: list[Message], params: SamplingParams) -> AsyncIterator[Delta]:
        """Backends that cannot stream answer in one piece."""
        completion = await self._chat(messages, params)
        yield Delta(completion.text, completion)

    @abstractmethod
    async def _chat(self, messages: list[Message], params: SamplingParams) -> Completion:
        """Call the backend once (with its own retries); raise BackendError on failure."""

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """Cost of a call from the configured price per million tokens."""
        price = self.spec.price
        return (input_tokens * price.input + output_tokens * price.output) / 1_000_000

    async def ping(self) -> str:
        """Check the model answers at all; returns a short status line, raises BackendError if not."""
        c = await self._chat([{"role": "user", "content": "Say OK."}], self.resolve(SamplingParams(max_tokens=4)))
        return f"ok ({c.input_tokens}+{c.output_tokens} tokens)"

    async def aclose(self) -> None:
        """Release connections; a no-op for in-process models."""
