"""The gateway under hostile input: numbers no upstream can take, lone surrogates, out-of-range
parameters and broken JSON get a 400 naming the field (never a 500), and the circuit breaker gets its
trial slot back after any outcome, cancellation included; a reload closes every circuit."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from atlas_router.serve.breaker import State
from atlas_router.serve.controller import Controller
from atlas_router.serve.request import GatewayError, Overrides
from atlas_router.serve.metrics import GatewayMetrics
from atlas_router.serve.openai_schema import parse_chat_request
from atlas_router.serve.registry import DefaultRule, RouterRegistry
from atlas_router.serve.settings import GatewaySettings
from support.gateway_helpers import gateway, http_pool
from support.servers import running_server
from support.stub_upstream import create_stub_upstream

HEADERS = {"content-type": "application/json"}


def body(model: str, extra: str = "", content: str = '"hi"') -> str:
    return '{"model": "%s", "messages": [{"role": "user", "content": %s}]%s}' % (model, content, extra)


@pytest.fixture(scope="module")
def upstream():
    app = create_stub_upstream(slow_s=3.0)
    with running_server(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def gw(upstream):
    with gateway(http_pool(upstream[0], ["echo"])) as url:
        yield url


BAD = [  # (raw fragment after messages, the parameter the error must name)
    (', "temperature": NaN', "temperature"),
    (', "temperature": Infinity', "temperature"),
    (', "top_p": -Infinity', "top_p"),
    (', "temperature": -1e309', "temperature"),
    (', "temperature": 5', "temperature"),
    (', "temperature": -1', "temperature"),
    (', "top_p": 0', "top_p"),
    (', "top_p": 1.5', "top_p"),
    (', "n": 0', "n"),
    (', "n": -1', "n"),
    (', "n": 1000', "n"),
    (', "max_tokens": 1e30', "max_tokens"),
    (', "max_tokens": 0', "max_tokens"),
    (', "max_completion_tokens": -5', "max_completion_tokens"),
    (', "presence_penalty": 2.5', "presence_penalty"),
    (', "frequency_penalty": -3', "frequency_penalty"),
    (', "top_logprobs": 3', "top_logprobs"),
    (', "logprobs": true, "top_logprobs": 21', "top_logprobs"),
    (', "stop": ["a", "b", "c", "d", "e"]', "stop"),
    (', "tool_choice": "auto"', "tool_choice"),
    (', "response_format": {"type": "xml"}', "response_format"),
    (', "seed": 1e400', "seed"),
]


@pytest.mark.parametrize("model", ["echo", "atlas"])
def test_out_of_range_and_non_finite_numbers_are_400_naming_the_field(upstream, gw, model):
    url, app = upstream
    before = app.state.requests["echo"]
    for fragment, param in BAD:
        r = httpx.post(f"{gw}/v1/chat/completions", content=body(model, fragment), headers=HEADERS)
        assert r.status_code == 400, (fragment, r.status_code, r.text)
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error", fragment
        assert param in error["message"] and (error["param"] in (param, None)), (fragment, error)
    assert app.state.requests["echo"] == before  # nothing reached the upstream
    assert httpx.post(f"{gw}/v1/chat/completions", content=body(model, ', "temperature": 2, "n": 1'),
                      headers=HEADERS).status_code == 200  # the edges of the ranges are allowed


@pytest.mark.parametrize("model", ["echo", "atlas"])
def test_lone_surrogates_are_400_and_valid_pairs_pass(gw, model):
    r = httpx.post(f"{gw}/v1/chat/completions", content=body(model, content='"bad \\ud800 text"'), headers=HEADERS)
    assert r.status_code == 400 and "surrogate" in r.json()["error"]["message"]
    assert "messages[0].content" in r.json()["error"]["message"]
    r = httpx.post(f"{gw}/v1/chat/completions", content=body(model, ', "user": "\\udfff"'), headers=HEADERS)
    assert r.status_code == 400 and r.json()["error"]["param"] == "user"
    ok = httpx.post(f"{gw}/v1/chat/completions", content=body(model, content='"smile \\ud83d\\ude00"'), headers=HEADERS)
    assert ok.status_code == 200 and "\U0001F600" in ok.json()["choices"][0]["message"]["content"]


def test_malformed_bodies_get_a_sentence(gw):
    cases = {
        b'{"model": "echo", "messages": [': "not valid JSON: Expecting value at line 1, column 32",
        b'{"model": "echo" "messages": []}': "not valid JSON: Expecting ',' delimiter at line 1, column 18",
        b"": "request body is empty",
        b"[1, 2]": "must be a JSON object, not list",
        b'{"model": "echo", "messages": []}': "messages: List should have at least 1 item",
        b'{"messages": [{"role": "user", "content": "x"}]}': "model: Field required",
        b'{"model": "echo", "messages": [{"role": "robot", "content": "x"}]}': "messages.0.role",
        b'{"model": "echo", "messages": [{"role": "user", "content": null}]}': "a 'user' message needs content",
        b'{"model": "echo", "messages": [{"role": "user", "content": "\xff"}]}': "not UTF-8",
    }
    for raw, expected in cases.items():
        r = httpx.post(f"{gw}/v1/chat/completions", content=raw, headers=HEADERS)
        assert r.status_code == 400, raw
        message = r.json()["error"]["message"]
        assert expected in message, (raw, message)
        assert "JSON decode error" not in message


def test_schema_refuses_without_a_server():
    req = parse_chat_request(b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2, '
                             b'"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": '
                             b'{"type": "function", "function": {"name": "f"}}}')
    assert req.n == 2 and req.tools[0].function.name == "f"
    with pytest.raises(ValueError, match="names function 'g'"):
        parse_chat_request(b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": '
                           b'"function", "function": {"name": "f"}}], "tool_choice": {"type": "function", '
                           b'"function": {"name": "g"}}}')


def _controller(pool, **settings) -> Controller:
    holder = {}
    registry = RouterRegistry(DefaultRule(lambda: holder["pool"].config))
    holder["pool"] = pool
    return Controller(pool, registry, GatewaySettings(**settings), GatewayMetrics())


@pytest.mark.parametrize("model", ["slow", "atlas"])
def test_half_open_breaker_recovers_after_a_cancelled_trial(upstream, model):
    """The trial call of a half-open circuit is cancelled mid-flight (a client gone): the slot comes
    back, so the next request is let through instead of 503 forever. Passed through and routed."""
    url, _ = upstream
    controller = _controller(http_pool(url, ["slow"], timeout_s=10), breaker_failures=1, breaker_cooldown_s=0.2,
                             attempt_timeout_s=0.5)
    req = parse_chat_request(body(model).encode())

    async def scenario() -> None:
        breaker = controller.breakers["slow"]
        with pytest.raises(GatewayError):  # the slow upstream misses the 0.5 s limit: the circuit opens
            await controller.complete(req, Overrides())
        assert breaker.state is State.OPEN
        await asyncio.sleep(0.25)
        trial = asyncio.create_task(controller.complete(req, Overrides()))
        await asyncio.sleep(0.1)  # the trial is in flight to the slow upstream
        assert breaker.state is State.HALF_OPEN and not breaker.allow()  # one trial at a time
        trial.cancel()
        with pytest.raises(asyncio.CancelledError):
            await trial
        assert breaker.allow()  # the cancelled trial gave its slot back
        breaker.release()
        await controller.aclose()

    asyncio.run(scenario())


def test_reload_closes_every_circuit(upstream):
    url, _ = upstream
    with gateway(http_pool(url, ["down", "echo"]), breaker_failures=1, breaker_cooldown_s=600) as gw:
        ask = {"model": "down", "messages": [{"role": "user", "content": "x"}]}
        assert httpx.post(f"{gw}/v1/chat/completions", json=ask).status_code == 502
        refused = httpx.post(f"{gw}/v1/chat/completions", json=ask)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "circuit_open"
        assert httpx.get(f"{gw}/health").json()["circuits"]["down"] == "open"
        assert httpx.post(f"{gw}/admin/reload").status_code == 200
        assert httpx.get(f"{gw}/health").json()["circuits"]["down"] == "closed"
        start = time.perf_counter()
        assert httpx.post(f"{gw}/v1/chat/completions", json=ask).status_code == 502  # tried again, not 503
        assert time.perf_counter() - start < 600
