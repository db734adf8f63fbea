"""The multi-step routing environment: the policy routes up to ``max_routes`` times, then must answer.

The environment is text-in, text-out and knows nothing about tokens or training engines, so the same
episode logic serves the local PPO rollout, ``atlas ask --policy DIR`` and the veRL agent loop. Each
route runs through a ``RouteExecutor``: live (the execution layer's ``run_pair``) or replay (records).
Whatever a route returns is neutralised (our tags made inert) and capped before the policy sees it.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from atlas_router.rl.protocol import (
    ROUTE_SEP,
    PoolView,
    Route,
    RouteError,
    information_block,
    parse_route,
    scan_policy_text,
    system_prompt,
)

DEFAULT_MAX_ROUTES = 4
DEFAULT_OBS_TOKEN_CAP = 2048
ROUTE_LIMIT_NOTE = "Route limit reached: no more routes; write the final answer now."


@dataclass
class RouteOutcome:
    """What one route gave back. ``source``: live, replay, or invalid (the call did not parse)."""

    raw: str
    route: Route | None = None
    text: str = ""
    answer: str = ""
    cost: float = 0.0
    error: str | None = None
    source: str = "invalid"

    def observation_body(self) -> str:
        """The text shown to the policy (before neutralisation and capping)."""
        if self.route is None:
            return f"invalid route: {self.error}"
        head = f"{self.route.model}{ROUTE_SEP}{self.route.tool}"
        if self.error:
            return f"{head} failed: {self.error}"
        return f"{head}: {self.text or self.answer}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "raw": self.raw,
            "model": self.route.model if self.route else None,
            "tool": self.route.tool if self.route else None,
            "input": self.route.input if self.route else None,
            "answer": self.answer,
            "cost": self.cost,
            "error": self.error,
            "source": self.source,
        }


class RouteExecutor(ABC):
    """Runs a parsed route for the episode whose original question is ``question``."""

    @abstractmethod
    async def execute(self, route: Route, question: str) -> RouteOutcome:
        """Never raises for run-time failures: they come back as ``error``."""


class LiveExecutor(RouteExecutor):
    """Routes run for real through the execution layer (``run_pair``), with its cost accounting."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def execute(self, route: Route, question: str) -> RouteOutcome:
        from atlas_router.execution.runner import run_pair

        record = await run_pair(self.pool, route.model, route.tool, route.input)
        return RouteOutcome(
            raw=str(route), route=route, text=record.response, answer=record.answer, cost=record.cost,
            error=record.error, source="live",
        )


@dataclass
class Turn:
    """One policy turn: the text it wrote and, after a route, the observation appended to it."""

    text: str
    observation: str | None = None
    outcome: RouteOutcome | None = None


@dataclass
class Episode:
    """The state of one question's episode. ``finish``: answer, eos, length or route_after_limit."""

    question: str
    turns: list[Turn] = field(default_factory=list)
    routes_used: int = 0
    done: bool = False
    finish: str = ""
    answer: str | None = None

    @property
    def outcomes(self) -> list[RouteOutcome]:
        return [t.outcome for t in self.turns if t.outcome is not None]

    @property
    def cost(self) -> float:
        return sum(o.cost for o in self.outcomes)

    def transcript(self) -> str:
        """The whole exchange as text (what a user of ``atlas ask --policy DIR`` sees)."""
        return "".join(t.text + (t.observation or "") for t in self.turns)


def char_capper(cap_tokens: int) -> Callable[[str], str]:
    """Fallback cap when no tokenizer is at hand: about four characters per token."""

    def cap(text: str) -> str:
        limit = cap_tokens * 4
        return text if len(text) <= limit else text[:limit] + " …[truncated]"

    return cap


def token_capper(tokenizer: Any, cap_tokens: int) -> Callable[[str], str]:
    """Cap an observation body at ``cap_tokens`` tokens of the policy's tokenizer."""

    def cap(text: str) -> str:
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) <= cap_tokens:
            return text
        return tokenizer.decode(ids[:cap_tokens], skip_special_tokens=True) + " …[truncated]"

    return cap


class RoutingEnv:
    """Episode logic: routes, the answer-only turn after the last route, and observation hygiene."""

    def __init__(self, pool: PoolView, executor: RouteExecutor, *, max_routes: int = DEFAULT_MAX_ROUTES,
                 obs_token_cap: int = DEFAULT_OBS_TOKEN_CAP, tokenizer: Any = None) -> None:
        if max_routes < 1:
            raise ValueError("max_routes must be at least 1")
        self.pool = pool
        self.executor = executor
        self.max_routes = max_routes
        self.cap = token_capper(tokenizer, obs_token_cap) if tokenizer is not None else char_capper(obs_token_cap)

    def system_prompt(self) -> str:
        return system_prompt(self.pool, self.max_routes)

    def messages(self, question: str) -> list[dict[str, str]]:
        """The chat the policy starts from: pool-generated instructions, then the question."""
        return [{"role": "system", "content": self.system_prompt()}, {"role": "user", "content": question}]

    def reset(self, question: str) -> Episode:
        return Episode(question=question)

    async def step(self, episode: Episode, text: str, *, truncated: bool = False) -> str | None:
        """Take one policy turn; return the observation to append, or None when the episode is over.

        ``truncated``: the turn ended because a token budget ran out (not by a stop string or EOS).
        """
        if episode.done:
            raise RuntimeError("step() on a finished episode")
        turn = Turn(text)
        episode.turns.append(turn)
        blocks = scan_policy_text(text).blocks
        last = blocks[-1] if blocks else None
        if last is not None and last.closed and last.tag == "answer":
            return self._finish(episode, "answer", last.body)
        if last is None or not last.closed or last.tag != "search":
            return self._finish(episode, "length" if truncated else "eos")
        if episode.routes_used >= self.max_routes:
            return self._finish(episode, "route_after_limit")
        turn.outcome = await self._route(last.body, episode.question)
        episode.routes_used += 1
        body = self.cap(turn.outcome.observation_body())
        if episode.routes_used >= self.max_routes:
            body = f"{body}\n{ROUTE_LIMIT_NOTE}"
        turn.observation = information_block(body)
        return turn.observation

    async def _route(self, body: str, question: str) -> RouteOutcome:
        try:
            route = parse_route(body, self.pool)
        except RouteError as err:
            return RouteOutcome(raw=body, error=str(err))
        try:
            outcome = await self.executor.execute(route, question)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # an executor bug must not kill a whole rollout batch
            outcome = RouteOutcome(raw=str(route), route=route, error=f"{type(err).__name__}: {err}", source="error")
        outcome.raw = body
        return outcome

    @staticmethod
    def _finish(episode: Episode, finish: str, answer: str | None = None) -> None:
        episode.done, episode.finish, episode.answer = True, finish, answer
        return None
