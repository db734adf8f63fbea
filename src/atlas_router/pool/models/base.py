"""The model interface: one async ``chat`` call returning text and token usage.

Backends (OpenAI-compatible HTTP, in-process GGUF) implement ``_chat``; the base class adds the disk
cache and cost accounting, so every backend counts cost the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from atlas_router.config import ModelSpec

if TYPE_CHECKING:
    from atlas_router.pool.models.cache import ResponseCache

Message = dict[str, Any]


@dataclass
class Completion:
    """One model reply with the tokens it cost; ``cached`` replies cost nothing on rerun."""

    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str | None = None
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SamplingParams:
    """Per-call sampling; unset fields take the model's configured defaults."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()


class ChatModel(ABC):
    """A pool model. ``chat`` is safe to call concurrently; backends bound their own concurrency."""

    def __init__(self, spec: ModelSpec, cache: "ResponseCache | None" = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.cache = cache

    def resolve(self, params: SamplingParams | None) -> SamplingParams:
        """Fill unset sampling fields from the model's defaults."""
        d = self.spec.sampling
        p = params or SamplingParams()
        return SamplingParams(
            temperature=d.temperature if p.temperature is None else p.temperature,
            top_p=d.top_p if p.top_p is None else p.top_p,
            max_tokens=d.max_tokens if p.max_tokens is None else p.max_tokens,
            seed=d.seed if p.seed is None else p.seed,
            stop=p.stop,
        )

    async def chat(self, messages: list[Message], params: SamplingParams | None = None) -> Completion:
        """Answer a conversation, from the cache when the same call was made before."""
        resolved = self.resolve(params)
        key = None
        if self.cache is not None:
            key = self.cache.key(self.spec, resolved, messages)
            hit = self.cache.get(key)
            if hit is not None:
                return hit
        completion = await self._chat(messages, resolved)
        if key is not None and self.cache is not None:
            self.cache.put(key, completion)
        return completion

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
