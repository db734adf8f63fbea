"""The routing gateway through the official openai client and plain HTTP, against loopback upstreams:
routed and passed-through completions, streaming, the ``atlas`` field and headers, per-request overrides,
models, health and metrics."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest

from atlas_router.routers.base import Decision

from support.gateway_helpers import NONE_TOOL, client, gateway, http_pool
from support.servers import running_server
from support.stub_upstream import create_stub_upstream

CALC = {"name": "calculator", "kind": "calculator"}


class ClusterLikeRouter:
    """A router object with the Router interface (``route(queries, alpha)``): below alpha 0.5 it prefers
    quality (model ``strong``), above it cost (model ``cheap``); explanations carry a cluster and top pairs
    like the cluster router's, and a ranking. Records the batches it was called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], float | None]] = []
        self.lock = threading.Lock()

    def route(self, queries, alpha=None):
        with self.lock:
            self.calls.append((list(queries), alpha))
        order = [("cheap", "none"), ("strong", "none")]
        if (alpha or 0.0) <= 0.5:
            order.reverse()
        return [Decision(*order[0], 0.75, {"cluster": 3, "distance": 0.25, "ood": False}, order) for _ in queries]


@pytest.fixture(scope="module")
def upstream():
    app = create_stub_upstream()
    with running_server(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def default_gw(upstream):
    """A gateway with no router loaded: ``atlas`` uses the default rule."""
    url, _ = upstream
    with gateway(http_pool(url, ["echo", "strong"], tools=[NONE_TOOL, CALC])) as gw:
        yield gw


@pytest.fixture(scope="module")
def routed_gw(upstream):
    url, _ = upstream
    router = ClusterLikeRouter()
    with gateway(http_pool(url, ["strong", "cheap"], prices={"strong": 10.0, "cheap": 0.1}),
                 routers={"atlas-cluster": router}) as gw:
        yield gw, router


def test_openai_client_routed_completion_with_default_rule(default_gw):
    resp = client(default_gw).chat.completions.create(
        model="atlas", messages=[{"role": "user", "content": "What is 6 * 7?"}])
    assert resp.object == "chat.completion" and resp.model == "atlas"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == "echo says: What is 6 * 7?. Final answer: 42"
    assert resp.usage.prompt_tokens == 20 and resp.usage.completion_tokens == 8
    atlas = resp.model_extra["atlas"]
    assert atlas["pair"] == "echo@@none" and atlas["router"] == "default-rule"
    assert "no router loaded" in atlas["explanation"]["rule"]  # the response says the rule was used
    assert atlas["cost"] == pytest.approx((20 * 1.0 + 8 * 2.0) / 1e6)
    assert [a["outcome"] for a in atlas["attempts"]] == ["ok"]


def test_openai_client_streaming(default_gw):
    stream = client(default_gw).chat.completions.create(
        model="atlas", messages=[{"role": "user", "content": "stream a longer reply please"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert text == "echo says: stream a longer reply please. Final answer: 42"
    assert len(with_choices) > 3  # really split into pieces
    assert with_choices[-1].choices[0].finish_reason == "stop"
    assert with_choices[-1].model_extra["atlas"]["pair"] == "echo@@none"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 28


def test_sse_wire_format_and_headers(default_gw):
    body = {"model": "atlas", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", f"{default_gw}/v1/chat/completions", json=body, timeout=10) as r:
        raw = r.read().decode()
        headers = r.headers
    assert r.status_code == 200 and headers["content-type"].startswith("text/event-stream")
    assert headers["x-atlas-pair"] == "echo@@none" and headers["x-atlas-router"] == "default-rule"
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    assert all(e.startswith("data: {") for e in events[:-2])


def test_pool_model_passes_through_with_whole_conversation(default_gw, upstream):
    _, app = upstream
    before = app.state.requests["strong"]
    resp = client(default_gw).chat.completions.create(model="strong", messages=[
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"}, {"role": "user", "content": "second"}])
    assert resp.choices[0].message.content == "strong says: second. Final answer: 42"
    assert resp.model_extra["atlas"]["router"] is None and resp.model_extra["atlas"]["tool"] is None
    assert app.state.requests["strong"] == before + 1


def test_passthrough_streams_too(default_gw):
    stream = client(default_gw).chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "x"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "echo says: x. Final answer: 42"


def test_models_lists_routers_and_pool_models(default_gw, routed_gw):
    assert [m.id for m in client(default_gw).models.list()] == ["atlas", "echo", "strong"]
    gw, _ = routed_gw
    assert [m.id for m in client(gw).models.list()] == ["atlas", "atlas-cluster", "strong", "cheap"]


def test_unknown_model_and_unloaded_router_are_404(default_gw):
    c = client(default_gw)
    with pytest.raises(openai.NotFoundError, match="unknown model 'gpt-9'"):
        c.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError, match="router 'atlas-rl' is not loaded"):
        c.chat.completions.create(model="atlas-rl", messages=[{"role": "user", "content": "x"}])


def test_bad_requests_are_400_in_openai_shape(default_gw):
    c = client(default_gw)
    with pytest.raises(openai.BadRequestError, match="messages"):
        c.chat.completions.create(model="atlas", messages=[])
    r = httpx.post(f"{default_gw}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(f"{default_gw}/v1/chat/completions",
                   json={"model": "atlas", "messages": [{"role": "assistant", "content": "no question"}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_user_message"
    r = httpx.get(f"{default_gw}/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["message"] == "Not Found"


def test_router_decision_explanation_and_cluster_come_back(routed_gw):
    gw, router = routed_gw
    r = httpx.post(f"{gw}/v1/chat/completions", json={"model": "atlas", "messages": [{"role": "user", "content": "q"}]})
    assert r.status_code == 200
    atlas = r.json()["atlas"]
    assert atlas["router"] == "atlas-cluster"  # 'atlas' resolves to the loaded router
    assert atlas["pair"] == "strong@@none" and atlas["cluster"] == 3 and atlas["utility"] == 0.75
    assert atlas["explanation"]["ranking"] == ["strong@@none", "cheap@@none"]
    assert r.headers["x-atlas-cluster"] == "3" and r.headers["x-atlas-model"] == "strong"
    assert float(r.headers["x-atlas-cost"]) == pytest.approx((20 * 10.0 + 8 * 20.0) / 1e6)
    assert r.json()["choices"][0]["message"]["content"].startswith("strong says: q")


def test_alpha_override_reaches_router_from_body_and_header(routed_gw):
    gw, router = routed_gw
    c = client(gw)
    resp = c.chat.completions.create(model="atlas-cluster", messages=[{"role": "user", "content": "cheap please"}],
                                     extra_body={"atlas": {"alpha": 0.9}})
    assert resp.model_extra["atlas"]["pair"] == "cheap@@none"
    assert resp.model_extra["atlas"]["alpha"] == 0.9 and resp.model_extra["atlas"]["alpha_applied"] is True
    assert (["cheap please"], 0.9) in router.calls
    r = httpx.post(f"{gw}/v1/chat/completions", headers={"x-atlas-alpha": "0.8"},
                   json={"model": "atlas", "messages": [{"role": "user", "content": "header alpha"}]})
    assert r.json()["atlas"]["pair"] == "cheap@@none"


def test_allowed_pairs_and_budget_overrides(routed_gw):
    gw, _ = routed_gw
    c = client(gw)
    resp = c.chat.completions.create(model="atlas", messages=[{"role": "user", "content": "q"}],
                                     extra_body={"atlas": {"allowed_pairs": ["cheap@@none"]}})
    assert resp.model_extra["atlas"]["pair"] == "cheap@@none"
    r = httpx.post(f"{gw}/v1/chat/completions", headers={"x-atlas-allowed-pairs": "cheap@@none"},
                   json={"model": "atlas", "messages": [{"role": "user", "content": "q"}]})
    assert r.json()["atlas"]["pair"] == "cheap@@none"
    # strong costs ~100x cheap: a budget between the two estimates leaves only cheap
    resp = c.chat.completions.create(model="atlas", messages=[{"role": "user", "content": "q"}],
                                     extra_body={"atlas": {"max_cost": 0.0005}})
    assert resp.model_extra["atlas"]["pair"] == "cheap@@none"
    assert resp.model_extra["atlas"]["estimated_cost"] <= 0.0005
    with pytest.raises(openai.BadRequestError, match="no allowed pair fits max_cost"):
        c.chat.completions.create(model="atlas", messages=[{"role": "user", "content": "q"}],
                                  extra_body={"atlas": {"max_cost": 1e-9}})
    with pytest.raises(openai.BadRequestError, match="not in the pool: gpt@@none"):
        c.chat.completions.create(model="atlas", messages=[{"role": "user", "content": "q"}],
                                  extra_body={"atlas": {"allowed_pairs": ["gpt@@none"]}})
    with pytest.raises(openai.BadRequestError, match="MODEL@@TOOL"):
        c.chat.completions.create(model="atlas", messages=[{"role": "user", "content": "q"}],
                                  extra_body={"atlas": {"allowed_pairs": ["strong"]}})
    with pytest.raises(openai.BadRequestError, match="alpha must be a number"):
        c.chat.completions.create(model="atlas", messages=[{"role": "user", "content": "q"}],
                                  extra_body={"atlas": {"alpha": "high"}})


def test_concurrent_requests_are_batched_into_one_route_call(routed_gw):
    import asyncio

    gw, router = routed_gw
    n_before = len(router.calls)

    async def burst():
        async with httpx.AsyncClient(timeout=20) as http:
            reqs = [http.post(f"{gw}/v1/chat/completions",
                              json={"model": "atlas-cluster", "messages": [{"role": "user", "content": f"b{i}"}]})
                    for i in range(24)]
            return await asyncio.gather(*reqs)

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    calls = router.calls[n_before:]
    assert sum(len(q) for q, _ in calls) == 24
    assert len(calls) < 24  # some route() calls carried several queries


def test_health_and_metrics(routed_gw):
    gw, _ = routed_gw
    httpx.post(f"{gw}/v1/chat/completions", json={"model": "atlas", "messages": [{"role": "user", "content": "m"}]})
    bad = httpx.post(f"{gw}/v1/chat/completions", json={"model": "atlas", "atlas": {"alpha": -1},
                                                         "messages": [{"role": "user", "content": "m"}]})
    assert bad.status_code == 400
    health = httpx.get(f"{gw}/health").json()
    assert health["status"] == "ok" and health["circuits"] == {"strong": "closed", "cheap": "closed"}
    text = httpx.get(f"{gw}/metrics").text
    assert 'atlas_requests_total{kind="routed",status="200"}' in text
    assert 'atlas_routes_total{model="strong",router="atlas-cluster",tool="none"}' in text
    assert 'atlas_circuit_state{model="strong"} 0.0' in text
    assert "atlas_request_latency_seconds_bucket" in text and "atlas_cost_total" in text
    assert 'atlas_errors_total{kind="bad_atlas_field"}' in text
