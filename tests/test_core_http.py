"""The one HTTP retry policy (core/http.py), against a real loopback server: retryable statuses and
dropped connections are tried again with backoff (at least what Retry-After asks), other statuses come
back at once, and the reward-model and web-search tools now use it too."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from atlas_router.core.http import RETRY_STATUS, backoff_s, send_with_retries, send_with_retries_sync
from support.servers import free_port, running_server


def _flaky_app(failures: int, status: int, retry_after: str | None = None) -> tuple[FastAPI, list[float]]:
    """Answers ``status`` to the first ``failures`` calls, then 200; records when each call came."""
    app, calls = FastAPI(), []

    @app.post("/v1/thing")
    @app.get("/v1/thing")
    async def thing():
        calls.append(time.monotonic())
        if len(calls) <= failures:
            headers = {"retry-after": retry_after} if retry_after else {}
            return JSONResponse({"error": "busy"}, status_code=status, headers=headers)
        return {"ok": True, "calls": len(calls)}

    return app, calls


def test_backoff_doubles_with_jitter_and_honours_retry_after():
    waits = [backoff_s(a) for a in range(3) for _ in range(50)]
    assert 0.125 <= min(waits) and max(waits) <= 1.5
    assert min(backoff_s(2) for _ in range(50)) > max(backoff_s(0) for _ in range(50))
    assert backoff_s(0, retry_after=3.0) == 3.0
    assert 503 in RETRY_STATUS and 429 in RETRY_STATUS and 400 not in RETRY_STATUS


def test_retryable_statuses_are_tried_again_until_they_pass():
    app, calls = _flaky_app(2, 503)
    with running_server(app) as url, httpx.Client() as client:
        r = send_with_retries_sync(lambda: client.get(f"{url}/v1/thing"), retries=2)
    assert r.status_code == 200 and r.json()["calls"] == 3 and len(calls) == 3


def test_retry_after_is_waited_and_the_last_answer_returned_when_tries_run_out():
    app, calls = _flaky_app(5, 429, retry_after="1")

    async def go():
        async with httpx.AsyncClient() as client:
            return await send_with_retries(lambda: client.post(f"{url}/v1/thing"), retries=1)

    with running_server(app) as url:
        r = asyncio.run(go())
    assert r.status_code == 429 and len(calls) == 2 and calls[1] - calls[0] >= 0.95


def test_a_refusal_is_not_retried_and_a_dead_server_raises_after_its_tries():
    app, calls = _flaky_app(5, 400)
    with running_server(app) as url, httpx.Client() as client:
        r = send_with_retries_sync(lambda: client.get(f"{url}/v1/thing"), retries=3)
    assert r.status_code == 400 and len(calls) == 1
    dead = f"http://127.0.0.1:{free_port()}/v1/thing"
    t0 = time.monotonic()
    with httpx.Client() as client, pytest.raises(httpx.ConnectError):
        send_with_retries_sync(lambda: client.get(dead), retries=1)
    assert time.monotonic() - t0 >= 0.12  # it waited once before the second try


def test_reward_model_and_web_search_ride_out_a_503():
    from atlas_router.tools.prm import PoolingRewardClient
    from atlas_router.tools.web_search.http_backends import SearxngBackend

    app, calls = _flaky_app(1, 503)

    @app.post("/pooling")
    async def pooling():
        calls.append(time.monotonic())
        if len(calls) == 1:
            return JSONResponse({"error": "warming up"}, status_code=503)
        return {"data": [{"index": 0, "data": [[0.2, 0.8], [0.1, 0.9]]}]}

    @app.get("/search")
    async def search():
        calls.append(time.monotonic())
        if len(calls) % 2 == 1:
            return JSONResponse({"error": "busy"}, status_code=503)
        return {"results": [{"title": "Paris", "url": "https://example.org/paris", "content": "capital of France"}]}

    with running_server(app) as url:
        rewards = asyncio.run(PoolingRewardClient(f"{url}/v1", model="prm").step_rewards("q", ["a\n\nb"]))
        assert len(calls) == 2 and len(rewards) == 1 and len(rewards[0]) == 2
        calls.clear()
        hits = asyncio.run(SearxngBackend(url).search("capital of France", 3))
        assert len(calls) == 2 and hits and "France" in hits[0].text
