"""A short load test of the gateway (the full one is bench/gateway_load.py): at its nominal load every
request is answered, past it the excess gets 429 with Retry-After, never a 5xx, and it keeps serving."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from support.gateway_helpers import gateway, http_pool
from support.servers import running_server
from support.stub_upstream import create_stub_upstream

MAX_CONCURRENCY, MAX_QUEUE = 8, 8


async def _load(url: str, clients: int, per_client: int) -> tuple[Counter[int], list[httpx.Response]]:
    statuses: Counter[int] = Counter()
    refused: list[httpx.Response] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        async def one_client(c: int) -> None:
            for i in range(per_client):
                r = await http.post(f"{url}/v1/chat/completions",
                                    json={"model": "atlas", "messages": [{"role": "user", "content": f"c{c} r{i}"}]})
                statuses[r.status_code] += 1
                if r.status_code == 429:
                    refused.append(r)

        await asyncio.gather(*(one_client(c) for c in range(clients)))
    return statuses, refused


def test_no_5xx_at_nominal_load_and_429_past_it():
    with running_server(create_stub_upstream(delay_s=0.05)) as up:
        pool = http_pool(up, ["echo"])
        with gateway(pool, max_concurrency=MAX_CONCURRENCY, max_queue=MAX_QUEUE) as gw:
            nominal = MAX_CONCURRENCY + MAX_QUEUE  # every request gets a slot or a place in the queue
            statuses, _ = asyncio.run(_load(gw, nominal, 5))
            assert statuses == Counter({200: nominal * 5})

            statuses, refused = asyncio.run(_load(gw, 64, 3))
            assert sum(statuses.values()) == 64 * 3
            assert statuses[429] > 0 and statuses[200] > 0
            assert set(statuses) <= {200, 429}  # refusals, not failures
            assert all(r.headers["retry-after"] == "1" and r.json()["error"]["type"] == "rate_limit_error"
                       for r in refused)

            health = httpx.get(f"{gw}/health").json()
            assert health["running"] == 0 and health["queued"] == 0  # nothing leaked
            metrics = httpx.get(f"{gw}/metrics").text
            assert f'atlas_requests_total{{kind="routed",status="429"}} {float(statuses[429])}' in metrics
            again = httpx.post(f"{gw}/v1/chat/completions",
                               json={"model": "atlas", "messages": [{"role": "user", "content": "after"}]})
            assert again.status_code == 200


def test_a_full_gateway_refuses_before_parsing_the_request():
    """While every slot and queue place is taken, the AdmissionGate answers 429 without parsing: a body
    that would fail validation (a 400 when the gateway has room) is refused as busy, and the refusal is
    counted under the model's kind."""
    bad = {"model": "atlas", "messages": "not a list"}
    with running_server(create_stub_upstream(delay_s=1.0)) as up:
        pool = http_pool(up, ["echo"])
        with gateway(pool, max_concurrency=1, max_queue=0) as gw:
            assert httpx.post(f"{gw}/v1/chat/completions", json=bad).status_code == 400

            async def hold_and_probe() -> tuple[httpx.Response, httpx.Response]:
                async with httpx.AsyncClient(timeout=30) as http:
                    slow = asyncio.create_task(http.post(f"{gw}/v1/chat/completions", json={
                        "model": "atlas", "messages": [{"role": "user", "content": "hold the slot"}]}))
                    for _ in range(100):  # until the first request holds the only slot
                        if (await http.get(f"{gw}/health")).json()["running"] == 1:
                            break
                        await asyncio.sleep(0.02)
                    probe = await http.post(f"{gw}/v1/chat/completions", json=bad)
                    return await slow, probe

            held, probe = asyncio.run(hold_and_probe())
            assert held.status_code == 200
            assert probe.status_code == 429 and probe.json()["error"]["code"] == "gateway_busy"
            assert probe.headers["retry-after"] == "1" and probe.headers["x-request-id"].startswith("chatcmpl-")
            metrics = httpx.get(f"{gw}/metrics").text
            assert 'atlas_requests_total{kind="routed",status="429"} 1.0' in metrics
