"""The OpenAI-compatible backend against real loopback servers: the local model served over HTTP, and an
upstream that fails, stalls and returns malformed bodies on purpose. No record is lost; every failure is
recorded with its cause."""

from __future__ import annotations

import asyncio
import time

import pytest
from fastapi import FastAPI, Request

from atlas_router.config import parse_pool_config
from atlas_router.execution.runner import PairJob, run_pair, run_pairs
from atlas_router.pool.pool import Pool
from atlas_router.serve.model_server import create_model_app
from support.faulty_upstream import create_faulty_app
from support.servers import running_server


def http_pool(url: str, names: list[str], timeout_s: float = 2.0, retries: int = 2, tools=None) -> Pool:
    cfg = parse_pool_config({
        "models": [
            {"name": n, "backend": "openai", "endpoint": f"{url}/v1", "price": {"input": 1.0, "output": 2.0},
             "timeout_s": timeout_s, "max_retries": retries, "sampling": {"max_tokens": 48}}
            for n in names
        ],
        "tools": tools or [{"name": "none", "kind": "none"}],
        "cache": {"enabled": False},
    })
    return Pool(cfg)


@pytest.fixture(scope="module")
def faulty_url():
    with running_server(create_faulty_app()) as url:
        yield url


@pytest.fixture(scope="module")
def local_model_url(local_pool):
    with running_server(create_model_app(local_pool)) as url:
        yield url


def test_local_model_served_over_real_http(local_model_url):
    pool = http_pool(local_model_url, ["smollm2-135m"], timeout_s=120)
    record = asyncio.run(run_pair(pool, "smollm2-135m", "none", "What is the capital city of France? Answer with the city."))
    assert record.error is None, record.error
    assert "paris" in record.response.lower()
    assert record.input_tokens > 10 and record.output_tokens > 0
    assert record.cost == pytest.approx((record.input_tokens * 1.0 + record.output_tokens * 2.0) / 1e6)
    assert record.calls == 1 and record.latency_s > 0


def test_usage_counted_with_tokenizer_when_missing(faulty_url):
    pool = http_pool(faulty_url, ["nousage"])
    record = asyncio.run(run_pair(pool, "nousage", "none", "ping?"))
    assert record.error is None
    assert record.answer == "42"
    assert record.input_tokens > 0 and record.output_tokens > 0  # counted, not taken from the server


def test_retries_recover_from_flaky_and_rate_limited(faulty_url):
    pool = http_pool(faulty_url, ["flaky", "ratelimit"], retries=3)
    records = asyncio.run(run_pairs(pool, [PairJob(m, "none", f"q{i}") for m in ("flaky", "ratelimit") for i in range(6)], concurrency=4))
    assert all(r.error is None for r in records), [r.error for r in records if r.error]
    assert all(r.answer == "42" for r in records)


def test_every_failure_recorded_with_its_cause(faulty_url):
    pool = http_pool(faulty_url, ["ok", "fail", "stall", "malformed", "badshape", "unauthorized"], timeout_s=0.5, retries=1)
    jobs = [PairJob(m, "none", f"question {i}", key=(m, i)) for m in ("ok", "fail", "stall", "malformed", "badshape", "unauthorized") for i in range(3)]
    seen = []
    start = time.perf_counter()
    records = asyncio.run(run_pairs(pool, jobs, concurrency=8, on_done=lambda j, r: seen.append(j.key)))
    elapsed = time.perf_counter() - start
    assert len(records) == len(jobs) and sorted(seen) == sorted(j.key for j in jobs)  # none lost
    by_model = {}
    for job, rec in zip(jobs, records):
        assert (rec.model, rec.question) == (job.model, job.question)
        by_model.setdefault(rec.model, []).append(rec)
    assert all(r.error is None and r.answer == "42" for r in by_model["ok"])
    assert all("HTTP 500" in r.error and "2 tries" in r.error for r in by_model["fail"])
    assert all("timeout after 0.5s" in r.error for r in by_model["stall"])
    assert all("malformed response body" in r.error for r in by_model["malformed"])
    assert all("malformed response body (KeyError)" in r.error for r in by_model["badshape"])
    assert all("HTTP 401" in r.error for r in by_model["unauthorized"])
    assert elapsed < 30  # stalls are bounded by the timeout, not by the server


