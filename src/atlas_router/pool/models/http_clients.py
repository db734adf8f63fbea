"""One keep-alive HTTP connection pool per upstream, shared by every model that points at it.

Why: a client per model (or per call) opens new TCP connections under load, and httpx keeps only 20
idle connections by default, so at 64 concurrent calls most connections were closed after each reply
and opened again for the next. Here every model on the same origin (scheme, host, port) in the same
event loop borrows one ``httpx.AsyncClient`` whose idle connections all stay open; concurrency is
bounded by each model's own semaphore, not by the pool. Per-model settings (key, timeout) go with
each request. The last model to let go closes the client.
"""

from __future__ import annotations

import asyncio
import weakref

import httpx

KEEPALIVE_EXPIRY_S = 30.0


def origin(url: str) -> str:
    """``scheme://host:port`` of a URL: the unit connections are pooled by."""
    u = httpx.URL(url)
    return f"{u.scheme}://{u.host}:{u.port or (443 if u.scheme == 'https' else 80)}"


class _Entry:
    def __init__(self) -> None:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None,
                              keepalive_expiry=KEEPALIVE_EXPIRY_S)
        self.client = httpx.AsyncClient(limits=limits, timeout=None)
        self.users = 0


_by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Entry]]" = weakref.WeakKeyDictionary()


def acquire(url: str) -> httpx.AsyncClient:
    """The running loop's shared client for ``url``'s origin; pair every call with ``release``."""
    clients = _by_loop.setdefault(asyncio.get_running_loop(), {})
    entry = clients.get(origin(url))
    if entry is None or entry.client.is_closed:
        entry = clients[origin(url)] = _Entry()
    entry.users += 1
    return entry.client


async def release(url: str, client: httpx.AsyncClient) -> None:
    """Give back a client from ``acquire``; the last user closes it (in the loop that made it)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    clients = _by_loop.get(loop, {})
    entry = clients.get(origin(url))
    if entry is None or entry.client is not client:
        return  # made in another loop (already gone) or replaced: nothing shared to count down
    entry.users -= 1
    if entry.users <= 0:
        del clients[origin(url)]
        await client.aclose()


def shared_count() -> int:
    """Clients open in the running loop (for tests: models on one upstream share one)."""
    return len(_by_loop.get(asyncio.get_running_loop(), {}))
