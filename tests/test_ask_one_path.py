"""``atlas ask`` and the gateway answer by one path (serve/answering.py over the gateway's Controller),
against real loopback upstreams: fallback along the router's ranking with every attempt reported, the same
decision as the gateway for the same router file, records the gateway's way, and images that travel
through a routed gateway request to the pair."""

from __future__ import annotations

import base64
import json

import httpx
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from atlas_router import api
from atlas_router.cli import app
from atlas_router.config import parse_pool_config
from atlas_router.pool.pool import Pool
from atlas_router.records.schema import query_key
from atlas_router.records.store import RecordStore
from support.fake_vlm import SceneBook, create_fake_vlm_app
from support.faulty_upstream import create_faulty_app
from support.gateway_helpers import gateway, pool_config
from support.scenes import bar_chart
from support.servers import running_server

MATH = ["What is {a} plus {b}?", "Compute {a} times {b}.", "What is {a} minus {b}?"]
GEO = ["What is the capital of country number {a}?", "Which river flows through city {a}?",
       "Name the largest lake of region {a}."]


def records(skill: dict[str, dict[str, float]], n: int = 24) -> pd.DataFrame:
    """Records of pairs ``model@@none`` on math and geography questions: score 1 where ``skill`` says so."""
    rows = []
    for topic, templates in (("math", MATH), ("geo", GEO)):
        for i in range(n):
            q = templates[i % len(templates)].format(a=17 * i + 3, b=5 * i + 1)
            for model, by_topic in skill.items():
                rows.append({"query_id": query_key(topic, q), "benchmark": topic, "query": q, "model": model,
                             "tool": "none", "score": by_topic[topic], "cost": 1e-6 if model != "ok" else 2e-6,
                             "input_tokens": 10, "output_tokens": 5, "calls": 1, "source": "synthetic"})
    return pd.DataFrame(rows)


def router_file(tmp_path, skill: dict[str, dict[str, float]], name: str) -> str:
    path = tmp_path / f"{name}.atlas"
    api.save(api.fit(records(skill), "atlas-cluster", encoder="hashing", k=2), path)
    return str(path)


@pytest.fixture(scope="module")
def upstream():
    with running_server(create_faulty_app()) as url:
        yield url


def ask(*args: str) -> tuple[int, dict, str]:
    result = CliRunner().invoke(app, ["ask", "--json", *map(str, args)])
    return result.exit_code, json.loads(result.stdout), result.stderr


def test_ask_falls_back_along_the_ranking_and_reports_every_attempt(upstream, tmp_path):
    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(yaml.safe_dump(pool_config(upstream, ["fail", "ok"])))
    rfile = router_file(tmp_path, {"fail": {"math": 1.0, "geo": 1.0}, "ok": {"math": 0.5, "geo": 0.5}}, "failfirst")
    code, out, _ = ask("--pool", pool_file, "--router-file", rfile, "What is 3 plus 4?")
    assert code == 0
    assert out["routing"]["ranking"][0] == "fail@@none"  # the router's choice, which fails
    assert [(a["model"], a["outcome"]) for a in out["attempts"]] == [("fail", "failed"), ("ok", "ok")]
    assert "BackendError" in out["attempts"][0]["error"]
    assert out["model"] == "ok" and out["error"] is None and out["answer"] == "42"

    # --explain says so on stderr; the plain output stays the answer
    result = CliRunner().invoke(app, ["ask", "--explain", "--pool", str(pool_file), "--router-file", rfile, "What is 3 plus 4?"])
    assert result.exit_code == 0 and result.stdout.strip() == "42"
    assert "routed to fail@@none" in result.stderr and "fail@@none: failed" in result.stderr
    assert "fell back to ok@@none" in result.stderr

    # a named pair runs alone: no fallback, exit status 1 when it fails
    code, out, _ = ask("--pool", pool_file, "--model", "fail", "--tool", "none", "What is 3 plus 4?")
    assert code == 1 and out["error"] and [a["model"] for a in out["attempts"]] == ["fail"]
    assert "routing" not in out

    # no pair answers: exit 1, every attempt listed
    only_fail = tmp_path / "fail.yaml"
    only_fail.write_text(yaml.safe_dump(pool_config(upstream, ["fail", "malformed"])))
    rfile2 = router_file(tmp_path, {"fail": {"math": 1.0, "geo": 1.0}, "malformed": {"math": 0.5, "geo": 0.5}}, "bad")
    code, out, _ = ask("--pool", only_fail, "--router-file", rfile2, "What is 3 plus 4?")
    assert code == 1 and out["error"]
    assert [a["outcome"] for a in out["attempts"]] == ["failed", "failed"]


