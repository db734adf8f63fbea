"""Loopback servers for benchmarks: a fixed-latency OpenAI-compatible upstream, in a thread or (so that its
CPU is not the measured process's) in its own process."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import uvicorn
from fastapi import FastAPI, Request


def latency_upstream(delay_s: float = 0.02) -> FastAPI:
    """Answers every chat completion after ``delay_s`` (a stand-in for a remote model's latency)."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        await asyncio.sleep(delay_s)
        return {
            "id": "bench", "object": "chat.completion", "created": 0, "model": body.get("model", "m"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Final answer: 4"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24},
        }

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "m"}]}

    return app


_REPLY = (b'{"id":"bench","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,'
          b'"message":{"role":"assistant","content":"Final answer: 4"},"finish_reason":"stop"}],'
          b'"usage":{"prompt_tokens":20,"completion_tokens":4,"total_tokens":24}}')


#: what a hosted API behind Cloudflare sets on every reply (values made up, shapes as sent)
HOSTED_API_COOKIES = [
    (b"set-cookie", b"__cf_bm=Xk3r9dLq0.aZb7Vv2nM1Qp8sR4tU6wY5eH3jK9lN0oP-1733330000-1.0.1.1-AbCdEfGhIjKlMnOp"
                    b"QrStUvWxYz0123456789; path=/; expires=Sat, 05-Dec-2099 20:30:00 GMT; HttpOnly; SameSite=None"),
    (b"set-cookie", b"_cfuvid=Zq8w7E6r5T4y3U2i1O0p9A8s7D6f5G4h3J2k1L0-1733330000000-0.0.1.1-604800000; path=/; "
                    b"HttpOnly; SameSite=None"),
]


def lean_upstream(delay_s: float = 0.02, cookies: bool = False):
    """The same replies as ``latency_upstream`` from a bare ASGI app (no framework, the body is read and
    dropped): an upstream cheap enough that the client side is what a benchmark measures. With ``cookies``,
    every reply sets the cookies a hosted API behind Cloudflare sets."""
    extra = HOSTED_API_COOKIES if cookies else []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await _read_body(receive)
        if scope["method"] == "POST":
            await asyncio.sleep(delay_s)
        await _send_json(send, 200, _REPLY if scope["method"] == "POST" else b'{"object":"list","data":[{"id":"m"}]}',
                         extra)

    return app


async def _read_body(receive) -> bytes:
    """A bare ASGI app's whole request body."""
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    return body


async def _send_json(send, status: int, body: bytes, extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A bare ASGI app's JSON reply: one start message, one body message."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra_headers or [])})
    await send({"type": "http.response.body", "body": body})


def pass_through_proxy(upstream: str):
    """The least a Python gateway can do on this stack: the same server (uvicorn, uvloop, httptools, one write
    per reply) and upstream client (one aiohttp session) as the gateway, forwarding each POST body to the
    upstream's ``/v1/chat/completions`` with model ``m`` and its reply back; no routing, checks, metrics or
    logs. A reference for how much of the gateway's cost is the HTTP stack itself."""
    import aiohttp
    import orjson

    session: list[aiohttp.ClientSession] = []

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            if session:
                await session[0].close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = await _read_body(receive)
        if not session:
            session.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
        request = orjson.loads(body) if body else {}
        request["model"] = "m"
        async with session[0].post(f"{upstream}/v1/chat/completions", data=orjson.dumps(request),
                                   headers={"content-type": "application/json"}) as r:
            reply, status = await r.read(), r.status
        await _send_json(send, status, reply)

    return app


def gateway_pool(upstream: str) -> dict:
    """The pool the gateway benches serve: one model ``m`` at ``upstream``, the ``none`` tool, no response
    cache (every request reaches the upstream)."""
    return {"models": [{"name": "m", "backend": "openai", "endpoint": f"{upstream}/v1", "max_concurrency": 256,
                        "price": {"input": 0.1, "output": 0.2}, "max_retries": 0}],
            "tools": [{"name": "none", "kind": "none"}], "cache": {"enabled": False}}


def run_proxy(port: int, upstream: str) -> None:
    """Child process: ``pass_through_proxy`` in front of ``upstream``, on the gateway's server settings (its
    HTTP protocol included)."""
    from atlas_router.cli.serve import http_protocol

    uvicorn.run(pass_through_proxy(upstream), host="127.0.0.1", port=port, log_level="warning", backlog=4096,
                access_log=False, loop="auto", http=http_protocol())


def run(coro):
    """Run a benchmark's coroutine on uvloop where installed (the same loop for every side measured)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` on a free loopback port in a thread of this process; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", backlog=2048))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def run_upstream(port: int, delay: float, lean: bool = False, cookies: bool = False) -> None:
    """Child process: the fixed-latency upstream (FastAPI, or the bare ASGI one when ``lean``, which sets a
    hosted API's cookies when ``cookies``)."""
    app = lean_upstream(delay, cookies) if lean else latency_upstream(delay)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", backlog=4096)


def wait_up(url: str, alive: Callable[[], bool], timeout: float = 60) -> None:
    """Poll ``url`` until it answers, while the process serving it is alive."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not alive():
            raise SystemExit(f"server for {url} exited during start-up")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not start in {timeout}s")


@contextlib.contextmanager
def upstream_process(delay_s: float, lean: bool = False, cookies: bool = False) -> Iterator[str]:
    """The fixed-latency upstream in its own process on a free loopback port; yields its base URL."""
    port = free_port()
    proc = multiprocessing.get_context("spawn").Process(target=run_upstream, args=(port, delay_s, lean, cookies),
                                                        daemon=True)
    proc.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(f"{url}/v1/models", proc.is_alive)
        yield url
    finally:
        proc.terminate()
        proc.join(timeout=10)
