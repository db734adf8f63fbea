"""The gateway's records and feedback: a record per answered request (privacy applied), POST /v1/feedback
(validated, behind the chat keys, fed to the online cluster router), and ``atlas fit`` refitting from the
gateway's records with feedback as the grade. The end-to-end test runs ``atlas serve`` as a real process
on loopback over a loopback upstream pool, restarts it, and fits a router from what it wrote."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from atlas_router.routers.persist import save_router
from atlas_router.records.feedback import feedback_query_id, training_records
from atlas_router.records.schema import query_key
from atlas_router.records.store import RecordStore
from atlas_router.routers.persist import load_router
from atlas_router.routers.cluster import ClusterRouter
from atlas_router.routers.encoders import build_encoder
from atlas_router.serve.auth import KeyRing, digest
from atlas_router.serve.feedback import FeedbackError, parse_feedback
from atlas_router.serve.records_sink import salt_path
from support.gateway_helpers import gateway, http_pool, pool_config
from support.servers import free_port, running_server
from support.stub_upstream import create_stub_upstream

ARITHMETIC = [f"what is {a} plus {a + 3} in arithmetic" for a in range(12)]
HISTORY = [f"which king ruled france in the year {1500 + 7 * a} history" for a in range(12)]
PRICES = {"cheap": 1.0, "strong": 10.0}


@pytest.fixture()
def upstream():
    with running_server(create_stub_upstream()) as url:
        yield url


def _chat(gw: str, question: str, model: str = "atlas", key: str | None = None, **extra) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{gw}/v1/chat/completions", headers=headers, timeout=30,
                      json={"model": model, "messages": [{"role": "user", "content": question}], **extra})


def _feedback(gw: str, body, key: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{gw}/v1/feedback", headers=headers, json=body, timeout=30)


# -- the rule atlas fit applies ---------------------------------------------------------------------
def test_feedback_replaces_the_grade_latest_wins_and_textless_rows_are_left_out():
    base = {"benchmark": "gateway", "tool": "none", "cost": 1e-5, "source": "gateway"}
    rows = [
        {**base, "query_id": "chatcmpl-a", "query": "q a", "model": "m1", "score": 0.9, "grader": "judge:j"},
        {**base, "query_id": "chatcmpl-b", "query": "q b", "model": "m2", "score": math.nan},
        {**base, "query_id": "chatcmpl-c", "query": "", "model": "m1", "score": math.nan},
        {**base, "query_id": "chatcmpl-d", "query": "hmac-sha256:00ff", "model": "m1", "score": math.nan},
        {**base, "query_id": "x1", "query": "collected", "model": "m1", "score": 1.0, "source": "collect"},
        {**base, "query_id": "chatcmpl-e", "query": "q a", "model": "m1", "score": 0.5, "cost": 3e-5},
    ]
    fb = {**base, "source": "feedback", "grader": "feedback:k"}
    rows += [
        {**fb, "query_id": feedback_query_id("chatcmpl-a", 2), "query": "q a", "model": "m1", "score": 0.0},
        {**fb, "query_id": feedback_query_id("chatcmpl-a", 1), "query": "q a", "model": "m1", "score": 1.0},
        {**fb, "query_id": feedback_query_id("chatcmpl-lost", 5), "query": "q lost", "model": "m2", "score": 1.0},
    ]
    out, notes = training_records(RecordStore_rows(rows))
    by_id = {r.query_id: r for r in out.itertuples()}
    qa, lost = query_key("gateway", "q a"), query_key("gateway", "q lost")  # gateway answers keyed by prompt
    assert set(by_id) == {qa, lost, "x1"}
    # chatcmpl-a: its later feedback (0.0) replaced the judge's 0.9; chatcmpl-e (same prompt and pair) averages in
    assert by_id[qa].score == pytest.approx(0.25) and by_id[qa].cost == pytest.approx(2e-5)
    assert by_id[lost].score == 1.0 and by_id[lost].source == "gateway"
    assert by_id["x1"].score == 1.0
    assert any("no prompt text" in n and n.startswith("2 ") for n in notes)
    assert any("no feedback or grade" in n and n.startswith("1 ") for n in notes)
    plain = RecordStore_rows(rows[4:5])
    assert training_records(plain)[0].equals(plain)


def RecordStore_rows(rows: list[dict]) -> pd.DataFrame:
    from atlas_router.records.store import normalize

    return normalize(rows)


def test_feedback_body_validation():
    assert parse_feedback(b'{"id": "chatcmpl-1", "score": 0.25}') == ("chatcmpl-1", 0.25)
    assert parse_feedback(b'{"response_id": "chatcmpl-1", "score": "up"}') == ("chatcmpl-1", 1.0)
    assert parse_feedback(b'{"id": "chatcmpl-1", "score": "Down"}') == ("chatcmpl-1", 0.0)
    for body, param in ((b'{"id": "chatcmpl-1", "score": 1.5}', "score"),
                        (b'{"id": "chatcmpl-1", "score": true}', "score"),
                        (b'{"id": "chatcmpl-1", "score": "meh"}', "score"), (b'{"id": "chatcmpl-1"}', "score"),
                        (b'{"id": "chatcmpl-1", "score": NaN}', "score"), (b'{"score": 1}', "id"),
                        (b'{"id": "chatcmpl-1", "score": 1, "note": "x"}', "note"), (b"[1]", None), (b"{", None)):
        with pytest.raises(FeedbackError) as err:
            parse_feedback(body)
        assert err.value.status == 400 and err.value.param == param


# -- the gateway in process -------------------------------------------------------------------------
@pytest.mark.parametrize("prompts", ["off", "hashed", "full"])
def test_every_answer_is_recorded_with_the_prompt_privacy_applied(upstream, tmp_path, prompts):
    store = tmp_path / "records"
    with gateway(http_pool(upstream, ["cheap", "strong"], prices=PRICES),
                 records={"dir": str(store), "prompts": prompts, "flush_s": 0.05}) as gw:
        routed = _chat(gw, "secret question one")
        passed = _chat(gw, "secret question two", model="strong")
        with httpx.stream("POST", f"{gw}/v1/chat/completions", timeout=30,
                          json={"model": "atlas", "stream": True,
                                "messages": [{"role": "user", "content": "secret question three"}]}) as s:
            streamed_id = next(line for line in s.iter_lines() if line.startswith("data: {"))
        assert routed.status_code == passed.status_code == 200
    df = RecordStore(store).load()
    ids = {routed.json()["id"], passed.json()["id"]}
    assert ids <= set(df["query_id"]) and len(df) == 3 and set(df["source"]) == {"gateway"}
    assert any(i in streamed_id for i in df["query_id"])
    row = df[df["query_id"] == routed.json()["id"]].iloc[0]
    assert (row["model"], row["tool"]) == (routed.json()["atlas"]["model"], "none")
    assert row["cost"] == pytest.approx(routed.json()["atlas"]["cost"]) and row["input_tokens"] == 20
    assert math.isnan(row["score"]) and row["latency_s"] > 0
    strong = df[df["query_id"] == passed.json()["id"]].iloc[0]
    assert strong["model"] == "strong"
    texts = " ".join(df["query"].tolist() + df["response"].tolist())
    if prompts == "full":
        assert set(df["query"]) == {"secret question one", "secret question two", "secret question three"}
        assert "strong says: secret question two" in strong["response"]
    else:
        assert "secret" not in texts
    if prompts == "hashed":
        assert all(q.startswith("hmac-sha256:") and len(q) == 12 + 64 for q in df["query"])
        assert len(set(df["query"])) == 3 and salt_path(store).stat().st_mode & 0o077 == 0
    if prompts == "off":
        assert set(df["query"]) == {""}


def test_feedback_is_validated_keyed_and_written(upstream, tmp_path):
    store = tmp_path / "records"
    keys = KeyRing([digest("k1")])
    with gateway(http_pool(upstream, ["cheap", "strong"], prices=PRICES), keys=keys,
                 records={"dir": str(store), "prompts": "off"}) as gw:
        rid = _chat(gw, "how far is the moon", key="k1").json()["id"]
        assert _feedback(gw, {"id": rid, "score": 1}).status_code == 401
        assert _feedback(gw, {"id": rid, "score": 1}, key="wrong").status_code == 401
        missing = _feedback(gw, {"id": "chatcmpl-000000000000000000000000", "score": 1}, key="k1")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "response_not_found"
        bad = _feedback(gw, {"id": rid, "score": 2}, key="k1")
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "score"
        ok = _feedback(gw, {"id": rid, "score": "down"}, key="k1")
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert body["response_id"] == rid and body["score"] == 0.0 and body["online"] is False
    df = RecordStore(store).load()
    fb = df[df["source"] == "feedback"]
    assert len(fb) == 1 and fb.iloc[0]["query_id"] == body["id"] and fb.iloc[0]["score"] == 0.0
    assert fb.iloc[0]["grader"] == f"feedback:{digest('k1')[:8]}"
    with gateway(http_pool(upstream, ["cheap"])) as gw:  # records off: no feedback endpoint to speak of
        off = _feedback(gw, {"id": rid, "score": 1})
        assert off.status_code == 404 and off.json()["error"]["code"] == "feedback_disabled"


# -- end to end: atlas serve, feedback, restart, atlas fit ------------------------------------------
def _base_router(path: Path) -> None:
    """The served router: fitted on records where the cheap pair also solves history (it is wrong)."""
    rows = []
    for bench, queries in (("arith", ARITHMETIC), ("hist", HISTORY)):
        for i, q in enumerate(queries):
            for model, cost in (("cheap", 3.6e-5), ("strong", 3.6e-4)):
                rows.append({"query_id": f"{bench}{i}", "query": q, "benchmark": bench, "model": model,
                             "tool": "none", "score": 1.0, "cost": cost})
    router = ClusterRouter(k=2, alpha=0.2, n_init=2, shrinkage=0.0, task_weight=0.0)
    router.fit(pd.DataFrame(rows), build_encoder("hashing:256", cache=False))
    save_router(router, path)


def _serve(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "atlas_router", "serve", *args, "--port", str(port)], env=env,
                            stderr=subprocess.PIPE, text=True)
    gw = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            if httpx.get(f"{gw}/health").status_code == 200:
                return proc, gw
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(f"atlas serve did not start: {proc.communicate()[1][-2000:]}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)  # graceful: the sink writes what waits
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean shutdown


def _top(gw: str, question: str) -> dict[str, dict]:
    """The served router's top pairs for a question, by model (this request is recorded too)."""
    atlas = _chat(gw, question).json()["atlas"]
    assert atlas["router"] == "atlas-cluster"
    return {t["model"]: t for t in atlas["explanation"]["top"]}


