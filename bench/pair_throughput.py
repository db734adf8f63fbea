"""Pair-execution throughput against a loopback OpenAI-compatible server in its own process.

Prints pairs/s of ``run_pairs`` at concurrency 1, 16 and 64, the serial loop (one job after another),
and bare async clients posting the same chat body at 16 and 64 against the same server, all in the same
run: aiohttp (what model calls use, the baseline of the binding check) and httpx (for the CPU per call
that made the model calls move off it). Binding checks: run_pairs at 64 >= 0.8x the bare aiohttp client at
64, and faster than at 16.
The upstream answers after a fixed delay, standing in for a remote model's latency. Best of --repeat.

    python bench/pair_throughput.py [--jobs 512] [--delay 0.02] [--repeat 2] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _loopback import run, upstream_process  # noqa: E402
from _report import check, finish  # noqa: E402

from atlas_router.config import parse_pool_config  # noqa: E402
from atlas_router.execution.runner import PairJob, run_pair, run_pairs  # noqa: E402
from atlas_router.pool.pool import Pool  # noqa: E402


def make_pool(url: str) -> Pool:
    cfg = parse_pool_config({
        "models": [{"name": "m", "backend": "openai", "endpoint": f"{url}/v1", "max_concurrency": 64}],
        "tools": [{"name": "none", "kind": "none"}],
        "cache": {"enabled": False},
    })
    return Pool(cfg)


async def serial(pool: Pool, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        await run_pair(pool, "m", "none", f"q{i}")
    return n / (time.perf_counter() - start)


async def pairs(pool: Pool, n: int, c: int) -> float:
    start = time.perf_counter()
    records = await run_pairs(pool, [PairJob("m", "none", f"q{i}") for i in range(n)], concurrency=c)
    assert all(r.error is None for r in records), [r.error for r in records if r.error][:3]
    return n / (time.perf_counter() - start)


async def bare(url: str, n: int, c: int, lib: str = "aiohttp") -> tuple[float, float]:
    """The floor of any client: ``c`` workers posting one chat body each on one keep-alive client of
    ``lib``; (requests/s, CPU microseconds per request of this process)."""
    left = iter(range(n))

    def body(i: int) -> dict:
        return {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 512}

    async def timed(workers: list) -> tuple[float, float]:
        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*workers)
        return n / (time.perf_counter() - start), (time.process_time() - cpu) / n * 1e6

    if lib == "aiohttp":
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as session:
            async def worker() -> None:
                for i in left:
                    async with session.post(f"{url}/v1/chat/completions", json=body(i)) as r:
                        r.raise_for_status()
                        await r.json()

            return await timed([worker() for _ in range(c)])
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        async def hworker() -> None:
            for i in left:
                r = await http.post(f"{url}/v1/chat/completions", json=body(i))
                r.raise_for_status()
                r.json()

        return await timed([hworker() for _ in range(c)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=512)
    ap.add_argument("--delay", type=float, default=0.02)
    ap.add_argument("--repeat", type=int, default=2, help="best of this many runs per figure")
    ap.add_argument("--upstream", choices=("lean", "fastapi"), default="lean",
                    help="the loopback server: a bare ASGI app (default; the client side is measured) or FastAPI")
    ap.add_argument("--profile", action="store_true", help="pyinstrument profile of run_pairs at 64 (needs pyinstrument)")
    args = ap.parse_args()
    with upstream_process(args.delay, lean=args.upstream == "lean") as url:
        async def go() -> None:
            pool = make_pool(url)
            await run_pair(pool, "m", "none", "warm-up")
            await bare(url, 64, 64)
            await bare(url, 64, 64, "httpx")
            base = await serial(pool, max(16, args.jobs // 16))
            print(f"{args.upstream} upstream in its own process, {args.delay * 1000:g} ms per call; "
                  f"{args.jobs} jobs per figure")
            print(f"serial loop:        {base:8.1f} pairs/s (baseline)")
            rates: dict[str, float] = {}
            rates["pairs1"] = await pairs(pool, max(16, args.jobs // 16), 1)
            for _ in range(args.repeat):  # interleaved rounds: a load change on a shared machine hits all sides
                for c in (16, 64):
                    rates[f"pairs{c}"] = max(rates.get(f"pairs{c}", 0.0), await pairs(pool, args.jobs, c))
                    for lib in ("aiohttp", "httpx"):
                        rate, cpu = await bare(url, args.jobs, c, lib)
                        if rate > rates.get(f"{lib}{c}", 0.0):
                            rates[f"{lib}{c}"], rates[f"{lib}{c}-cpu"] = rate, cpu
            for c in (1, 16, 64):
                print(f"run_pairs at {c:3d}:   {rates[f'pairs{c}']:8.1f} pairs/s  ratio to serial "
                      f"{rates[f'pairs{c}'] / base:5.2f}x")
            for c in (16, 64):
                for lib in ("aiohttp", "httpx"):
                    print(f"bare {lib:<7} at {c:3d}: {rates[f'{lib}{c}']:8.1f} req/s, {rates[f'{lib}{c}-cpu']:6.0f} us "
                          f"CPU/request; run_pairs / it {rates[f'pairs{c}'] / rates[f'{lib}{c}']:5.2f}x")
            print(f"CPU per request, bare httpx / bare aiohttp at 64: {rates['httpx64-cpu'] / rates['aiohttp64-cpu']:.1f}x")
            if args.profile:
                from pyinstrument import Profiler

                with Profiler(async_mode="enabled") as prof:
                    await pairs(pool, args.jobs, 64)
                print(prof.output_text(unicode=False, color=False, show_all=False)[:6000])
            await pool.aclose()
            check("run_pairs at 64 vs bare aiohttp client at 64", rates["pairs64"] / rates["aiohttp64"], 0.8)
            check("run_pairs at 64 vs run_pairs at 16", rates["pairs64"] / rates["pairs16"], 1.0)

        run(go())
    finish()


if __name__ == "__main__":
    main()
