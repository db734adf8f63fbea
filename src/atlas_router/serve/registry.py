"""Routers by name, as the gateway's ``model`` field names them, and the glue that calls them.

A router is any object with ``route(queries) -> list[Decision]`` (``atlas_router.routers.base``): a
decision names a (model, tool) pair, a utility and an ``explanation``. The registry resolves ``atlas`` to
the best router loaded (hybrid, then cluster, then rl), or, with none loaded, to ``DefaultRule``. Calls are
micro-batched: while a router works on one batch, the queries that arrive queue up and go in the next
``route`` call, in a worker thread, so routing never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from atlas_router.config import PoolConfig

PAIR_SEP = "@@"
ROUTER_NAMES = ("atlas", "atlas-cluster", "atlas-rl", "atlas-hybrid")
_PREFERENCE = ("atlas-hybrid", "atlas-cluster", "atlas-rl")
MAX_BATCH = 64

Pair = tuple[str, str]


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
    first tool when the pool has no ``none``). It says so in its explanation."""

    name = "default-rule"

    def __init__(self, config: Callable[[], PoolConfig]) -> None:
        self._config = config

    def route(self, queries: Sequence[str]) -> list[dict[str, Any]]:
        cfg = self._config()
        tools = [t.name for t in cfg.tools]
        tool = "none" if "none" in tools else tools[0]
        model = cfg.models[0].name
        why = {"rule": "no router loaded: first model of the pool with tool 'none'"}
        return [{"model": model, "tool": tool, "utility": None, "explanation": why} for _ in queries]


def _field(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _as_pair(item: Any) -> Pair | None:
    """A pair from the shapes routers use in explanations: "m@@t", (m, t), {"model":, "tool":}."""
    try:
        if isinstance(item, str):
            return parse_pair(item)
        if isinstance(item, (list, tuple)) and len(item) >= 2 and all(isinstance(x, str) for x in item[:2]):
            return item[0], item[1]
        model, tool = _field(item, "model"), _field(item, "tool")
        if isinstance(model, str) and isinstance(tool, str):
            return model, tool
        pair = _field(item, "pair")
        return _as_pair(pair) if pair is not None else None
    except ValueError:
        return None


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


def normalise(decision: Any) -> RouteResult:
    """A Decision (object or dict) as a RouteResult; top pairs of the explanation extend the ranking."""
    ranking: list[Pair] = []
    first = _as_pair(decision)
    if first:
        ranking.append(first)
    explanation = _field(decision, "explanation") or {}
    if not isinstance(explanation, dict):
        explanation = {"text": str(explanation)}
    for key in ("top_pairs", "top", "ranking"):
        for item in explanation.get(key) or []:
            pair = _as_pair(item)
            if pair and pair not in ranking:
                ranking.append(pair)
    utility = _field(decision, "utility")
    try:
        utility = float(utility) if utility is not None else None
    except (TypeError, ValueError):
        utility = None
    return RouteResult(ranking, utility, _jsonable(explanation))


def _accepts_alpha(router: Any) -> bool:
    try:
        params = inspect.signature(router.route).parameters
    except (TypeError, ValueError):
        return False
    return "alpha" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def call_route(router: Any, queries: list[str], alpha: float | None) -> list[RouteResult]:
    """Route a batch at the request's ``alpha``, or else at the default operating point ("cheapest pair
    within 2 accuracy points of the best"), exactly as ``atlas ask`` does, for routers that estimate
    per-pair accuracy; other routers get ``alpha`` as a keyword when they take one."""
    from atlas_router.routers.operating_point import OperatingPoint, route_at

    if hasattr(router, "query_tables") or hasattr(router, "predict_accuracy"):
        point = OperatingPoint() if alpha is None else OperatingPoint(tolerance=None, alpha=alpha)
        decisions = route_at(router, queries, point)
    elif alpha is not None and _accepts_alpha(router):
        decisions = router.route(queries, alpha=alpha)
    else:
        decisions = router.route(queries)
    decisions = list(decisions)
    if len(decisions) != len(queries):
        raise RuntimeError(f"router returned {len(decisions)} decisions for {len(queries)} queries")
    return [normalise(d) for d in decisions]


_CLOSE = object()  # queued by Batcher.close: the worker ends after the requests before it


class Batcher:
    """Feeds one router from many concurrent requests, a batch per ``route`` call, in a worker thread."""

    def __init__(self, router: Any, inline: bool = False) -> None:
        self.router = router
        self.inline = inline
        self.alpha_supported = _accepts_alpha(router)
        self._queue: asyncio.Queue[tuple[str, float | None, asyncio.Future[RouteResult]]] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def route(self, query: str, alpha: float | None) -> RouteResult:
        if self.inline:
            return call_route(self.router, [query], alpha)[0]
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._work())
        assert self._queue is not None
        future: asyncio.Future[RouteResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((query, alpha, future))
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
            for alpha in dict.fromkeys(b[1] for b in batch):
                group = [b for b in batch if b[1] == alpha]
                try:
                    results = await asyncio.to_thread(call_route, self.router, [b[0] for b in group], alpha)
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
        if not callable(getattr(router, "route", None)) and getattr(router, "policy", None) is None:
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