def test_atlas_serve_feedback_survives_restart_and_atlas_fit_follows_it(upstream, tmp_path):
    env = {**os.environ, "ATLAS_EMBED_CACHE_DIR": str(tmp_path / "embed-cache")}
    env.pop("ATLAS_API_KEYS", None)
    router_file, store = tmp_path / "cluster.json", tmp_path / "records"
    _base_router(router_file)
    pool_file, config = tmp_path / "pool.yaml", tmp_path / "gateway.yaml"
    pool_file.write_text(yaml.safe_dump(pool_config(upstream, ["cheap", "strong"], prices=PRICES)))
    config.write_text(yaml.safe_dump({"records": {"dir": str(tmp_path / "elsewhere"), "flush_s": 0.2}}))
    args = ["--pool", str(pool_file), "--router-file", str(router_file), "--config", str(config), "--records", str(store),
            "--record-prompts", "full"]

    proc, gw = _serve(args, env)
    try:
        assert _chat(gw, HISTORY[0]).json()["atlas"]["pair"] == "cheap@@none"  # the base router's choice
        ids: dict[tuple[str, str], str] = {}
        for q in ARITHMETIC + HISTORY:
            for model in ("cheap", "strong"):
                r = _chat(gw, q, atlas={"allowed_pairs": [f"{model}@@none"]})
                assert r.status_code == 200 and r.json()["atlas"]["model"] == model
                ids[(q, model)] = r.json()["id"]
        for q in ARITHMETIC:  # before the restart: the cheap pair was right, the strong one wrong
            for model, score in (("cheap", 1.0), ("strong", 0.0)):
                r = _feedback(gw, {"id": ids[(q, model)], "score": score})
                assert r.status_code == 200 and r.json()["online"] is True, r.text
        assert _top(gw, HISTORY[0])["cheap"]["n_feedback"] == 0
        counted = _top(gw, ARITHMETIC[0])["cheap"]["n_feedback"]  # the arithmetic questions of its cluster
        assert counted > 0
    finally:
        _stop(proc)

    proc, gw = _serve(args, env)  # restart: feedback counts survive, answers from before are found in the records
    try:
        assert _top(gw, ARITHMETIC[0])["strong"]["n_feedback"] == counted
        for q in HISTORY:
            assert _feedback(gw, {"id": ids[(q, "cheap")], "score": "down"}).json()["online"] is True
            assert _feedback(gw, {"id": ids[(q, "strong")], "score": "up"}).status_code == 200
        top = _top(gw, HISTORY[0])  # the online router counts them at once
        assert top["cheap"]["n_feedback"] > 0 and top["cheap"]["accuracy"] < 1.0
    finally:
        _stop(proc)

    assert not (tmp_path / "elsewhere").exists()  # --records wins over the config's records.dir
    df = RecordStore(store).load()
    assert (df["source"] == "feedback").sum() == 2 * len(ARITHMETIC + HISTORY)
    assert (df["source"] == "gateway").sum() == 2 * len(ARITHMETIC + HISTORY) + 5
    refit = tmp_path / "refit.json"
    fitted = subprocess.run([sys.executable, "-m", "atlas_router", "fit", "cluster", "--records", str(store),
                             "--out", str(refit), "--k", "2", "--shrinkage", "0", "--alpha", "0.2",
                             "--encoder", "hashing:256"], env=env, capture_output=True, text=True, timeout=300)
    assert fitted.returncode == 0, fitted.stderr[-2000:]
    assert "5 gateway records left out: no feedback or grade yet" in fitted.stderr
    router = load_router(refit)
    hist, arith = router.route([HISTORY[3], ARITHMETIC[3]])
    assert (hist.model, arith.model) == ("strong", "cheap")  # the served router sent both to the cheap pair
    top = {t["model"]: t for t in hist.explanation["top"]}
    assert top["cheap"]["accuracy"] == pytest.approx(0.0) and top["strong"]["accuracy"] == pytest.approx(1.0)
    assert np.isfinite(hist.utility)


