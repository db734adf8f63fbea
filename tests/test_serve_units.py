"""The gateway's parts on their own: breaker state machine, admission queue, router decisions, request
overrides, routed-question assembly, JSON reads."""

from __future__ import annotations

import asyncio

import pytest

from atlas_router.config import ToolSpec, parse_pool_config
from atlas_router.execution.prompts import BASE_SYSTEM
from atlas_router.execution.runner import pair_messages
from atlas_router.serve.admission import Admission, Rejected
from atlas_router.serve.breaker import BreakerBoard, CircuitBreaker, State
from atlas_router.serve.controller import estimate_cost
from atlas_router.serve.request import GatewayError, Overrides, atlas_headers, question_of
from atlas_router.tools.none import NoTool
from atlas_router.routers.base import Decision
from atlas_router.serve.registry import DefaultRule, RouterRegistry, call_route, parse_pair, route_result


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_breaker_opens_after_consecutive_failures_and_half_opens_once():
    clock, changes = Clock(), []
    b = CircuitBreaker(failures=3, cooldown_s=10, clock=clock, on_change=changes.append)
    b.failure(); b.failure(); b.success(); b.failure(); b.failure()
    assert b.state is State.CLOSED  # the success reset the count
    b.failure()
    assert b.state is State.OPEN and not b.allow() and b.retry_after_s() == 10
    clock.t = 9.5
    assert not b.allow() and b.retry_after_s() == pytest.approx(0.5)
    clock.t = 10
    assert b.allow() and not b.allow()  # one trial at a time
    b.failure()
    assert b.state is State.OPEN
    clock.t = 20
    assert b.allow()
    b.release()  # the trial never reached the upstream: another may go
    assert b.allow()
    b.success()
    assert b.state is State.CLOSED and b.allow() and b.allow()
    assert changes == [State.OPEN, State.HALF_OPEN, State.OPEN, State.HALF_OPEN, State.CLOSED]


def test_breaker_board_reports_every_model():
    seen = {}
    board = BreakerBoard(1, 5, on_change=lambda m, s: seen.__setitem__(m, s))
    board["a"].failure()
    board["b"]
    assert board.states() == {"a": "open", "b": "closed"} and seen == {"a": State.OPEN, "b": State.CLOSED}


async def test_admission_queues_then_refuses():
    adm = Admission(max_concurrency=2, max_queue=1, queue_timeout_s=5)
    release = asyncio.Event()

    async def hold():
        async with adm.slot():
            await release.wait()

    holders = [asyncio.create_task(hold()) for _ in range(3)]  # 2 run, 1 waits
    for _ in range(100):
        if adm.admitted == 3:
            break
        await asyncio.sleep(0)
    assert (adm.running, adm.waiting) == (2, 1)
    with pytest.raises(Rejected, match="2 running and 1 waiting"):
        async with adm.slot():
            pass
    release.set()
    await asyncio.gather(*holders)
    assert (adm.running, adm.waiting) == (0, 0)


async def test_admission_wait_times_out():
    adm = Admission(max_concurrency=1, max_queue=5, queue_timeout_s=0.05)
    async with adm.slot():
        with pytest.raises(Rejected, match="waited"):
            async with adm.slot():
                pass
        assert adm.waiting == 0


def test_a_decision_becomes_the_gateways_ranking():
    import numpy as np

    r = route_result(Decision("m1", "none", np.float32(0.5),
                              {"cluster": np.int64(4), "distance": np.float64(0.1), "ood": np.bool_(True)},
                              [("m2", "calc"), ("m1", "none"), ("m3", "none")]))
    assert r.ranking == [("m1", "none"), ("m2", "calc"), ("m3", "none")]  # the chosen pair first, once
    assert r.utility == 0.5 and r.explanation["cluster"] == 4 and r.explanation["ood"] is True
    assert route_result(Decision("x", "y", float("nan"))).utility is None
    with pytest.raises(TypeError, match="not a Decision"):
        route_result({"model": "x", "tool": "y"})


def test_call_route_routes_at_the_requests_alpha():
    class Router:
        def route(self, queries, alpha=None):
            return [Decision("m", str(alpha), 0.0) for _ in queries]

    class Broken:
        def route(self, queries, alpha=None):
            return []

    assert call_route(Router(), ["q"], 0.3)[0].ranking == [("m", "0.3")]
    assert call_route(Router(), ["q", "r"], None)[1].ranking == [("m", "None")]
    with pytest.raises(RuntimeError, match="0 decisions for 1 queries"):
        call_route(Broken(), ["q"], None)


