"""Load test of the routing gateway against a fast loopback upstream, at 1, 32 and 128 concurrent clients.

The upstream (a fixed-latency OpenAI-compatible app) runs in its own process, and the gateway in another
(``atlas serve``, pool models pointing at the upstream). Each closed-loop client sends requests one after
another. For each level it reports throughput and p50/p99 latency calling the upstream directly, then
through the gateway (model ``atlas``: routing plus pair execution), and the latency the gateway adds, its
mean split between a level's first answers (one per client, on new connections) and the rest. The
gateway admits ``--max-concurrency`` requests and queues ``--max-queue`` more: levels up to their sum are
nominal load (no 5xx, no 429 expected); past it the excess must be refused with 429, not crash anything,
and a refused client waits what Retry-After asks (``--ignore-retry-after``: it asks again at once). The load
generator is an aiohttp session (``--client httpx``: httpx clients, which cost several times more CPU per
request on the same 2 cores). Request counts and time are bounded; everything stays on 127.0.0.1. Each
level also prints the CPU per request of the gateway, the upstream and the load generator, how many of
the machine's cores they kept busy together, and how long each waited, ready to run, for a core (Linux):
where all three share few cores, the gateway's throughput is bounded by the CPU the other two leave it. Last, for reference (not binding), a bare pass-through proxy
on the gateway's HTTP stack is driven at 1 and 32 clients: what the stack alone costs on this machine.
``--profile DIR`` records the gateway under py-spy at each level and prints where its samples stop, by
package (uvicorn, aiohttp, asyncio, our modules).

    python bench/gateway_load.py [--delay 0.02] [--requests 2000] [--max-concurrency 32] [--max-queue 32]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _loopback import free_port, gateway_pool, run, run_proxy, run_upstream, wait_up  # noqa: E402
from _report import check, check_true, finish  # noqa: E402

LEVELS = (1, 32, 128)


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)  # of 200 answers
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    def mean(self, start: int = 0, stop: int | None = None) -> float:
        """Mean latency of the answers completed ``start``-th to ``stop``-th (in completion order)."""
        xs = self.latencies[start:stop]
        return sum(xs) / len(xs) if xs else float("nan")

    @property
    def throughput(self) -> float:
        return self.statuses[200] / self.wall_s if self.wall_s else 0.0


async def drive(url: str, model: str, clients: int, total: int, time_cap_s: float, lib: str = "aiohttp",
                honour_retry_after: bool = True) -> Result:
    """``clients`` closed-loop clients sharing ``total`` requests, stopping early at ``time_cap_s``. A client
    refused with 429 waits what Retry-After asks before its next request, as the OpenAI SDKs do; with
    ``honour_retry_after`` off it asks again at once (a retry storm: on a shared 2-core machine the refused
    clients' own CPU then takes the served ones' share).

    The load generator shares the machine with what it measures, so it must cost little per request:
    by default one aiohttp session (~0.2 ms CPU a request here); ``lib="httpx"`` uses httpx clients of 16
    connections each (one httpx client with 128 connections costs several times more per request), which
    on 2 cores spends more CPU than the upstream and the gateway together (``--client httpx``)."""
    res = Result()
    left = [total]
    deadline = time.perf_counter() + time_cap_s

    def body(c: int) -> dict:
        return {"model": model, "messages": [{"role": "user", "content": f"What is 2 + 2? ({c}-{left[0]})"}]}

    if lib == "aiohttp":
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                        timeout=aiohttp.ClientTimeout(total=60))

        async def post(c: int) -> tuple[int, str]:
            async with session.post(f"{url}/v1/chat/completions", json=body(c)) as r:
                await r.read()
                return r.status, r.headers.get("retry-after", "")

        async def close() -> None:
            await session.close()
    else:
        shards = [httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=16, max_keepalive_connections=16))
                  for _ in range((clients + 15) // 16)]

        async def post(c: int) -> tuple[int, str]:
            r = await shards[c // 16].post(f"{url}/v1/chat/completions", json=body(c))
            return r.status_code, r.headers.get("retry-after", "")

        async def close() -> None:
            for http in shards:
                await http.aclose()

    exhausted = asyncio.Event()  # every request handed out: a client waiting out a Retry-After stops at once

    async def client(c: int) -> None:
        while left[0] > 0 and time.perf_counter() < deadline:
            left[0] -= 1
            if left[0] == 0:
                exhausted.set()
            t0 = time.perf_counter()
            try:
                status, retry_after = await post(c)
            except (httpx.HTTPError, aiohttp.ClientError, TimeoutError) as err:
                res.errors[type(err).__name__] += 1
                continue
            res.statuses[status] += 1
            if status == 200:
                res.latencies.append(time.perf_counter() - t0)
            elif status == 429 and honour_retry_after and retry_after.isdigit():
                # the wait ends early once nothing is left to send: a client idling on a Retry-After after the
                # last request went out would otherwise stretch the measured wall time (by up to the whole
                # Retry-After), and the throughput under overload would count the idle tail as gateway time
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(exhausted.wait(), min(float(retry_after),
                                                                 max(0.0, deadline - time.perf_counter())))

    try:
        start = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        res.wall_s = time.perf_counter() - start
    finally:
        await close()
    return res


def cpu_seconds(pid: int, children: bool = True) -> float:
    """CPU seconds used so far by a process, with its children (the gateway's workers) unless told not."""
    import psutil

    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)] if children else [proc]
    return sum(sum(p.cpu_times()[:2]) for p in procs)