def test_sink_merges_parts_and_keeps_rows_when_a_write_fails(tmp_path):
    import asyncio
    from types import SimpleNamespace

    from atlas_router.serve.records_sink import RecordSink

    sink = RecordSink(tmp_path / "records", prompts="full", compact_at=3)
    req = SimpleNamespace(messages=[SimpleNamespace(model_dump=lambda **_: {"role": "user", "content": "hi there"})])
    answer = SimpleNamespace(model="m", tool=None, text="hello", cost=1e-6, input_tokens=3, output_tokens=2,
                             latency_s=0.1, router=None, explanation={})

    async def run() -> None:
        for i in range(5):
            sink.answered(f"chatcmpl-{i}", req, answer)
            assert await sink.flush() == 1
        assert len(sink.store.parts()) < 3
        (tmp_path / "records" / "meta.json").write_text("{}")  # the store breaks: rows wait for the next flush
        sink.answered("chatcmpl-late", req, answer)
        assert await sink.flush() == 0 and len(sink._pending) == 1
        RecordStore(tmp_path / "other").append([{"query": "x", "model": "m"}])
        (tmp_path / "records" / "meta.json").write_text((tmp_path / "other" / "meta.json").read_text())
        assert await sink.flush() == 1
        found = await sink.lookup("chatcmpl-late")
        assert found["query"] == "hi there" and found["tool"] == "none"

    asyncio.run(run())
    df = RecordStore(tmp_path / "records").load()
    assert sorted(df["query_id"]) == sorted([f"chatcmpl-{i}" for i in range(5)] + ["chatcmpl-late"])
    assert RecordSink(tmp_path / "records", prompts="full")._stored("chatcmpl-3")["model"] == "m"  # after a restart