def test_registry_resolves_atlas_to_the_best_loaded_router():
    cfg = parse_pool_config({"models": [{"name": "a", "backend": "openai", "endpoint": "http://x/v1"}],
                             "tools": [{"name": "calc", "kind": "calculator"}]})
    reg = RouterRegistry(DefaultRule(lambda: cfg))
    name, rule = reg.resolve("atlas")
    assert name == "default-rule" and rule.route(["q"])[0].tool == "calc"  # no 'none' tool: the first tool
    cluster, rl = DefaultRule(lambda: cfg), DefaultRule(lambda: cfg)
    reg.register("atlas-rl", rl)
    reg.register("atlas-cluster", cluster)
    assert reg.resolve("atlas") == ("atlas-cluster", cluster) and reg.resolve("atlas-hybrid") is None
    assert reg.names() == ["atlas", "atlas-cluster", "atlas-rl"]
    with pytest.raises(ValueError, match="router name must be one of"):
        reg.register("my-router", cluster)


def test_overrides_parse_and_refuse_bad_values():
    ov = Overrides.parse({"alpha": 0.2, "allowed_pairs": ["a@@none"]}, {"x-atlas-alpha": "0.9", "x-atlas-max-cost": "0.01"})
    assert ov == Overrides(0.2, 0.01, frozenset({("a", "none")}))  # the body wins over headers
    assert Overrides.parse(None, {"x-atlas-allowed-pairs": "a@@none, b@@calc"}).allowed_pairs == {("a", "none"), ("b", "calc")}
    for body, match in [({"alpha": "x"}, "alpha must be a number"), ({"alpha": 1.5}, r"in \[0, 1\]"), ({"max_cost": -1}, ">= 0"),
                        ({"allowed_pairs": []}, "non-empty list"), ({"allowed_pairs": ["a@@"]}, "MODEL@@TOOL"),
                        ({"budget": 1}, "unknown 'atlas' field"), ("fast", "must be an object")]:
        with pytest.raises(GatewayError, match=match):
            Overrides.parse(body, {})
    with pytest.raises(ValueError):
        parse_pair("a@@b@@c")
    # from an ASGI scope: only x-atlas-* headers are read; nothing asked gives the empty overrides
    raw = [(b"authorization", b"Bearer k"), (b"x-atlas-alpha", b"0.3"), (b"content-type", b"application/json")]
    assert atlas_headers(raw) == {"x-atlas-alpha": "0.3"}
    assert Overrides.parse(None, atlas_headers(raw)) == Overrides(alpha=0.3)
    assert Overrides.parse(None, atlas_headers(raw[:1])) == Overrides()


def test_routed_conversation_keeps_its_turns_and_refuses_empty():
    """The router sees the last user message; the pair gets the turns, its own system prompt in front."""
    conversation = [{"role": "system", "content": "be terse"}, {"role": "user", "content": "2+2?"},
                    {"role": "assistant", "content": "4"},
                    {"role": "user", "content": [{"type": "text", "text": "and 3+3?"}, {"type": "image_url"}]}]
    assert question_of([{"role": "user", "content": "just this"}]) == "just this"
    assert question_of(conversation) == "and 3+3?"
    turns = pair_messages(NoTool(ToolSpec(name="none", kind="none")), conversation)
    assert [t["role"] for t in turns] == ["system", "user", "assistant", "user"]
    assert turns[0]["content"] == f"{BASE_SYSTEM}\n\nbe terse"  # the pair's prompt first, the caller's after it
    assert turns[1:] == conversation[1:]
    assert "Conversation so far" not in str(turns)
    with pytest.raises(GatewayError, match="no user message"):
        question_of([{"role": "system", "content": "hi"}])
    with pytest.raises(GatewayError, match="empty"):
        question_of([{"role": "user", "content": "  "}])


def test_cost_estimate_grows_with_tool_calls_and_price():
    cfg = parse_pool_config({
        "models": [{"name": "a", "backend": "openai", "endpoint": "http://x/v1", "price": {"input": 1, "output": 2}}],
        "tools": [{"name": "none", "kind": "none"}, {"name": "calc", "kind": "calculator"},
                  {"name": "prm", "kind": "prm", "settings": {"n": 4}}]})
    one = estimate_cost(cfg, ("a", "none"), 400, 100)
    assert one == pytest.approx((250 * 1 + 100 * 2) / 1e6)
    assert estimate_cost(cfg, ("a", "calc"), 400, 100) == pytest.approx(2 * one)
    assert estimate_cost(cfg, ("a", "prm"), 400, 100) == pytest.approx(4 * one)


def test_shipped_gateway_config_holds_the_defaults():
    from pathlib import Path

    import atlas_router
    from atlas_router.serve.settings import GatewaySettings, load_gateway_settings

    shipped = Path(atlas_router.__file__).parent / "resources" / "gateway.yaml"
    assert load_gateway_settings(shipped) == GatewaySettings()


async def test_batcher_answers_its_queue_before_closing():
    import threading

    from atlas_router.serve.registry import Batcher

    class SlowRouter:
        def __init__(self):
            self.batches = []
            self.gate = threading.Event()

        def route(self, queries, alpha=None):
            self.gate.wait(5)
            self.batches.append(list(queries))
            return [Decision("m", q, 0.0) for q in queries]

    router = SlowRouter()
    b = Batcher(router)
    first = asyncio.create_task(b.route("a", None))
    await asyncio.sleep(0.05)  # 'a' is being routed; the next ones queue behind it
    rest = [asyncio.create_task(b.route(q, None)) for q in ("b", "c")]
    await asyncio.sleep(0)
    b.close()
    router.gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, *rest), 5)
    assert [r.ranking for r in results] == [[("m", "a")], [("m", "b")], [("m", "c")]]
    assert router.batches == [["a"], ["b", "c"]]  # one route() call for what queued meanwhile