def test_ask_and_the_gateway_decide_alike_for_one_router_file(upstream, tmp_path):
    pool = pool_config(upstream, ["ok", "nousage"])
    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(yaml.safe_dump(pool))
    rfile = router_file(tmp_path, {"ok": {"math": 1.0, "geo": 0.0}, "nousage": {"math": 0.0, "geo": 1.0}}, "split")
    questions = ["What is 12 plus 30?", "Compute 7 times 9.", "What is the capital of country number 4?",
                 "Which river flows through city 88?", "Name the largest lake of region 5."]
    from atlas_router.serve.loaders import load_router_file

    chosen = set()
    with gateway(Pool(parse_pool_config(pool)), routers={"atlas-cluster": load_router_file(rfile)}) as url:
        for point in ([], ["--alpha", "0.4"], ["--tolerance", "0.5"]):
            for q in questions:
                code, out, _ = ask("--pool", pool_file, "--router-file", rfile, *point, q)
                assert code == 0, out
                extra = {"alpha": 0.4} if "--alpha" in point else {"tolerance": 0.5} if point else {}
                body = httpx.post(f"{url}/v1/chat/completions", timeout=30,
                                  json={"model": "atlas", "messages": [{"role": "user", "content": q}],
                                        **({"atlas": extra} if extra else {})}).json()
                assert out["routing"]["ranking"] == body["atlas"]["explanation"]["ranking"], (q, point)
                assert (out["model"], out["tool"]) == (body["atlas"]["model"], body["atlas"]["tool"]), (q, point)
                chosen.add(out["routing"]["ranking"][0])
    assert chosen == {"ok@@none", "nousage@@none"}  # the router file really routes


def test_ask_records_are_gateway_records(upstream, tmp_path):
    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(yaml.safe_dump(pool_config(upstream, ["ok"])))
    store = tmp_path / "records"
    code, out, _ = ask("--pool", pool_file, "--model", "ok", "--records", store, "What is 3 plus 4?")
    assert code == 0 and out["record_id"].startswith("chatcmpl-")
    rows = RecordStore(store).load()
    assert len(rows) == 1
    row = rows.iloc[0]
    assert (row["query_id"], row["source"], row["benchmark"]) == (out["record_id"], "gateway", "gateway")
    assert (row["model"], row["tool"], row["query"]) == ("ok", "none", "What is 3 plus 4?")
    assert row["cost"] == pytest.approx(out["cost"]) and row["input_tokens"] == 11
    # with the prompt kept off, the text stays out, as the gateway's records.prompts: off
    code, out, _ = ask("--pool", pool_file, "--model", "ok", "--records", store, "--record-prompts", "off", "Secret?")
    rows = RecordStore(store).load()
    assert len(rows) == 2 and "Secret?" not in set(rows["query"]) and code == 0


BOOK = SceneBook()
CHART_PNG = BOOK.add(bar_chart({"2019": 12, "2020": 30, "2021": 25}))


def vlm_pool(url: str) -> Pool:
    return Pool(parse_pool_config({
        "models": [
            {"name": "vision", "backend": "openai", "endpoint": f"{url}/v1", "model_id": "fake-vlm", "vision": True,
             "max_retries": 0, "timeout_s": 10},
            {"name": "text-only", "backend": "openai", "endpoint": f"{url}/v1", "model_id": "fake-llm",
             "max_retries": 0, "timeout_s": 10},
        ],
        "tools": [{"name": "none", "kind": "none"}],
        "cache": {"enabled": False},
    }))