def test_latency_budget_drops_pairs_measured_slower_and_says_so():
    with running_server(create_stub_upstream(slow_s=0.4)) as up, gateway(http_pool(up, ["slow", "cheap"])) as gw:
        assert _chat(gw, "first").json()["atlas"]["model"] == "slow"  # the default rule: first model of the pool
        assert _chat(gw, "second", atlas={"allowed_pairs": ["cheap@@none"]}).json()["atlas"]["model"] == "cheap"
        within = _chat(gw, "third", atlas={"max_latency_s": 0.3}).json()["atlas"]
        assert within["model"] == "cheap"
        note = within["explanation"]["latency"]
        assert note["over_budget"] == ["slow@@none"] and note["measured_s"]["slow@@none"] >= 0.4
        assert note["measured_s"]["cheap@@none"] < 0.3 and note["max_latency_s"] == 0.3
        headers = {"x-atlas-max-latency-s": "0"}
        none_fits = httpx.post(f"{gw}/v1/chat/completions", headers=headers, timeout=30,
                               json={"model": "atlas", "messages": [{"role": "user", "content": "fourth"}]})
        assert none_fits.status_code == 400 and none_fits.json()["error"]["code"] == "over_latency_budget"
        assert _chat(gw, "fifth", atlas={"max_latency_s": "soon"}).status_code == 400
        assert _chat(gw, "sixth").json()["atlas"]["explanation"].get("latency") is None  # no budget, no filter


def test_collect_prompts_reads_a_gateway_store_but_never_its_hashes(tmp_path):
    from atlas_router.records.prompts import read_prompts

    store = tmp_path / "records"
    RecordStore(store).append([{"query_id": "chatcmpl-1", "query": "hmac-sha256:" + "0" * 64, "model": "m"},
                               {"query_id": "chatcmpl-2", "query": "a real prompt", "model": "m"}])
    prompts = read_prompts(store)
    assert [e.question for e in prompts.examples] == ["a real prompt"] and prompts.blank == 1
