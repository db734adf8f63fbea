"""Pair-execution throughput against a loopback OpenAI-compatible server, at concurrency 1, 16 and 64.

Prints pairs/s at each level and the ratio to the serial loop (one job after another), measured in the
same run. The upstream answers after a fixed delay, standing in for a remote model's latency.

    python bench/pair_throughput.py [--jobs 256] [--delay 0.02]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _loopback import latency_upstream, serve  # noqa: E402

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


async def concurrent(pool: Pool, n: int, c: int) -> float:
    start = time.perf_counter()
    records = await run_pairs(pool, [PairJob("m", "none", f"q{i}") for i in range(n)], concurrency=c)
    assert all(r.error is None for r in records), [r.error for r in records if r.error][:3]
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=256)
    ap.add_argument("--delay", type=float, default=0.02)
    args = ap.parse_args()
    with serve(latency_upstream(args.delay)) as url:
        async def go():
            pool = make_pool(url)
            await run_pair(pool, "m", "none", "warm-up")
            base = await serial(pool, max(16, args.jobs // 8))
            print(f"serial loop: {base:8.1f} pairs/s (baseline)")
            for c in (1, 16, 64):
                rate = await concurrent(pool, args.jobs, c)
                print(f"concurrency {c:3d}: {rate:8.1f} pairs/s  ratio to serial {rate / base:5.2f}x")
            await pool.aclose()
        asyncio.run(go())


if __name__ == "__main__":
    main()
