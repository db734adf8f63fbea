"""The web_search tool: BM25 over the bundled collection, and the Google / SearXNG backends against real
local HTTP servers (started here on 127.0.0.1) that speak those services' JSON formats.

The two servers stand in for the hosted APIs (googleapis.com, a public SearXNG instance), which the test
machine cannot reach; everything on our side (httpx, parameters, parsing, errors) runs for real.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from atlas_router.config import ToolSpec
from atlas_router.errors import ConfigError
from atlas_router.tools.registry import build_tool
from atlas_router.tools.web_search import WebSearchTool, extract_query
from atlas_router.tools.web_search.bm25 import DEFAULT_COLLECTION, get_index, load_documents

PAGES = [
    {"title": "Canberra - capital", "link": "https://example.org/canberra",
     "snippet": "Canberra is the capital city of Australia."},
    {"title": "Sydney", "link": "https://example.org/sydney", "snippet": "Sydney is the largest city in Australia."},
    {"title": "Melbourne", "link": "https://example.org/melbourne", "snippet": "Melbourne is in Victoria."},
    {"title": "Perth", "link": "https://example.org/perth", "snippet": "Perth is in Western Australia."},
]


class _Handler(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlparse(self.path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        _Handler.requests.append({"path": url.path, **params})
        if url.path == "/customsearch/v1":  # Google Custom Search JSON API format
            if params.get("key") != "test-key":
                return self._send(400, {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key."}})
            if params.get("q") == "nothing":
                return self._send(200, {"kind": "customsearch#search", "searchInformation": {"totalResults": "0"}})
            return self._send(200, {"kind": "customsearch#search", "items": PAGES[: int(params.get("num", 10))]})
        if url.path == "/search":  # SearXNG JSON format
            if params.get("format") != "json":
                return self._send(403, {"error": "format not allowed"})
            results = [{"title": p["title"], "url": p["link"], "content": p["snippet"], "engine": "duckduckgo",
                        "score": 4.0 - i} for i, p in enumerate(PAGES)]
            return self._send(200, {"query": params.get("q"), "number_of_results": len(results), "results": results,
                                    "answers": [], "infoboxes": []})
        return self._send(404, {"error": "not found"})


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _tool(**settings) -> WebSearchTool:
    tool = build_tool(ToolSpec(name="web-search", kind="web_search", settings=settings))
    assert isinstance(tool, WebSearchTool)
    return tool


def test_bundled_collection_is_valid_and_small():
    docs = load_documents([DEFAULT_COLLECTION])
    assert 150 <= len(docs) <= 300
    assert DEFAULT_COLLECTION.stat().st_size < 300 * 1024
    assert len({d.title for d in docs}) == len(docs)


@pytest.mark.parametrize("query, title", [
    ("What is the capital of Australia?", "Australia"),
    ("who wrote pride and prejudice", "Jane Austen"),
    ("when did the titanic sink", "Titanic"),
    ("how tall is mount everest", "Mount Everest"),
    ("first person to walk on the moon", "Neil Armstrong"),
    ("boiling point of water in fahrenheit", "Water"),
    ("how many bones in the adult human body", "Human body"),
])
async def test_bm25_finds_the_right_passage(query, title):
    tool = _tool(backend="bm25", documents="default", read="passages")
    r = await tool.run(query)
    assert r.ok
    assert len(r.data["snippets"]) == 3
    assert title in [s["title"] for s in r.data["snippets"]], r.output
    assert r.output.startswith("[1] ")


async def test_bm25_custom_collection_and_cached_index(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"title": "Zorblax", "text": "Zorblax is a made-up planet with purple oceans.", "url": "u1"}\n'
                    '{"title": "Other", "text": "Completely unrelated words here."}\n', encoding="utf-8")
    tool = _tool(backend="bm25", documents=str(path), top_k=3)
    r = await tool.run("purple oceans planet")
    assert r.ok and [s["title"] for s in r.data["snippets"]] == ["Zorblax"]  # zero-score documents are dropped
    assert get_index(str(path)) is get_index(str(path))
    r = await tool.run("quantum chromodynamics")
    assert r.ok and r.output == "No results for: quantum chromodynamics"


def test_bad_collections_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        _tool(backend="bm25", documents=str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "x"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.jsonl:1: .*text"):
        load_documents([bad])
    with pytest.raises(ConfigError, match="unknown search backend"):
        _tool(backend="bing")
    with pytest.raises(ConfigError, match="read must be one of"):
        _tool(read="everything")


async def test_google_backend(server, monkeypatch):
    monkeypatch.setenv("ATLAS_TEST_GOOGLE_KEY", "test-key")
    tool = _tool(backend="google", cx="engine-1", api_key_env="ATLAS_TEST_GOOGLE_KEY",
                 endpoint=f"{server}/customsearch/v1")
    r = await tool.run("capital of Australia")
    assert r.ok, r.error
    assert [s["url"] for s in r.data["snippets"]] == [p["link"] for p in PAGES[:3]]
    assert "Canberra is the capital city of Australia." in r.output
    sent = _Handler.requests[-1]
    assert sent["q"] == "capital of Australia" and sent["cx"] == "engine-1" and sent["num"] == "3"
    r = await tool.run("nothing")
    assert r.ok and r.output == "No results for: nothing"


async def test_google_errors_are_clear(server, monkeypatch):
    monkeypatch.setenv("ATLAS_TEST_GOOGLE_KEY", "wrong")
    tool = _tool(backend="google", cx="engine-1", api_key_env="ATLAS_TEST_GOOGLE_KEY",
                 endpoint=f"{server}/customsearch/v1")
    r = await tool.run("anything")
    assert not r.ok and r.error == "google search failed: HTTP 400: API key not valid. Please pass a valid API key."
    monkeypatch.delenv("ATLAS_TEST_GOOGLE_KEY")
    r = await tool.run("anything")
    assert not r.ok and r.error == "environment variable ATLAS_TEST_GOOGLE_KEY (api_key_env) is not set"
    with pytest.raises(ConfigError, match="cx"):
        _tool(backend="google")


async def test_searxng_backend(server):
    tool = _tool(backend="searxng", endpoint=server, top_k=2, categories="general")
    r = await tool.run("capital of Australia")
    assert r.ok, r.error
    assert [s["title"] for s in r.data["snippets"]] == ["Canberra - capital", "Sydney"]
    assert r.data["snippets"][0]["score"] == 4.0
    sent = _Handler.requests[-1]
    assert sent["path"] == "/search" and sent["format"] == "json" and sent["categories"] == "general"


async def test_unreachable_backend_is_a_clear_error():
    tool = _tool(backend="searxng", endpoint="http://127.0.0.1:9", timeout_s=2)
    r = await tool.run("anything")
    assert not r.ok and r.error.startswith("searxng search failed: ConnectError")


def test_extract_query_forms():
    assert extract_query("I need facts. <search>capital of Peru</search>") == "capital of Peru"
    assert extract_query('Let me call search("who painted the Mona Lisa") now') == "who painted the Mona Lisa"
    assert extract_query("Thinking...\nSearch: height of K2\nThen I answer.") == "height of K2"
    assert extract_query("The answer is 42.") is None
    tool = _tool()
    assert "<search>" in tool.usage() and tool.extract_call(tool.usage()) == "capital of Australia"


async def test_sample_input():
    tool = _tool()
    r = await tool.run(tool.sample_input)
    assert r.ok and "Canberra" in r.output


async def test_reading_gives_the_answering_sentence():
    tool = _tool(backend="bm25", documents="default")
    r = await tool.run("What is the capital of Canada?")
    assert r.ok and r.output == "Canada: Its capital is Ottawa and its largest city is Toronto."
    assert len(r.data["snippets"]) == 3  # the passages stay in the record
    two = await _tool(backend="bm25", sentences=2).run("What is the capital of Canada?")
    assert two.output.splitlines()[0] == r.output and len(two.output.splitlines()) == 2


def test_sentence_splitting_keeps_initials_together():
    from atlas_router.tools.web_search.reading import sentences

    assert sentences("J. K. Rowling wrote it. Its capital is Washington, D.C. and more. End!") == [
        "J. K. Rowling wrote it.", "Its capital is Washington, D.C. and more.", "End!"]


async def test_reading_finds_the_answer_of_nearly_every_suite_fact():
    """Retrieve-then-read can only work if the sentence handed to the model holds the answer."""
    from atlas_router.data.benchmarks import load_benchmark

    tool = _tool(backend="bm25", documents="default", prefetch=True)
    facts = load_benchmark("suite-facts")
    found = 0
    for ex in facts:
        out = (await tool.run(ex.question)).output.lower()
        found += any(a.lower() in out for a in ex.reference)
    assert found >= 0.95 * len(facts)


def test_prefetch_usage_and_demonstration_match_the_real_turn():
    tool = _tool(prefetch=True)
    demo = tool.demonstration()
    assert demo[0]["content"].startswith("[web-search output]\n") and "\n\nQuestion: " in demo[0]["content"]
    assert demo[1]["content"].startswith("Final answer: ")
    assert "<search>" not in tool.usage()
