"""One keep-alive HTTP connection pool per upstream, shared by every model that points at it.

Why: a client per model (or per call) opens new TCP connections under load, and httpx keeps only 20
idle connections by default, so at 64 concurrent calls most connections were closed after each reply
and opened again for the next. Here every model on the same origin (scheme, host, port) in the same
event loop borrows one ``Upstream`` whose idle connections all stay open; concurrency is bounded by
each model's own semaphore, not by the pool. Per-model settings (key, timeout) go with each request.
The last model to let go closes it.

An ``Upstream`` spreads its calls over httpx clients of at most ``SHARD_CALLS`` calls in flight each:
httpx's pool does work per request that grows with its number of connections, so one client with 64
connections served half the calls per second of four with 16 (bench/pair_throughput.py, same server).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import httpx

KEEPALIVE_EXPIRY_S = 30.0
SHARD_CALLS = 16


def origin(url: str) -> str:
    """``scheme://host:port`` of a URL: the unit connections are pooled by."""
    u = httpx.URL(url)
    return f"{u.scheme}://{u.host}:{u.port or (443 if u.scheme == 'https' else 80)}"


class Upstream:
    """Keep-alive connections to one origin; each call goes to the least busy shard (a new shard opens
    when all carry ``SHARD_CALLS``)."""

    def __init__(self) -> None:
        self._shards: list[httpx.AsyncClient] = []
        self._busy: list[int] = []
        self.users = 0
        self.is_closed = False

    def _shard(self) -> int:
        best = min(range(len(self._shards)), key=self._busy.__getitem__, default=-1)
        if best < 0 or self._busy[best] >= SHARD_CALLS:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=None,
                                  keepalive_expiry=KEEPALIVE_EXPIRY_S)
            self._shards.append(httpx.AsyncClient(limits=limits, timeout=None))
            self._busy.append(0)
            best = len(self._shards) - 1
        return best

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if self.is_closed:
            raise httpx.ConnectError("the shared client of this upstream is closed")
        i = self._shard()
        self._busy[i] += 1
        try:
            return await self._shards[i].request(method, url, **kwargs)
        finally:
            self._busy[i] -= 1

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", url, **kwargs)

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    @property
    def shards(self) -> int:
        return len(self._shards)

    async def aclose(self) -> None:
        self.is_closed = True
        for client in self._shards:
            await client.aclose()


_by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Upstream]]" = weakref.WeakKeyDictionary()


def acquire(url: str) -> Upstream:
    """The running loop's shared pool for ``url``'s origin; pair every call with ``release``."""
    pools = _by_loop.setdefault(asyncio.get_running_loop(), {})
    up = pools.get(origin(url))
    if up is None or up.is_closed:
        up = pools[origin(url)] = Upstream()
    up.users += 1
    return up


async def release(url: str, up: Upstream) -> None:
    """Give back a pool from ``acquire``; the last user closes it (in the loop that made it)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    pools = _by_loop.get(loop, {})
    if pools.get(origin(url)) is not up:
        return  # made in another loop (already gone) or replaced: nothing shared to count down
    up.users -= 1
    if up.users <= 0:
        del pools[origin(url)]
        await up.aclose()


def shared_count() -> int:
    """Pools open in the running loop (for tests: models on one upstream share one)."""
    return len(_by_loop.get(asyncio.get_running_loop(), {}))
