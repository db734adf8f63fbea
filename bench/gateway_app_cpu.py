"""CPU per chat request of the gateway's app alone (no HTTP server in front), against a bare pass-through app.

Why: at 32 clients on 2 cores the gateway's throughput ratio follows its CPU per request, but the load test
(``gateway_load.py``) moves by several percent from run to run, more than one change to the chat path is
worth. Here both apps are called in this process as ASGI apps (the request handed over in memory, as the
server would after parsing it), by ``--clients`` concurrent callers, and each calls a real upstream (the
lean fixed-latency one, its own process) over loopback HTTP. What is measured is this process's CPU time:
the app's own work plus its upstream client, without the server's socket and parsing work, which both
apps share. The apps are timed in turns (``--rounds``; each keeps its best), so a slow spell of the
machine falls on both.

    python bench/gateway_app_cpu.py [--requests 3000] [--clients 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).parent))
from _loopback import gateway_pool, pass_through_proxy, run, upstream_process  # noqa: E402


class Lifespan:
    """An app's lifespan, driven as a server does: ``startup`` before the requests, ``shutdown`` after (a
    gateway opens and closes its pool there)."""

    def __init__(self, app) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict] = asyncio.Queue()
        self.done: dict[str, asyncio.Event] = {"startup": asyncio.Event(), "shutdown": asyncio.Event()}
        self.task: asyncio.Task | None = None

    async def _send(self, message: dict) -> None:
        _, event, outcome = message["type"].split(".")
        if outcome == "failed":
            raise SystemExit(f"lifespan {event} failed: {message.get('message')}")
        self.done[event].set()

    async def startup(self) -> None:
        self.task = asyncio.create_task(self.app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                                 self.inbox.get, self._send))
        await self.inbox.put({"type": "lifespan.startup"})
        await self.done["startup"].wait()

    async def shutdown(self) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.done["shutdown"].wait()
        await self.task


async def post(app, body: bytes) -> int:
    """One chat request through the ASGI app; its status (the reply's body is checked to be JSON)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"",
             "root_path": "", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
             "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())], "state": {}}
    given = False

    async def receive() -> dict:
        nonlocal given
        if given:
            await asyncio.Event().wait()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    status, parts = [0], []

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]
        else:
            parts.append(message.get("body", b""))

    await app(scope, receive, send)
    orjson.loads(b"".join(parts))
    return status[0]


async def measure(app, requests: int, clients: int) -> tuple[float, float]:
    """(CPU ms per request, requests per second of wall time) for ``requests`` spread over ``clients``."""
    left = [requests]
    statuses: dict[int, int] = {}

    async def client(c: int) -> None:
        while left[0] > 0:
            left[0] -= 1
            body = orjson.dumps({"model": "atlas", "messages": [{"role": "user",
                                                                 "content": f"What is 2 + 2? ({c}-{left[0]})"}]})
            s = await post(app, body)
            statuses[s] = statuses.get(s, 0) + 1

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if set(statuses) != {200}:
        raise SystemExit(f"not every request was answered: {statuses}")
    return cpu / requests * 1000, requests / wall


def gateway_app(upstream: str):
    from atlas_router.config import PoolConfig
    from atlas_router.pool.pool import Pool
    from atlas_router.serve.auth import KeyRing
    from atlas_router.serve.gateway import create_gateway_app
    from atlas_router.serve.settings import GatewaySettings

    config = PoolConfig.model_validate(gateway_pool(upstream))
    return create_gateway_app(Pool(config), settings=GatewaySettings(max_concurrency=64, max_queue=64),
                              keys=KeyRing(), admin_keys=KeyRing(), use_cache=False, settle_gc=True)  # as atlas serve


async def main_async(args: argparse.Namespace, upstream: str) -> None:
    apps = {"gateway": gateway_app(upstream), "bare proxy": pass_through_proxy(upstream)}
    lifespans = [Lifespan(app) for app in apps.values()]
    for app, span in zip(apps.values(), lifespans):
        await span.startup()
        await measure(app, 200, args.clients)  # warm-up: connections, first imports
    best: dict[str, tuple[float, float]] = {}
    for r in range(args.rounds):
        for name, app in apps.items():
            cpu, rate = await measure(app, args.requests, args.clients)
            print(f"  round {r + 1} {name:<10} CPU {cpu:.3f} ms per request, {rate:7.1f} req/s", flush=True)
            if name not in best or cpu < best[name][0]:
                best[name] = (cpu, rate)
    for span in lifespans:
        await span.shutdown()
    g, p = best["gateway"][0], best["bare proxy"][0]
    print(f"gateway app: {g:.3f} ms CPU per request; bare pass-through app: {p:.3f} ms; the gateway's own work "
          f"{g - p:.3f} ms per request ({g / p:.2f}x the bare app's CPU), at {args.clients} concurrent callers")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000, help="requests per app and round")
    ap.add_argument("--clients", type=int, default=32, help="concurrent callers")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--delay", type=float, default=0.02, help="upstream latency per call, seconds")
    args = ap.parse_args()
    with upstream_process(args.delay, lean=True) as upstream:
        run(main_async(args, upstream))


if __name__ == "__main__":
    main()