def test_unreachable_endpoint_is_recorded():
    from support.servers import free_port

    pool = http_pool(f"http://127.0.0.1:{free_port()}", ["ok"], retries=1)
    record = asyncio.run(run_pair(pool, "ok", "none", "hello"))
    assert record.error and "connection failed" in record.error


def test_response_cache_makes_reruns_free(faulty_url, tmp_path):
    cfg = parse_pool_config({
        "models": [{"name": "flaky", "backend": "openai", "endpoint": f"{faulty_url}/v1"}],
        "tools": [{"name": "none", "kind": "none"}],
        "cache": {"enabled": True, "dir": str(tmp_path)},
    })
    import os

    os.environ.pop("ATLAS_CACHE_DIR", None)
    pool = Pool(cfg)
    model = pool.model("flaky")
    first = asyncio.run(model.chat([{"role": "user", "content": "same"}]))
    second = asyncio.run(model.chat([{"role": "user", "content": "same"}]))
    assert not first.cached and second.cached and second.text == first.text


def connection_counting_app(ports: list[int], delay_s: float = 0.01):
    """A chat endpoint that records the client port of each request: one port per TCP connection."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        ports.append(request.client.port)
        await asyncio.sleep(delay_s)
        return {"choices": [{"message": {"role": "assistant", "content": "Final answer: 42"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3}}

    return app


def test_models_on_one_upstream_share_one_keep_alive_pool():
    from atlas_router.models import http_clients

    ports: list[int] = []
    with running_server(connection_counting_app(ports)) as url:
        cfg = parse_pool_config({
            "models": [{"name": n, "backend": "openai", "endpoint": f"{url}/v1", "max_concurrency": 32}
                       for n in ("a", "b")],
            "tools": [{"name": "none", "kind": "none"}],
            "cache": {"enabled": False},
        })

        async def go():
            pool = Pool(cfg)
            jobs = [PairJob(m, "none", f"q{i}") for i in range(96) for m in ("a", "b")]
            records = await run_pairs(pool, jobs, concurrency=32)
            shared = pool.model("a")._http() is pool.model("b")._http()
            open_clients = http_clients.shared_count()
            client = pool.model("a")._http()
            await pool.aclose()
            return records, shared, open_clients, client.is_closed

        records, shared, open_clients, closed = asyncio.run(go())
    assert all(r.error is None and r.answer == "42" for r in records)
    assert shared and open_clients == 1  # one pool for the upstream, whichever model calls it
    assert closed  # the last model to close lets the connections go
    # 192 calls, at most 32 at once: kept-alive connections are reused (a client that keeps fewer idle
    # connections than calls in flight opens a new connection for most calls)
    assert len(ports) == 192 and len(set(ports)) <= 32, len(set(ports))


def test_run_pairs_keeps_job_order_and_bounds_concurrency():
    live = {"now": 0, "peak": 0}
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        live["now"] += 1
        live["peak"] = max(live["peak"], live["now"])
        await asyncio.sleep(0.02)
        live["now"] -= 1
        question = body["messages"][-1]["content"]
        return {"choices": [{"message": {"role": "assistant", "content": f"Final answer: {question}"}}]}

    with running_server(app) as url:
        pool = http_pool(url, ["m"], retries=0)
        jobs = [PairJob("m", "none", str(i)) for i in range(40)]
        done: list[str] = []
        records = asyncio.run(run_pairs(pool, jobs, concurrency=6, on_done=lambda j, r: done.append(j.question)))
    assert [r.question for r in records] == [j.question for j in jobs]
    assert [r.answer for r in records] == [str(i) for i in range(40)]
    assert sorted(done, key=int) == [str(i) for i in range(40)]
    assert live["peak"] == 6  # workers keep exactly `concurrency` calls in flight


def test_model_calls_go_through_the_proxy_the_environment_names(monkeypatch):
    """Model calls honour HTTP_PROXY as httpx does (a user behind a corporate proxy): a loopback forward
    proxy receives the request in absolute form and its answer is the model's."""
    from atlas_router.models.base import SamplingParams

    seen: list[bytes] = []
    reply = (b'{"choices":[{"message":{"role":"assistant","content":"Final answer: via proxy"},'
             b'"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":3}}')

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.split(b"\r\n")[0])
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                     + str(len(reply)).encode() + b"\r\nconnection: close\r\n\r\n" + reply)
        await writer.drain()
        writer.close()

    async def go() -> str:
        server = await asyncio.start_server(proxy, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        pool = http_pool("http://models.example.invalid:8000", ["m"], retries=0)
        try:
            completion = await pool.model("m").chat([{"role": "user", "content": "hi"}], SamplingParams())
        finally:
            await pool.aclose()
            server.close()
        return completion.text

    assert asyncio.run(go()) == "Final answer: via proxy"
    assert seen == [b"POST http://models.example.invalid:8000/v1/chat/completions HTTP/1.1"]


def test_model_calls_trust_the_certificates_the_environment_names(monkeypatch):
    """An HTTPS upstream whose certificate only SSL_CERT_FILE vouches for (a private CA, as on a company
    network) is reached; without it the call fails as unverified, never silently unchecked."""
    import ssl
    from pathlib import Path

    from atlas_router.models.base import SamplingParams

    support = Path(__file__).parent / "support"
    reply = (b'{"choices":[{"message":{"role":"assistant","content":"Final answer: over TLS"},'
             b'"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":3}}')

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # the client refused the certificate
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                     + str(len(reply)).encode() + b"\r\n\r\n" + reply)
        await writer.drain()
        writer.close()

    async def call(trust: bool) -> str:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(support / "loopback_tls.crt", support / "loopback_tls.key")
        server = await asyncio.start_server(upstream, "127.0.0.1", 0, ssl=tls)
        port = server.sockets[0].getsockname()[1]
        if trust:
            monkeypatch.setenv("SSL_CERT_FILE", str(support / "loopback_tls.crt"))
        else:
            monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        pool = http_pool(f"https://127.0.0.1:{port}", ["m"], retries=0)
        try:
            return (await pool.model("m").chat([{"role": "user", "content": "hi"}], SamplingParams())).text
        finally:
            await pool.aclose()
            server.close()

    assert asyncio.run(call(trust=True)) == "Final answer: over TLS"
    with pytest.raises(Exception, match="(?i)certificate"):
        asyncio.run(call(trust=False))


def test_model_calls_keep_no_cookies_an_upstream_sets():
    """Hosted APIs set cookies on every reply; the pool's shared client must neither keep them nor send
    them with later calls (they would travel with every user's request, and cost CPU on each)."""
    seen: list[str | None] = []
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        from fastapi.responses import JSONResponse

        seen.append(request.headers.get("cookie"))
        reply = JSONResponse({"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                              "choices": [{"index": 0, "message": {"role": "assistant", "content": "42"},
                                           "finish_reason": "stop"}],
                              "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})
        reply.set_cookie("__cf_bm", "abc123", httponly=True)
        return reply

    with running_server(app) as url:
        host_url = url.replace("127.0.0.1", "localhost")  # a cookie jar would keep a named host's cookies
        pool = http_pool(host_url, ["m"], retries=0)

        async def go():
            records = await run_pairs(pool, [PairJob("m", "none", f"q{i}") for i in range(3)], concurrency=1)
            await pool.aclose()
            return records

        records = asyncio.run(go())
    assert all(r.error is None and r.answer == "42" for r in records)
    assert seen == [None, None, None]
