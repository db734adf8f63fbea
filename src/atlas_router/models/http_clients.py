"""One keep-alive HTTP connection pool per upstream model server, shared by every model that points at it.

Why a pool per origin: a client per model (or per call) opens new TCP connections under load. Every
model on the same origin (scheme, host, port) in the same event loop borrows one ``Upstream`` whose idle
connections stay open; concurrency is bounded by each model's own semaphore, not by the pool.
Per-model settings (key, timeout) go with each request. The last model to let go closes it.

Why aiohttp and not httpx (which the library's other, lighter calls use through ``core.http``): model
calls are the gateway's hot path, and httpx's pool does work per request that grows with its number of
connections (it polls each idle socket). ``bench/pair_throughput.py`` prints the CPU per call of both
bare clients against the same loopback upstream: on 2 cores, 0.24 ms (aiohttp) against 1.2 ms (httpx)
at 16 calls in flight, 0.18 ms against 7.3 ms at 64. httpx was half of the gateway's CPU per request.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp

from atlas_router.core.jsonio import json_bytes, json_loads


class UpstreamTimeout(Exception):
    """No connection or no bytes from the upstream within the call's timeout."""


class UpstreamUnreachable(Exception):
    """The connection failed or dropped before a whole response came."""


@dataclass(frozen=True)
class UpstreamResponse:
    """A whole response: status, headers (lower-case names) and body."""

    status_code: int
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json_loads(self.content)


def _json_payload(body: Any, headers: dict[str, str] | None) -> tuple[bytes | None, dict[str, str] | None]:
    """A request body as JSON bytes, with its content type: aiohttp's ``json=`` encodes with the standard
    library, and the body of every model call is on the gateway's hot path (``core.jsonio``)."""
    if body is None:
        return None, headers
    return json_bytes(body), {"content-type": "application/json", **(headers or {})}


def origin(url: str) -> str:
    """``scheme://host:port`` of a URL: the unit connections are pooled by."""
    u = urlsplit(url)
    return f"{u.scheme}://{u.hostname}:{u.port or (443 if u.scheme == 'https' else 80)}"


