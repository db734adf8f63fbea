"""``atlas serve --workers N`` (the speed option of bench/gateway_load.py): several processes behind one port
answer, split the admission limits between them, and refuse an overload with 429, never a 5xx. A bounded
loopback load; no timing is asserted. Also: the bench runner refuses unknown script names, and the
app-only CPU bench measures both of its apps."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import yaml

from support.gateway_helpers import pool_config
from support.servers import free_port, running_server
from support.stub_upstream import create_stub_upstream

ROOT = Path(__file__).resolve().parents[1]


async def _load(url: str, clients: int, per_client: int) -> Counter:
    statuses: Counter = Counter()
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=clients)) as http:
        async def one(c: int) -> None:
            for i in range(per_client):
                try:
                    r = await http.post(f"{url}/v1/chat/completions",
                                        json={"model": "atlas", "messages": [{"role": "user", "content": f"c{c} r{i}"}]})
                    statuses[r.status_code] += 1
                except httpx.HTTPError as err:
                    statuses[type(err).__name__] += 1

        await asyncio.gather(*(one(c) for c in range(clients)))
    return statuses


def test_serve_with_two_workers_answers_and_refuses_overload_with_429(tmp_path):
    with running_server(create_stub_upstream(delay_s=0.3)) as up:
        pool_file, cfg_file = tmp_path / "pool.yaml", tmp_path / "gateway.yaml"
        pool_file.write_text(yaml.safe_dump(pool_config(up, ["echo"])))
        cfg_file.write_text(yaml.safe_dump({"max_concurrency": 2, "max_queue": 2}))  # 1 + 1 per worker
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "ATLAS_API_KEYS"}
        proc = subprocess.Popen([sys.executable, "-m", "atlas_router", "serve", "--pool", str(pool_file), "--config",
                                 str(cfg_file), "--port", str(port), "--workers", "2", "--log-level", "warning"],
                                env=env, stderr=subprocess.PIPE, text=True)
        gw = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 120
            while True:
                try:
                    if httpx.get(f"{gw}/health", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None and time.time() < deadline, "gateway did not start"
                time.sleep(0.1)
            ok = httpx.post(f"{gw}/v1/chat/completions", timeout=30,
                            json={"model": "atlas", "messages": [{"role": "user", "content": "hello"}]})
            assert ok.status_code == 200 and "echo says: hello" in ok.json()["choices"][0]["message"]["content"]
            statuses = asyncio.run(_load(gw, 24, 2))
            assert sum(statuses.values()) == 48
            assert set(statuses) <= {200, 429}, statuses  # refusals, never a 5xx or a dropped connection
            assert statuses[429] > 0 and statuses[200] > 0
            workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
            pids = {int(p) for p in workers}
            assert len(pids) >= 2  # the supervisor runs two worker processes
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def test_run_all_refuses_unknown_scripts():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "run_all.py"), "--only", "nope"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "unknown bench script(s): nope" in r.stderr


def test_gateway_app_cpu_bench_measures_both_apps_on_real_answers():
    """bench/gateway_app_cpu.py drives the gateway app and the bare pass-through app in turns against a real
    upstream process; it stops with an error unless every request got a 200 with a JSON body, and it ends
    with the two apps' CPU per request (no timing is asserted, only that both were measured)."""
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gateway_app_cpu.py"), "--requests", "60",
                        "--clients", "8", "--rounds", "2", "--delay", "0.005"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rounds = [line for line in r.stdout.splitlines() if line.strip().startswith("round ")]
    assert len(rounds) == 4 and sum("gateway" in line for line in rounds) == 2
    summary = r.stdout.strip().splitlines()[-1]
    assert summary.startswith("gateway app: ") and "bare pass-through app: " in summary
    assert "Unclosed" not in r.stderr  # both apps' lifespans closed their upstream sessions


def test_upstream_cookies_bench_sees_the_cookies_only_the_default_session_keeps():
    """bench/upstream_cookies.py calls a cookie-setting upstream with the pool's client and a default
    aiohttp session: the default one keeps the upstream's two cookies, the pool's none (no timing asserted)."""
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "upstream_cookies.py"), "--calls", "40",
                        "--concurrency", "4", "--rounds", "1", "--delay", "0.002"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    with_cookies = [line for line in r.stdout.splitlines() if "sets 2 cookies" in line]
    assert len(with_cookies) == 2
    assert "pool upstream client" in with_cookies[0] and with_cookies[0].endswith("cookies kept 0")
    assert "default aiohttp session" in with_cookies[1] and with_cookies[1].endswith("cookies kept 2")
    assert r.stdout.strip().splitlines()[-1].startswith("with cookies, the default session costs ")
    assert "Unclosed" not in r.stderr
