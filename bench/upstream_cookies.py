"""CPU per model call of the pool's upstream client against an upstream that sets cookies on every reply,
as hosted APIs behind Cloudflare do (``__cf_bm``, ``_cfuvid``), against a default aiohttp session.

Why: a client session with a cookie jar keeps such cookies, parses every reply's, and sends them back with
every later call. The pool's client (``models/http_clients.Upstream``, which the gateway and pair execution
share) keeps none. Both call the same upstream (the lean fixed-latency one, its own process) with the same
concurrency, in turns (``--rounds``; each keeps its best), so a slow spell of the machine falls on both. The
upstream is reached as ``localhost``: aiohttp's jar drops cookies set by a bare IP address. For reference,
both also call the same upstream without cookies.

    python bench/upstream_cookies.py [--calls 3000] [--concurrency 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).parent))
from _loopback import run, upstream_process  # noqa: E402

MESSAGE = {"model": "m", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}
BODY = orjson.dumps(MESSAGE)  # what the default session sends: the same bytes
OURS, DEFAULT = "pool upstream client (no cookie jar)", "default aiohttp session (cookie jar)"


async def cpu_per_call(call: Callable[[], Awaitable[int]], calls: int, concurrency: int) -> float:
    """Microseconds of this process's CPU per call, ``calls`` spread over ``concurrency`` callers."""
    left = [calls]
    statuses: set[int] = set()

    async def caller() -> None:
        while left[0] > 0:
            left[0] -= 1
            statuses.add(await call())

    cpu0 = time.process_time()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    cpu = time.process_time() - cpu0
    if statuses != {200}:
        raise SystemExit(f"not every call was answered: {statuses}")
    return cpu / calls * 1e6


async def measure(url: str, args: argparse.Namespace) -> dict[str, tuple[float, int]]:
    """Best CPU per call of each client, and how many cookies each kept."""
    from atlas_router.models.http_clients import Upstream

    ours = Upstream(url)
    default = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    headers = {"content-type": "application/json"}

    async def ours_call() -> int:
        return (await ours.post(f"{url}/v1/chat/completions", MESSAGE, timeout=30)).status_code

    async def default_call() -> int:
        async with default.post(f"{url}/v1/chat/completions", data=BODY, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=30)) as r:
            await r.read()
            return r.status

    clients = {OURS: ours_call, DEFAULT: default_call}
    for call in clients.values():
        await cpu_per_call(call, 100, args.concurrency)  # warm-up: connections, first cookies
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, call in clients.items():
            us = await cpu_per_call(call, args.calls, args.concurrency)
            best[name] = min(us, best.get(name, us))
    kept = {OURS: len(ours._open().cookie_jar), DEFAULT: len(default.cookie_jar)}
    await ours.aclose()
    await default.close()
    return {name: (best[name], kept[name]) for name in clients}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=3000, help="calls per client and round")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--delay", type=float, default=0.005, help="upstream latency per call, seconds")
    args = ap.parse_args()
    results = {}
    for cookies in (True, False):
        with upstream_process(args.delay, lean=True, cookies=cookies) as base:
            url = base.replace("127.0.0.1", "localhost")
            results[cookies] = run(measure(url, args))
    print(f"CPU per call of this process at {args.concurrency} concurrent calls "
          f"(best of {args.rounds} rounds, in turns):")
    for cookies, by_client in results.items():
        label = "upstream sets 2 cookies per reply" if cookies else "upstream sets no cookie (reference)"
        for name, (us, kept) in by_client.items():
            print(f"  {label:<36} {name:<38} {us:7.1f} us, cookies kept {kept}")
    ratio = {cookies: by_client[DEFAULT][0] / by_client[OURS][0] for cookies, by_client in results.items()}
    print(f"with cookies, the default session costs {ratio[True]:.2f}x the pool's client per call; "
          f"without, {ratio[False]:.2f}x")


if __name__ == "__main__":
    main()