def test_settle_gc_freezes_the_startup_heap_only_for_the_servers_own_process():
    """A gateway started with settle_gc (as ``atlas serve`` does) freezes what start-up left and collects
    the young generation less often; one built as a library object leaves the host process's collector
    alone. In a fresh interpreter: the freeze is process-wide."""
    import subprocess
    import sys

    script = """
import gc, sys
from fastapi.testclient import TestClient
from atlas_router.serve.gateway import create_gateway_app
from atlas_router.serve.heap import GEN0_THRESHOLD
settle = sys.argv[1] == "1"
before = gc.get_threshold()
with TestClient(create_gateway_app(settle_gc=settle)) as client:
    assert client.get("/health").status_code == 200
    frozen, threshold = gc.get_freeze_count(), gc.get_threshold()
if settle:
    assert frozen > 10000, frozen
    assert threshold == (GEN0_THRESHOLD, before[1], before[2]), threshold
    gc.collect()  # a cycle made after the freeze is still collected
    class Node: pass
    a, b = Node(), Node(); a.b, b.a = b, a
    import weakref; ref = weakref.ref(a); del a, b
    gc.collect(); assert ref() is None
else:
    assert frozen == 0 and threshold == before, (frozen, threshold)
print("ok")
"""
    for settle in ("1", "0"):
        out = subprocess.run([sys.executable, "-c", script, settle], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


@pytest.mark.parametrize("raw", [
    b'{"model": "atlas", "messages": [{"role": "user", "content": "hi \\u00e9 \\ud83d\\ude00"}]}',
    b'{"seed": 123456789012345678901234567890, "n": 1}',  # past 64 bits: orjson would read a float
    b'{"a": NaN, "b": Infinity, "c": -1e400}',  # the standard library takes these, orjson refuses them
    b'{"a": "\\ud800", "b": "\\udc00"}',  # lone surrogates: the same
    b'{"a": 1, "a": 2, "x": [1.5e308, -0.0, 1e-400, "\\u0000"]}',
    b'\xff\xfe{\x00}\x00',  # UTF-16 with its byte-order mark: only the standard library reads it
])
def test_json_loads_reads_what_the_standard_library_reads(raw):
    """The gateway reads upstream replies through orjson where it can: the values must be the standard
    library's, including where orjson alone would refuse the text or read an integer as a float."""
    import json
    import math

    from atlas_router.core.jsonio import json_loads

    def same(a, b):
        if isinstance(a, float) and math.isnan(a):
            return isinstance(b, float) and math.isnan(b)
        if isinstance(a, dict):
            return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, list):
            return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return type(a) is type(b) and a == b and str(a) == str(b)

    assert same(json_loads(raw), json.loads(raw))


@pytest.mark.parametrize("raw, error", [
    (b'{"model": "atlas", "messages": [], "temperature": NaN}', "temperature: must be a finite number, not NaN"),
    (b'{"model": "atlas", "messages": [], "top_p": 1e999}', "top_p: must be a finite number, not 1e999"),
    (b'{"model": "a\\ud800", "messages": []}', "model: contains a lone UTF-16 surrogate"),
    (b'[1, 2]', "request body must be a JSON object, not list"),
    (b'{"model": "atlas",', "request body is not valid JSON"),
])
def test_request_body_errors_name_the_field_whichever_parser_reads_it(raw, error):
    """The fast read (orjson) hands every body it refuses to the careful one, which names what is wrong."""
    from atlas_router.serve.openai_schema import RequestError, parse_json_body

    with pytest.raises(RequestError) as caught:
        parse_json_body(raw)
    assert str(caught.value).startswith(error)
    assert parse_json_body(b'{"seed": 123456789012345678901234567890}') == {"seed": 123456789012345678901234567890}


async def test_a_json_reply_is_sent_before_its_bookkeeping_which_runs_even_if_sending_fails():
    """The chat reply's bookkeeping (counts, record, log line) waits until the reply is out, and is not
    lost when the client has gone and sending raises."""
    from atlas_router.serve.gateway import _JsonReply

    events: list[str] = []

    async def send(message: dict) -> None:
        events.append(message["type"])

    reply = _JsonReply({"ok": True}, after=lambda: events.append("settled"))
    await reply({"type": "http"}, None, send)
    assert events == ["http.response.start", "http.response.body", "settled"]

    events.clear()

    async def broken(message: dict) -> None:
        events.append(message["type"])
        raise OSError("client gone")

    with pytest.raises(OSError):
        await _JsonReply({"ok": True}, after=lambda: events.append("settled"))({"type": "http"}, None, broken)
    assert events == ["http.response.start", "settled"]
