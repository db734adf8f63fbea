"""One HTTP retry policy for every call the library makes (models, embedding endpoints, reward models,
web search), and the httpx client factory for all but model calls (those share one aiohttp pool per
upstream, ``models/http_clients.py``, for speed).

Why one: the same upstream blip (a 429 with ``Retry-After``, a 503 while a server restarts, a dropped
connection) deserves the same answer wherever it happens, and four hand-written loops had drifted apart
(two status sets, different waits, some callers with no retry at all). A failure is worth another try
when the connection failed or timed out, or the status is in ``RETRY_STATUS``; the wait doubles from
``BACKOFF_BASE_S`` up to ``BACKOFF_MAX_S``, with jitter, and is at least what ``Retry-After`` asks.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import httpx

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
BACKOFF_BASE_S = 0.25
BACKOFF_MAX_S = 8.0
DEFAULT_RETRIES = 2  # tries after the first, for callers without a setting of their own


def backoff_s(attempt: int, retry_after: float = 0.0) -> float:
    """Seconds to wait before try ``attempt + 1`` (attempt 0 = after the first failure)."""
    return max(retry_after, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt) * (0.5 + random.random()))


class _HasHeaders(Protocol):
    @property
    def headers(self) -> Mapping[str, str]: ...


def retry_after_s(response: _HasHeaders) -> float:
    """The wait a response asks for (``Retry-After`` in seconds), 0 when it asks none."""
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else 0.0


def async_client(timeout_s: float | None, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=timeout_s, **kwargs)


def sync_client(timeout_s: float | None, **kwargs: Any) -> httpx.Client:
    return httpx.Client(timeout=timeout_s, **kwargs)


async def send_with_retries(send: Callable[[], Awaitable[httpx.Response]], retries: int = DEFAULT_RETRIES
                            ) -> httpx.Response:
    """``send()`` until it gets a response whose status is not worth retrying, or tries run out: the last
    response is returned (the caller reads its status), the last transport error raised."""
    for attempt in range(retries + 1):
        try:
            response = await send()
        except (httpx.TimeoutException, httpx.TransportError):
            if attempt >= retries:
                raise
            await asyncio.sleep(backoff_s(attempt))
            continue
        if response.status_code not in RETRY_STATUS or attempt >= retries:
            return response
        await asyncio.sleep(backoff_s(attempt, retry_after_s(response)))
    raise AssertionError("unreachable")  # pragma: no cover


def send_with_retries_sync(send: Callable[[], httpx.Response], retries: int = DEFAULT_RETRIES) -> httpx.Response:
    """``send_with_retries`` for synchronous callers (embedding endpoints during ``encode``)."""
    for attempt in range(retries + 1):
        try:
            response = send()
        except (httpx.TimeoutException, httpx.TransportError):
            if attempt >= retries:
                raise
            time.sleep(backoff_s(attempt))
            continue
        if response.status_code not in RETRY_STATUS or attempt >= retries:
            return response
        time.sleep(backoff_s(attempt, retry_after_s(response)))
    raise AssertionError("unreachable")  # pragma: no cover