def _timeout(seconds: float | None) -> aiohttp.ClientTimeout:
    """``seconds`` to connect and between bytes read, as httpx's timeout means (a long answer that keeps
    coming is not cut off)."""
    return aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, minus NO_PROXY), as
    httpx honours them. Read once per upstream: aiohttp's own ``trust_env`` looks it up (and .netrc) in a
    worker thread on every request, two thread hops per model call."""
    parts = urlsplit(url)
    proxies = getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or proxy_bypass(parts.hostname or ""):
        return None
    return proxy


def _tls_context() -> ssl.SSLContext:
    """The system's trusted certificates (and SSL_CERT_FILE / SSL_CERT_DIR) plus certifi's bundle, which is
    what httpx trusts: a minimal image without system certificates still reaches hosted APIs."""
    context = ssl.create_default_context()
    with contextlib.suppress(ImportError, OSError):
        import certifi

        context.load_verify_locations(certifi.where())
    return context


class Upstream:
    """Keep-alive connections to one origin (no cap on their number: the models' semaphores bound it), and
    no cookies: hosted APIs set bot-management cookies on every reply, and a cookie jar would keep them,
    parse each reply's and send them with every later call, whoever it is for (1.7x the client's CPU per
    call on such an upstream, ``bench/upstream_cookies.py``); no OpenAI-compatible API needs them."""

    def __init__(self, url: str = "") -> None:
        self.proxy = env_proxy(url) if url else None
        self._session: aiohttp.ClientSession | None = None
        self.users = 0
        self.is_closed = False

    def _open(self) -> aiohttp.ClientSession:
        if self.is_closed:
            raise UpstreamUnreachable("the shared client of this upstream is closed")
        if self._session is None:  # made in the loop that uses it (aiohttp binds a session to one loop)
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ssl=_tls_context()),
                                                  cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def request(self, method: str, url: str, *, json_body: Any = None, headers: dict[str, str] | None = None,
                      timeout: float | None = None) -> UpstreamResponse:
        """The whole response to one request; UpstreamTimeout or UpstreamUnreachable when none came."""
        try:
            data, headers = _json_payload(json_body, headers)
            async with self._open().request(method, url, data=data, headers=headers, proxy=self.proxy,
                                            timeout=_timeout(timeout)) as r:
                content = await r.read()
                return UpstreamResponse(r.status, {k.lower(): v for k, v in r.headers.items()}, content)
        except TimeoutError:
            raise UpstreamTimeout(f"timeout after {timeout:g}s" if timeout else "timeout") from None
        except aiohttp.ClientError as err:
            raise UpstreamUnreachable(f"{type(err).__name__}: {err}".rstrip(": ")) from None

    async def post(self, url: str, json_body: Any, headers: dict[str, str] | None = None,
                   timeout: float | None = None) -> UpstreamResponse:
        return await self.request("POST", url, json_body=json_body, headers=headers, timeout=timeout)

    async def get(self, url: str, headers: dict[str, str] | None = None, timeout: float | None = None) -> UpstreamResponse:
        return await self.request("GET", url, headers=headers, timeout=timeout)

    async def stream_lines(self, url: str, json_body: Any, headers: dict[str, str] | None = None,
                           timeout: float | None = None) -> AsyncIterator[UpstreamResponse | str]:
        """A streamed POST: first the response (whole, with its body, unless it is a 200 event stream),
        then, for an event stream, its lines as they arrive (without line ends)."""
        try:
            data, headers = _json_payload(json_body, headers)
            async with self._open().post(url, data=data, headers=headers, proxy=self.proxy,
                                         timeout=_timeout(timeout)) as r:
                headers_seen = {k.lower(): v for k, v in r.headers.items()}
                if r.status != 200 or not headers_seen.get("content-type", "").startswith("text/event-stream"):
                    yield UpstreamResponse(r.status, headers_seen, await r.read())
                    return
                yield UpstreamResponse(r.status, headers_seen, b"")
                async for raw in r.content:
                    yield raw.decode("utf-8", "replace").rstrip("\r\n")
        except TimeoutError:
            raise UpstreamTimeout(f"timeout after {timeout:g}s" if timeout else "timeout") from None
        except aiohttp.ClientError as err:
            raise UpstreamUnreachable(f"{type(err).__name__}: {err}".rstrip(": ")) from None

    async def aclose(self) -> None:
        self.is_closed = True
        if self._session is not None:
            await self._session.close()

    def abandon(self) -> None:
        """Let the connections go without the event loop (it has closed, so nothing can be awaited): what
        aiohttp does itself when it finds a session unclosed, without its warning."""
        self.is_closed = True
        session, self._session = self._session, None
        if session is not None and not session.closed:
            connector = session.connector
            session.detach()
            if connector is not None:
                connector._close()  # noqa: SLF001 - aiohttp's own synchronous close (as in its __del__)


# Pools by event loop (a session belongs to one loop). Sessions hold their loop, so a weak mapping would
# never drop an entry: the pools of loops that have closed without their models being closed (a script's
# asyncio.run) are abandoned when the next loop asks for a pool, and at exit.
_by_loop: dict[asyncio.AbstractEventLoop, dict[str, Upstream]] = {}


def _abandon_closed_loops() -> None:
    for loop in [loop for loop in _by_loop if loop.is_closed()]:
        for up in _by_loop.pop(loop).values():
            up.abandon()


atexit.register(_abandon_closed_loops)


def acquire(url: str) -> Upstream:
    """The running loop's shared pool for ``url``'s origin; pair every call with ``release``."""
    loop = asyncio.get_running_loop()
    if loop not in _by_loop:
        _abandon_closed_loops()
    pools = _by_loop.setdefault(loop, {})
    up = pools.get(origin(url))
    if up is None or up.is_closed:
        up = pools[origin(url)] = Upstream(origin(url))
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
        if not pools:
            del _by_loop[loop]
        await up.aclose()


def shared_count() -> int:
    """Pools open in the running loop (for tests: models on one upstream share one)."""
    return len(_by_loop.get(asyncio.get_running_loop(), {}))