def core_wait_seconds(pid: int, children: bool = True) -> float | None:
    """Seconds the threads of a process (and of its children unless told not) spent ready to run but waiting
    for a core, from Linux's /proc/PID/task/TID/schedstat; None where the kernel does not give it."""
    import psutil

    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)] if children else [proc]
    try:
        return sum(int((task / "schedstat").read_text().split()[1])
                   for p in procs for task in Path(f"/proc/{p.pid}/task").iterdir()) / 1e9
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class CpuMeter:
    """CPU used by the gateway, the upstream and this process (the load generator) over one measured run,
    and the time each spent waiting for a core: on a machine with few cores they share it, and the
    gateway's ratio is bounded by what is left to it."""

    pids: dict[str, int]
    start: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)
    waited: dict[str, float] = field(default_factory=dict)

    def __enter__(self) -> "CpuMeter":
        self.start = {name: self._now(pid) for name, pid in self.pids.items()}
        return self

    def __exit__(self, *exc: object) -> None:
        for name, pid in self.pids.items():
            (cpu0, wait0), (cpu1, wait1) = self.start[name], self._now(pid)
            self.used[name] = cpu1 - cpu0
            if wait0 is not None and wait1 is not None:
                self.waited[name] = wait1 - wait0

    @staticmethod
    def _now(pid: int) -> tuple[float, float | None]:
        children = pid != os.getpid()  # this process's children are the servers
        return cpu_seconds(pid, children), core_wait_seconds(pid, children)

    def line(self, label: str, requests: int, wall_s: float) -> str:
        per = ", ".join(f"{name} {s / max(1, requests) * 1000:.2f}" for name, s in self.used.items())
        text = (f"  CPU {label}: ms per request: {per}; {sum(self.used.values()) / wall_s:.2f} of "
                f"{os.cpu_count()} cores busy")
        if len(self.waited) == len(self.used):
            text += "; waiting for a core, ms per request: " + ", ".join(
                f"{name} {s / max(1, requests) * 1000:.2f}" for name, s in self.waited.items())
        return text


REFERENCE_LEVELS = (1, 32)


def proxy_reference(ctx, upstream_url: str, upstream_pid: int,
                    args: argparse.Namespace) -> dict[int, tuple[Result, float]] | None:
    """The bare pass-through proxy (``_loopback.pass_through_proxy``) driven like the gateway at 1 client
    (at most 500 requests: a p50 needs no more) and at 32 clients, after the gateway's levels: how close to
    direct the HTTP stack alone gets on this machine, which is what the 1-client goal and the 32-client
    floor leave for the gateway's own work. Per level, its result and its CPU per request; None with
    --no-reference."""
    if args.no_reference:
        return None
    port = free_port()
    proxy = ctx.Process(target=run_proxy, args=(port, upstream_url), daemon=True)
    proxy.start()
    try:
        wait_up(f"http://127.0.0.1:{port}/v1/models", proxy.is_alive)
        url = f"http://127.0.0.1:{port}"
        run(drive(url, "atlas", 4, 40, 10, args.client))
        out: dict[int, tuple[Result, float]] = {}
        for clients in REFERENCE_LEVELS:
            requests = args.requests if clients > 1 else min(args.requests, 500)
            with CpuMeter({"proxy": proxy.pid, "upstream": upstream_pid}) as cpu:
                result = run(drive(url, "atlas", clients, requests, args.time_cap, args.client))
            out[clients] = result, cpu.used["proxy"] / max(1, sum(result.statuses.values())) * 1000
        return out
    finally:
        proxy.terminate()
        proxy.join(timeout=10)


