"""Routers by name, as the gateway's ``model`` field names them, and the glue that calls them.

Pairs are ranked by a fitted ``Router`` (``atlas_router.routers.base``) or, with none loaded, by
``DefaultRule``: ``route(queries, alpha)`` returns one ``Decision`` per query, whose ``ranked()`` pairs are
the order the gateway tries them in. Policy routers (``serve.policy``) may answer a query themselves and
rank with a Router (or the default rule) otherwise. The registry resolves ``atlas`` to
the best router loaded (hybrid, then cluster, then rl), or, with none loaded, to ``DefaultRule``. Calls are
micro-batched: while a router works on one batch, the queries that arrive queue up and go in the next
``route`` call, in a worker thread, so routing never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from atlas_router.config import PoolConfig
from atlas_router.routers.base import Decision, Router
from atlas_router.routers.operating_point import DEFAULT_TOLERANCE, OperatingPoint, route_at
from atlas_router.serve.policy import PolicyPath

PAIR_SEP = "@@"
ROUTER_NAMES = ("atlas", "atlas-cluster", "atlas-rl", "atlas-hybrid")
_PREFERENCE = ("atlas-hybrid", "atlas-cluster", "atlas-rl")
MAX_BATCH = 64

Pair = tuple[str, str]
Point = tuple[float | None, float | None]  # an operating point: (alpha, tolerance), at most one of them set


def parse_pair(text: str) -> Pair:
    """``"model@@tool"`` -> ("model", "tool"); ValueError for anything else."""
    model, sep, tool = str(text).partition(PAIR_SEP)
    if not sep or not model or not tool or PAIR_SEP in tool:
        raise ValueError(f"bad pair {text!r}: expected MODEL{PAIR_SEP}TOOL")
    return model, tool


def format_pair(pair: Pair) -> str:
    return f"{pair[0]}{PAIR_SEP}{pair[1]}"


@dataclass
class RouteResult:
    """A router's answer for one query, normalised: its pairs in order of preference, best first."""

    ranking: list[Pair]
    utility: float | None = None
    explanation: dict[str, Any] = field(default_factory=dict)


class DefaultRule:
    """The router used when none is loaded: the first model of the pool with the ``none`` tool (or the
    first tool when the pool has no ``none``). It says so in its explanation, and ignores ``alpha``."""

    name = "default-rule"

    def __init__(self, config: Callable[[], PoolConfig]) -> None:
        self._config = config

    def route(self, queries: Sequence[str], alpha: float | None = None) -> list[Decision]:
        cfg = self._config()
        tools = [t.name for t in cfg.tools]
        tool = "none" if "none" in tools else tools[0]
        model = cfg.models[0].name
        why = {"rule": "no router loaded: first model of the pool with tool 'none'"}
        return [Decision(model, tool, float("nan"), dict(why)) for _ in queries]


GatewayRouter = Router | DefaultRule  # what ranks pairs for a request; policy routers rank with one of these


