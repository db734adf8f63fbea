"""Gateway reliability against real loopback upstreams: fallback past a failing upstream, circuit breakers,
timeouts, graceful shutdown with requests in flight, pool reload (HTTP and SIGHUP) without a restart."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
import uvicorn
import yaml

from atlas_router.serve.auth import KeyRing
from atlas_router.serve.gateway import create_gateway_app
from atlas_router.serve.settings import GatewaySettings
from support.gateway_helpers import NONE_TOOL, client, gateway, http_pool, pool_config
from support.servers import free_port, running_server
from support.stub_upstream import create_stub_upstream


@pytest.fixture(scope="module")
def upstream():
    app = create_stub_upstream(slow_s=1.5)
    with running_server(app) as url:
        yield url, app


def _chat(url: str, content: str, model: str = "atlas", **extra) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=30,
                      json={"model": model, "messages": [{"role": "user", "content": content}], **extra})


def test_every_request_succeeds_when_one_upstream_fails_half_the_time(upstream):
    url, app = upstream
    failures_before = app.state.requests["half"] // 2
    # 'half' is the default rule's choice and has no retries of its own: only fallback can save a request
    with gateway(http_pool(url, ["half", "echo"]), breaker_failures=1000) as gw:
        c = openai.AsyncOpenAI(base_url=f"{gw}/v1", api_key="x", max_retries=0)

        async def run():
            sem = asyncio.Semaphore(8)

            async def one(i):
                async with sem:
                    return await c.chat.completions.create(model="atlas", messages=[{"role": "user", "content": f"q{i}"}])
            return await asyncio.gather(*(one(i) for i in range(40)))

        responses = asyncio.run(run())
        metrics = httpx.get(f"{gw}/metrics").text
    assert len(responses) == 40
    assert all(r.choices[0].message.content.endswith(f"q{i}. Final answer: 42") for i, r in enumerate(responses))
    pairs = [r.model_extra["atlas"]["pair"] for r in responses]
    fell_back = [r for r in responses if r.model_extra["atlas"]["fallbacks"] == 1]
    assert 10 <= len(fell_back) <= 30 and pairs.count("half@@none") == 40 - len(fell_back)
    assert all(r.model_extra["atlas"]["pair"] == "echo@@none" for r in fell_back)
    assert all(r.model_extra["atlas"]["attempts"][0]["error"].startswith("BackendError") for r in fell_back)
    assert app.state.requests["half"] // 2 - failures_before == len(fell_back)
    assert f'atlas_upstream_failures_total{{model="half"}} {float(len(fell_back))}' in metrics
    assert f"atlas_fallbacks_total {float(len(fell_back))}" in metrics


def test_circuit_opens_skips_the_model_then_half_opens(upstream):
    url, app = upstream
    # cooldown long enough that a loaded CI machine answers the "while open" requests before it ends
    with gateway(http_pool(url, ["down", "echo"]), breaker_failures=2, breaker_cooldown_s=3.0) as gw:
        start = app.state.requests["down"]
        for i in range(2):
            r = _chat(gw, f"a{i}")
            assert r.status_code == 200 and r.json()["atlas"]["attempts"][0]["outcome"] == "failed"
        assert httpx.get(f"{gw}/health").json()["circuits"]["down"] == "open"
        assert 'atlas_circuit_state{model="down"} 2.0' in httpx.get(f"{gw}/metrics").text
        r = _chat(gw, "while open")
        assert r.status_code == 200 and r.json()["atlas"]["pair"] == "echo@@none"
        assert r.json()["atlas"]["attempts"][0] == {"model": "down", "tool": "none", "outcome": "skipped",
                                                   "error": "circuit open", "latency_s": 0.0}
        assert app.state.requests["down"] == start + 2  # the open circuit kept the request off the upstream
        passthrough = _chat(gw, "direct", model="down")
        assert passthrough.status_code == 503 and passthrough.json()["error"]["code"] == "circuit_open"
        assert int(passthrough.headers["retry-after"]) >= 1
        time.sleep(3.1)
        r = _chat(gw, "trial")  # half-open: one trial call goes out, fails, the circuit opens again
        assert r.status_code == 200 and r.json()["atlas"]["attempts"][0]["outcome"] == "failed"
        assert app.state.requests["down"] == start + 3
        assert httpx.get(f"{gw}/health").json()["circuits"]["down"] == "open"


def test_half_open_success_closes_the_circuit(upstream):
    url, _ = upstream
    with gateway(http_pool(url, ["half"]), breaker_failures=1, breaker_cooldown_s=0.3) as gw:
        codes = []
        for i in range(2):  # the upstream alternates: one of two consecutive calls fails and opens the circuit
            codes.append(_chat(gw, f"x{i}", model="half").status_code)
            if codes[-1] == 502:
                break
        assert 502 in codes and httpx.get(f"{gw}/health").json()["circuits"]["half"] == "open"
        assert _chat(gw, "refused", model="half").status_code == 503
        time.sleep(0.4)
        assert _chat(gw, "trial", model="half").status_code == 200
        assert httpx.get(f"{gw}/health").json()["circuits"]["half"] == "closed"


def test_per_upstream_timeout_then_fallback(upstream):
    url, _ = upstream
    cfg = pool_config(url, ["slow", "echo"])
    cfg["models"][0]["timeout_s"] = 0.3  # the pool's per-upstream timeout
    from atlas_router.config import parse_pool_config
    from atlas_router.pool.pool import Pool

    with gateway(Pool(parse_pool_config(cfg))) as gw:
        t0 = time.perf_counter()
        r = _chat(gw, "hurry")
        elapsed = time.perf_counter() - t0
    atlas = r.json()["atlas"]
    assert r.status_code == 200 and atlas["pair"] == "echo@@none"
    assert "timeout after 0.3s" in atlas["attempts"][0]["error"]
    assert elapsed < 1.4  # well before the slow upstream would have answered


def test_gateway_attempt_timeout_bounds_a_pair(upstream):
    url, _ = upstream
    with gateway(http_pool(url, ["slow", "echo"], timeout_s=10), attempt_timeout_s=0.3) as gw:
        r = _chat(gw, "hurry")
    atlas = r.json()["atlas"]
    assert atlas["pair"] == "echo@@none" and atlas["attempts"][0]["outcome"] == "timeout"


def test_upstream_retries_hide_transient_failures_on_passthrough(upstream):
    url, _ = upstream
    with gateway(http_pool(url, ["half"], retries=2)) as gw:
        assert [_chat(gw, f"r{i}", model="half").status_code for i in range(6)] == [200] * 6


def test_all_pairs_failing_is_502_naming_each_attempt(upstream):
    url, _ = upstream
    with gateway(http_pool(url, ["down"], tools=[NONE_TOOL, {"name": "calculator", "kind": "calculator"}])) as gw:
        with pytest.raises(openai.InternalServerError) as info:
            client(gw).chat.completions.create(model="atlas", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502
    message = info.value.body["message"]
    assert "down@@none: failed" in message and "down@@calculator: failed" in message


def test_graceful_shutdown_finishes_in_flight_requests(upstream):
    url, _ = upstream
    app = create_gateway_app(http_pool(url, ["slow"]), settings=GatewaySettings(), keys=KeyRing())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=10))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    gw = f"http://127.0.0.1:{port}"
    result = {}
    worker = threading.Thread(target=lambda: result.update(r=_chat(gw, "finish me", model="atlas")))
    worker.start()
    while app.state.admission.running == 0:
        time.sleep(0.01)
    server.should_exit = True  # what SIGTERM does
    worker.join(timeout=10)
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert result["r"].status_code == 200
    assert result["r"].json()["choices"][0]["message"]["content"] == "slow says: finish me. Final answer: 42"
    with pytest.raises(httpx.ConnectError):
        _chat(gw, "too late")


def test_admin_reload_extends_the_pool_without_restart(upstream, tmp_path):
    url, _ = upstream
    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(yaml.safe_dump(pool_config(url, ["slow"])))
    app = create_gateway_app(pool_path=pool_file, settings=GatewaySettings(), keys=KeyRing())
    with running_server(app) as gw:
        assert _chat(gw, "x", model="echo").status_code == 404
        in_flight = {}
        worker = threading.Thread(target=lambda: in_flight.update(r=_chat(gw, "during reload")))
        worker.start()
        while app.state.admission.running == 0:
            time.sleep(0.01)
        extended = pool_config(url, ["slow", "echo"], tools=[NONE_TOOL, {"name": "calculator", "kind": "calculator"}])
        pool_file.write_text(yaml.safe_dump(extended))
        r = httpx.post(f"{gw}/admin/reload")
        assert r.status_code == 200 and r.json()["added"] == ["calculator", "echo"]
        worker.join(timeout=10)
        assert in_flight["r"].status_code == 200  # finished on the pool it started with
        assert _chat(gw, "now passable", model="echo").status_code == 200
        routed = _chat(gw, "now routable", atlas={"allowed_pairs": ["echo@@calculator"]})
        assert routed.status_code == 200 and routed.json()["atlas"]["pair"] == "echo@@calculator"
        assert [m["id"] for m in httpx.get(f"{gw}/v1/models").json()["data"]] == ["atlas", "slow", "echo"]
        pool_file.write_text("models: [broken")
        bad = httpx.post(f"{gw}/admin/reload")
        assert bad.status_code == 400 and "still serving the previous pool" in bad.json()["error"]["message"]
        assert _chat(gw, "still up", model="echo").status_code == 200
        assert 'atlas_reloads_total{outcome="failed"} 1.0' in httpx.get(f"{gw}/metrics").text


def test_cli_serve_reloads_on_sighup_and_drains_on_sigterm(upstream, tmp_path):
    url, _ = upstream
    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(yaml.safe_dump(pool_config(url, ["slow"])))
    port = free_port()
    env = {**os.environ, "ATLAS_API_KEYS": "cli-key-1,cli-key-2"}
    proc = subprocess.Popen([sys.executable, "-m", "atlas_router", "serve", "--pool", str(pool_file), "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    gw = f"http://127.0.0.1:{port}"
    auth = {"authorization": "Bearer cli-key-2"}
    try:
        deadline = time.time() + 30
        while True:
            try:
                if httpx.get(f"{gw}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else "slow start"
            time.sleep(0.05)
        assert httpx.get(f"{gw}/v1/models").status_code == 401
        assert [m["id"] for m in httpx.get(f"{gw}/v1/models", headers=auth).json()["data"]] == ["atlas", "slow"]
        pool_file.write_text(yaml.safe_dump(pool_config(url, ["slow", "echo"])))
        proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while [m["id"] for m in httpx.get(f"{gw}/v1/models", headers=auth).json()["data"]] != ["atlas", "slow", "echo"]:
            assert time.time() < deadline, "SIGHUP did not reload the pool"
            time.sleep(0.05)
        result = {}
        worker = threading.Thread(target=lambda: result.update(r=httpx.post(
            f"{gw}/v1/chat/completions", headers=auth, timeout=20,
            json={"model": "atlas", "messages": [{"role": "user", "content": "drain"}]})))
        worker.start()
        time.sleep(0.4)  # the slow upstream takes 1.5 s: the request is in flight
        proc.send_signal(signal.SIGTERM)
        worker.join(timeout=20)
        assert result["r"].status_code == 200 and "slow says: drain" in result["r"].text
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    logs = proc.stderr.read()
    assert '"msg": "pool reloaded"' in logs and '"added": ["echo"]' in logs
    assert "cli-key" not in logs