def profile_shares(path: Path, top: int = 8) -> str:
    """Where a py-spy speedscope profile's samples stop (their innermost Python frame), by package: the
    third-party package, our module, or the standard library module. Why: the gateway's cost is the HTTP
    stack's plus its own, and this says how they split without opening the profile."""
    import json
    import re

    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    shares: Counter[str] = Counter()
    for profile in data["profiles"]:
        for stack, weight in zip(profile["samples"], profile["weights"]):
            if stack:
                file = frames[stack[-1]].get("file", "")
                ours = re.search(r"(atlas_router/[\w/]+)\.py", file)
                third = re.search(r"site-packages/([^/.]+)", file)
                std = re.search(r"python3\.\d+/([^/.]+)", file)
                shares[ours.group(1).replace("/", ".") if ours else third.group(1) if third
                       else std.group(1) if std else "other"] += weight
    total = sum(shares.values()) or 1.0
    ours_total = sum(v for k, v in shares.items() if k.startswith("atlas_router"))
    parts = ", ".join(f"{k} {v / total:.0%}" for k, v in shares.most_common(top))
    return f"  where the gateway's samples stop: {parts}; atlas_router in all {ours_total / total:.0%}"


def describe(name: str, r: Result) -> str:
    codes = " ".join(f"{k}:{v}" for k, v in sorted(r.statuses.items()))
    errs = f" transport-errors {dict(r.errors)}" if r.errors else ""
    return (f"  {name:<8} {r.throughput:8.1f} req/s  p50 {r.pct(0.5) * 1000:7.1f} ms  "
            f"p99 {r.pct(0.99) * 1000:7.1f} ms  [{codes}]{errs}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay", type=float, default=0.02, help="upstream latency per call, seconds")
    ap.add_argument("--requests", type=int, default=2000, help="requests per level and target (bounded)")
    ap.add_argument("--time-cap", type=float, default=30.0, help="seconds per level and target, at most")
    ap.add_argument("--max-concurrency", type=int, default=32)
    ap.add_argument("--max-queue", type=int, default=32)
    ap.add_argument("--client", choices=("aiohttp", "httpx"), default="aiohttp",
                    help="the load generator's HTTP client (the same for direct and gateway)")
    ap.add_argument("--ignore-retry-after", action="store_true",
                    help="refused clients ask again at once instead of waiting what Retry-After asks")
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the bare pass-through proxy measured at 32 clients after the gateway's levels")
    ap.add_argument("--workers", type=int, default=1, help="gateway worker processes (atlas serve --workers)")
    ap.add_argument("--profile", default="", help="write a py-spy profile of the gateway under load to this "
                    "folder (one speedscope file per level; needs py-spy)")
    args = ap.parse_args()

    up_port, gw_port = free_port(), free_port()
    upstream_url, gateway_url = f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{gw_port}"
    ctx = multiprocessing.get_context("spawn")
    upstream = ctx.Process(target=run_upstream, args=(up_port, args.delay), daemon=True)
    upstream.start()
    with tempfile.TemporaryDirectory() as tmp:
        pool_file, cfg_file = Path(tmp) / "pool.yaml", Path(tmp) / "gateway.yaml"
        pool_file.write_text(yaml.safe_dump(gateway_pool(upstream_url)))
        cfg_file.write_text(yaml.safe_dump({"max_concurrency": args.max_concurrency, "max_queue": args.max_queue}))
        env = {k: v for k, v in os.environ.items() if k != "ATLAS_API_KEYS"}
        gateway = subprocess.Popen([sys.executable, "-m", "atlas_router", "serve", "--pool", str(pool_file),
                                    "--config", str(cfg_file), "--port", str(gw_port), "--log-level", "warning",
                                    "--no-cache", "--workers", str(args.workers)], env=env, stderr=subprocess.DEVNULL)
        try:
            wait_up(f"{upstream_url}/v1/models", upstream.is_alive)
            wait_up(f"{gateway_url}/health", lambda: gateway.poll() is None)
            run(drive(gateway_url, "atlas", 4, 40, 10, args.client))  # warm-up: connections, first imports
            nominal = args.max_concurrency + args.max_queue
            print(f"gateway load: upstream latency {args.delay * 1000:g} ms; gateway ({args.workers} worker(s), "
                  f"limits split between them) admits {args.max_concurrency} running + {args.max_queue} queued "
                  f"(nominal load: <= {nominal} clients); load generator: {args.client}, refused clients "
                  f"{'ask again at once' if args.ignore_retry_after else 'wait what Retry-After asks'}")
            runs: dict[int, tuple[Result, Result]] = {}
            for clients in LEVELS:
                with CpuMeter({"upstream": upstream.pid, "load generator": os.getpid()}) as direct_cpu:
                    direct = run(drive(upstream_url, "m", clients, args.requests, args.time_cap, args.client,
                                       not args.ignore_retry_after))
                spy = None
                if args.profile:
                    Path(args.profile).mkdir(parents=True, exist_ok=True)
                    spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(gateway.pid), "--subprocesses",
                                            "--rate", "200", "--format", "speedscope", "--nonblocking", "-o",
                                            str(Path(args.profile) / f"gateway-{clients}.speedscope.json")],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(1.0)
                with CpuMeter({"gateway": gateway.pid, "upstream": upstream.pid,
                               "load generator": os.getpid()}) as gateway_cpu:
                    routed = run(drive(gateway_url, "atlas", clients, args.requests, args.time_cap, args.client,
                                       not args.ignore_retry_after))
                if spy is not None:
                    spy.send_signal(2)
                    spy.wait(timeout=60)
                runs[clients] = (direct, routed)
                print(f"{clients} concurrent client(s):")
                print(describe("direct", direct))
                print(describe("gateway", routed))
                print(f"  added by the gateway: p50 {(routed.pct(0.5) - direct.pct(0.5)) * 1000:+.1f} ms, "
                      f"p99 {(routed.pct(0.99) - direct.pct(0.99)) * 1000:+.1f} ms; throughput ratio "
                      f"{routed.throughput / direct.throughput:.2f}x of direct")
                print(f"  mean latency added: {(routed.mean() - direct.mean()) * 1000:+.1f} ms; by the first "
                      f"{clients} answers (new connections) {(routed.mean(0, clients) - direct.mean(0, clients)) * 1000:+.1f}"
                      f" ms, by the rest {(routed.mean(clients) - direct.mean(clients)) * 1000:+.1f} ms")
                print(direct_cpu.line("direct", sum(direct.statuses.values()), direct.wall_s))
                print(gateway_cpu.line("gateway", sum(routed.statuses.values()), routed.wall_s), flush=True)
                if spy is not None:
                    print(profile_shares(Path(args.profile) / f"gateway-{clients}.speedscope.json"), flush=True)
            health = httpx.get(f"{gateway_url}/health", timeout=5).json()
            reference = proxy_reference(ctx, upstream_url, upstream.pid, args)
            if reference is not None:
                print("reference (not binding): a bare pass-through proxy on the same stack (uvicorn, uvloop, httptools "
                      "with one write per reply, one aiohttp session; no routing, checks, metrics or logs):")
                for clients, (result, cpu_ms) in reference.items():
                    direct = runs[clients][0]
                    print(f"  {clients} client(s): {result.throughput:.1f} req/s, {result.throughput / direct.throughput:.2f}x "
                          f"of direct, p50 {(result.pct(0.5) - direct.pct(0.5)) * 1000:+.1f} ms; proxy CPU "
                          f"{cpu_ms:.2f} ms per request")
            print(f"after the run: running {health['running']}, queued {health['queued']}")
            for clients, (direct, routed) in runs.items():
                fivexx = sum(v for k, v in routed.statuses.items() if k >= 500) + sum(routed.errors.values())
                if clients <= nominal:
                    check_true(f"{clients} clients (nominal): no 5xx, no transport error, no 429",
                               fivexx == 0 and routed.statuses[429] == 0,
                               f"5xx/transport errors {fivexx}, 429s {routed.statuses[429]}")
                else:
                    check_true(f"{clients} clients (overload): 429s, no 5xx, no transport error, gateway alive",
                               fivexx == 0 and routed.statuses[429] > 0 and gateway.poll() is None,
                               f"429s {routed.statuses[429]}, 5xx/transport errors {fivexx}, "
                               f"gateway {'alive' if gateway.poll() is None else 'DEAD'}")
            print(f"goal (not binding): 1 client gateway/direct throughput "
                  f"{runs[1][1].throughput / runs[1][0].throughput:.2f}x (goal 0.95x), added p50 "
                  f"{(runs[1][1].pct(0.5) - runs[1][0].pct(0.5)) * 1000:+.1f} ms (goal +1 ms)")
            check("gateway vs direct throughput at 32 clients", runs[32][1].throughput / runs[32][0].throughput, 0.9)
            check("gateway throughput at 128 clients vs its own at 32", runs[128][1].throughput / runs[32][1].throughput,
                  0.9)
        finally:
            gateway.terminate()
            gateway.wait(timeout=30)
            upstream.terminate()
            upstream.join(timeout=10)
    finish()


if __name__ == "__main__":
    main()