def _jsonable(value: Any) -> Any:
    """Explanations go into responses and logs: keep JSON types, turn the rest into plain values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _jsonable(value.tolist())
    return str(value)


def route_result(decision: Decision) -> RouteResult:
    """A router's Decision as the gateway uses it: the ranking to try (also shown in the explanation), the
    utility (None when not a number), the explanation as JSON values."""
    if not isinstance(decision, Decision):
        raise TypeError(f"a router returned {type(decision).__name__}, not a Decision")
    utility = float(decision.utility)
    ranking = decision.ranked()
    explanation = {**_jsonable(decision.explanation), "ranking": [format_pair(p) for p in ranking]}
    return RouteResult(ranking, utility if math.isfinite(utility) else None, explanation)


def call_route(router: GatewayRouter, queries: list[str], alpha: float | None,
               tolerance: float | None = None) -> list[RouteResult]:
    """Route a batch at an operating point: the cost weight ``alpha``, else the cheapest pair within
    ``tolerance`` accuracy points of the best (default 2 points), for routers that estimate per-pair
    accuracy; other routers route at ``alpha`` (their own when None). ``atlas ask`` and the gateway both
    route through here, so one question and one router give one decision."""
    if alpha is not None and tolerance is not None:
        raise ValueError("an operating point is a tolerance or a cost weight alpha, not both")
    if getattr(router, "estimates_accuracy", False):
        point = (OperatingPoint(tolerance=None, alpha=alpha) if alpha is not None
                 else OperatingPoint(tolerance=DEFAULT_TOLERANCE if tolerance is None else tolerance))
        decisions = route_at(router, queries, point)
    else:
        decisions = router.route(queries, alpha=alpha)
    decisions = list(decisions)
    if len(decisions) != len(queries):
        raise RuntimeError(f"router returned {len(decisions)} decisions for {len(queries)} queries")
    return [route_result(d) for d in decisions]


_CLOSE = object()  # queued by Batcher.close: the worker ends after the requests before it


class Batcher:
    """Feeds one router from many concurrent requests, a batch per ``route`` call, in a worker thread."""

    def __init__(self, router: Any, inline: bool = False) -> None:
        self.router = router
        self.inline = inline
        self.alpha_supported = not isinstance(router, DefaultRule)
        self._queue: asyncio.Queue[tuple[str, Point, asyncio.Future[RouteResult]]] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def route(self, query: str, alpha: float | None, tolerance: float | None = None) -> RouteResult:
        """The router's result for ``query`` at the operating point (``alpha`` or ``tolerance``)."""
        if self.inline:
            return call_route(self.router, [query], alpha, tolerance)[0]
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._work())
        assert self._queue is not None
        future: asyncio.Future[RouteResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((query, (alpha, tolerance), future))
        return await future

    async def _work(self) -> None:
        assert self._queue is not None
        closing = False
        while not closing:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            closing = any(b is _CLOSE for b in batch)
            batch = [b for b in batch if b is not _CLOSE and not b[2].done()]  # skip callers that gave up
            for point in dict.fromkeys(b[1] for b in batch):  # one route call per operating point
                group = [b for b in batch if b[1] == point]
                try:
                    results = await asyncio.to_thread(call_route, self.router, [b[0] for b in group], *point)
                except Exception as err:  # a router bug fails these requests, not the worker
                    for b in group:
                        if not b[2].done():
                            b[2].set_exception(err)
                    continue
                for b, r in zip(group, results):
                    if not b[2].done():
                        b[2].set_result(r)

    def close(self) -> None:
        """Let the worker answer what is queued, then end (event-loop thread only)."""
        if self._worker is not None and not self._worker.done() and self._queue is not None:
            self._queue.put_nowait(_CLOSE)  # type: ignore[arg-type]
        self._worker = None


class RouterRegistry:
    """Routers by gateway model name. ``loaders`` rebuild routers from their files on reload."""

    def __init__(self, default: DefaultRule) -> None:
        self.default = default
        self._routers: dict[str, Any] = {}
        self._loaders: dict[str, Callable[[], Any]] = {}
        self._batchers: dict[int, Batcher] = {}

    def register(self, name: str, router: Any, loader: Callable[[], Any] | None = None) -> None:
        if name not in ROUTER_NAMES:
            raise ValueError(f"router name must be one of {', '.join(ROUTER_NAMES)}, not {name!r}")
        if not callable(getattr(router, "route", None)) and not isinstance(router, PolicyPath):
            raise TypeError(f"router {name!r} has no route() method and no policy")
        self._routers[name] = router
        if loader is not None:
            self._loaders[name] = loader

    def warm(self, routers: dict[str, Any] | None = None) -> dict[str, str]:
        """Route one query with each router so encoders load before the first request; returns the
        errors by router name (a router that fails here still gets its chance per request)."""
        errors = {}
        for name, router in (self._routers if routers is None else routers).items():
            try:
                if callable(getattr(router, "warm", None)):
                    router.warm()
                else:
                    call_route(router, ["warm-up query"], None)
            except Exception as err:  # reported, not fatal: requests fall back to the pool order
                errors[name] = f"{type(err).__name__}: {err}"
        return errors

    def reload(self) -> tuple[list[str], list[Any]]:
        """Rebuild every router that came from a file (blocking: run it in a worker thread) and swap them
        in; returns their names and the replaced routers, for ``close_routers`` once their requests are
        done. A failure leaves all as they were."""
        fresh = {name: load() for name, load in self._loaders.items()}
        self.warm(fresh)
        retired = [self._routers[n] for n in fresh if n in self._routers]
        self._routers.update(fresh)
        return sorted(fresh), retired

    def resolve(self, name: str) -> tuple[str, Any] | None:
        """(name of the router used, router) for a gateway model name; None when it names no router."""
        if name in self._routers:
            return name, self._routers[name]
        if name == "atlas":
            for other in _PREFERENCE:
                if other in self._routers:
                    return other, self._routers[other]
            return DefaultRule.name, self.default
        return None

    def names(self) -> list[str]:
        """Model names that route: ``atlas`` always, plus every registered router."""
        return ["atlas"] + [n for n in ROUTER_NAMES if n != "atlas" and n in self._routers]

    def is_router_name(self, name: str) -> bool:
        return name in ROUTER_NAMES

    def batcher(self, router: Any) -> Batcher:
        key = id(router)
        if key not in self._batchers:
            self._batchers[key] = Batcher(router, inline=isinstance(router, DefaultRule))
        return self._batchers[key]

    def drop_batchers(self) -> None:
        """End every batcher once its queue is answered; new ones start on demand (event-loop thread)."""
        for b in self._batchers.values():
            b.close()
        self._batchers.clear()

    def routers(self) -> list[Any]:
        return list(self._routers.values())


def close_routers(routers: list[Any]) -> None:
    """Release what routers hold (a policy's thread); blocking, so call it off the event loop."""
    for router in {id(r): r for r in routers}.values():
        if callable(getattr(router, "close", None)):
            router.close()