def test_routed_gateway_request_with_an_image_reaches_the_pair(tmp_path):
    vlm, log = create_fake_vlm_app(BOOK)
    data_url = "data:image/png;base64," + base64.b64encode(CHART_PNG).decode()
    content = [{"type": "text", "text": "Which year had the highest sales?"},
               {"type": "image_url", "image_url": {"url": data_url}}]
    with running_server(vlm) as vlm_url, gateway(vlm_pool(vlm_url), records={"dir": str(tmp_path / "rec"),
                                                                                   "prompts": "full"}) as url:
        def post(atlas: dict | None = None, parts=content) -> httpx.Response:
            body = {"model": "atlas", "messages": [{"role": "user", "content": parts}]}
            return httpx.post(f"{url}/v1/chat/completions", json={**body, **({"atlas": atlas} if atlas else {})},
                              timeout=30)

        r = post()  # no router loaded: the pool's first model, the vision one
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"].strip() == "Final answer: 2020"
        sent = log[-1]["messages"][-1]["content"]
        assert sent[1]["type"] == "image_url"
        assert base64.b64decode(sent[1]["image_url"]["url"].split(",", 1)[1]) == CHART_PNG  # the checked image

        r = post({"allowed_pairs": ["text-only@@none"]})  # a text-only model gets the image's description
        assert r.status_code == 200, r.text
        sent = log[-1]["messages"][-1]["content"]
        assert isinstance(sent, str) and "[image: " in sent

        # images from a request are checked as core.images checks them: no local paths, no file:// URLs
        for bad in ("/etc/passwd", "file:///etc/passwd", "data:image/svg+xml;base64,PHN2Zz4="):
            parts = [content[0], {"type": "image_url", "image_url": {"url": bad}}]
            r = post(parts=parts)
            assert r.status_code == 400, (bad, r.text)
    # the record holds what the router saw: the question and the image's description
    rows = RecordStore(tmp_path / "rec").load()
    assert len(rows) == 2 and all(q.startswith("Which year had the highest sales?\n") and "[image: " in q
                                  for q in rows["query"])


def test_ask_with_an_image_goes_the_same_way(tmp_path):
    vlm, log = create_fake_vlm_app(BOOK)
    (tmp_path / "chart.png").write_bytes(CHART_PNG)
    with running_server(vlm) as vlm_url:
        pool_file = tmp_path / "pool.yaml"
        pool_file.write_text(yaml.safe_dump(vlm_pool(vlm_url).config.model_dump(mode="json")))
        code, out, _ = ask("--pool", pool_file, "--model", "vision", "--image", tmp_path / "chart.png",
                           "Which year had the highest sales?")
    assert code == 0 and out["answer"] == "2020"
    assert out["attempts"] == [{"model": "vision", "tool": "none", "outcome": "ok", "error": None,
                                "latency_s": out["attempts"][0]["latency_s"]}]
    sent = log[-1]["messages"][-1]["content"]
    assert base64.b64decode(sent[1]["image_url"]["url"].split(",", 1)[1]) == CHART_PNG


def test_the_operating_point_of_a_request():
    from atlas_router.serve.request import GatewayError, Overrides

    assert Overrides.parse({"tolerance": 0.05}, {}).tolerance == 0.05
    assert Overrides.parse(None, {"x-atlas-tolerance": "0.1"}).tolerance == 0.1
    for body, says in (({"tolerance": 1.5}, "must lie in [0, 1]"), ({"tolerance": 0.1, "alpha": 0.2}, "give one"),
                       ({"tolerance": "x"}, "must be a number")):
        with pytest.raises(GatewayError) as err:
            Overrides.parse(body, {})
        assert err.value.status == 400 and says in str(err.value)
