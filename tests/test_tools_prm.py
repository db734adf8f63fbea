"""The prm tool: best-of-n by majority vote, and by a process reward model behind a real local HTTP
server that speaks vLLM's /pooling format (it stands in for `vllm serve Qwen/Qwen2.5-Math-PRM-7B`,
which needs a GPU and weights this machine cannot download).

The pair's model is a tiny in-test ChatModel returning scripted texts per seed: an edge fake standing
in for a real model, so the choice logic can be checked exactly.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from atlas_router.config import ModelSpec, ToolSpec
from atlas_router.errors import ConfigError
from atlas_router.models.base import ChatModel, Completion, SamplingParams
from atlas_router.tools.base import ToolContext
from atlas_router.tools.prm import PRMTool, majority_vote, prm_input, split_steps, vote_key
from atlas_router.tools.registry import build_tool

QUESTION = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell in total?"
SCRIPT = [
    "In May she sold 48 / 2 = 24 clips.\n\nIn total 48 + 24 = 72.\n\nFinal answer: 72",
    "She sold 48 + 48 = 96.\n\nFinal answer: 96",
    "May: 24 clips.\n\nTotal: 48 + 24 = 72 clips.\n\nThe answer is \\boxed{72}",
    "Half of 48 is 20.\n\n48 + 20 = 68\n\nFinal answer: 68",
    "She sold 96 clips.\n\nFinal answer: 96.",
]


class ScriptedModel(ChatModel):
    """Returns SCRIPT[seed] and records each call's sampling parameters."""

    def __init__(self, script: list[str]) -> None:
        super().__init__(ModelSpec(name="scripted", backend="openai", endpoint="http://127.0.0.1:1/v1"))
        self.script = script
        self.calls: list[SamplingParams] = []

    async def _chat(self, messages, params: SamplingParams) -> Completion:
        self.calls.append(params)
        return Completion(text=self.script[params.seed % len(self.script)], input_tokens=10, output_tokens=20)


class _PoolingHandler(BaseHTTPRequestHandler):
    """vLLM /pooling reply shape: data[i].data = one [p_bad, p_good] pair per <extra_0> tag."""

    requests: list[dict] = []
    status = 200

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _PoolingHandler.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        if self.path != "/pooling" or _PoolingHandler.status != 200:
            reply, status = {"object": "error", "message": "boom"}, _PoolingHandler.status if self.path == "/pooling" else 404
        else:
            data = []
            for i, text in enumerate(body["input"]):
                steps = text.split("<|im_start|>assistant\n", 1)[1].split("<extra_0>")[:-1]
                # a "careful" step (one that shows 48 / 2) earns a high reward; wrong arithmetic a low one
                pairs = [[0.1, 0.9] if ("48 / 2" in s or "boxed" not in s and "72" in s) else [0.7, 0.3] for s in steps]
                data.append({"index": i, "object": "pooling", "data": pairs})
            reply, status = {"id": "pool-1", "object": "list", "model": body["model"], "data": data,
                             "usage": {"prompt_tokens": 100, "total_tokens": 100}}, 200
        raw = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture(scope="module")
def prm_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _PoolingHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _messages() -> list[dict]:
    return [{"role": "system", "content": "Be careful."}, {"role": "user", "content": QUESTION}]


async def test_majority_vote_without_endpoint():
    tool = build_tool(ToolSpec(name="prm", kind="prm", settings={"n": 5, "temperature": 0.7}))
    assert isinstance(tool, PRMTool) and tool.mode == "best_of_n"
    model = ScriptedModel(SCRIPT)
    best = await tool.best_of_n(_messages(), ToolContext(question=QUESTION, model=model))
    assert best.method == "majority_vote" and best.error is None
    assert best.answers == ["72", "96", "72", "68", "96"]
    # 72 and 96 tie with two votes each; the first candidate with the top share wins
    assert best.scores == [0.4, 0.4, 0.4, 0.2, 0.4]
    assert best.chosen_index == 0
    assert sorted(p.seed for p in model.calls) == [0, 1, 2, 3, 4]
    assert {p.temperature for p in model.calls} == {0.7}


async def test_majority_vote_picks_the_most_common_answer():
    tool = build_tool(ToolSpec(name="prm", kind="prm", settings={"n": 4}))
    model = ScriptedModel(["Final answer: 5", "Final answer: 7", "so the answer is 7.", "\\boxed{7.0}"])
    best = await tool.best_of_n(_messages(), ToolContext(question=QUESTION, model=model))
    assert best.chosen_index == 1 and best.scores == [0.25, 0.75, 0.75, 0.75]
    assert {p.temperature for p in model.calls} == {0.8}  # the default temperature


async def test_reward_model_endpoint_chooses_by_step_rewards(prm_server, monkeypatch):
    monkeypatch.setenv("ATLAS_TEST_PRM_KEY", "secret")
    tool = build_tool(ToolSpec(name="prm", kind="prm", settings={
        "n": 5, "endpoint": f"{prm_server}/v1", "reward_model": "Qwen/Qwen2.5-Math-PRM-7B",
        "api_key_env": "ATLAS_TEST_PRM_KEY", "aggregate": "min"}))
    best = await tool.best_of_n(_messages(), ToolContext(question=QUESTION, model=ScriptedModel(SCRIPT)))
    assert best.method == "prm_min" and best.error is None
    # only candidate 0 shows its work in every step; candidate 2 (also 72) has a step the PRM dislikes
    assert best.scores == pytest.approx([0.9, 0.3, 0.3, 0.3, 0.3])
    assert best.chosen_index == 0
    sent = _PoolingHandler.requests[-1]
    assert sent["path"] == "/pooling" and sent["auth"] == "Bearer secret"
    assert sent["body"]["model"] == "Qwen/Qwen2.5-Math-PRM-7B" and len(sent["body"]["input"]) == 5
    first = sent["body"]["input"][0]
    assert first.startswith("<|im_start|>system\nPlease reason step by step")
    assert f"<|im_start|>user\n{QUESTION}<|im_end|>" in first
    assert first.count("<extra_0>") == 3 and first.endswith("Final answer: 72<extra_0><|im_end|>\n")


async def test_reward_model_failure_falls_back_to_voting(prm_server):
    _PoolingHandler.status = 500
    try:
        tool = build_tool(ToolSpec(name="prm", kind="prm", settings={
            "n": 5, "endpoint": prm_server, "reward_model": "prm"}))
        best = await tool.best_of_n(_messages(), ToolContext(question=QUESTION, model=ScriptedModel(SCRIPT)))
    finally:
        _PoolingHandler.status = 200
    assert best.method == "majority_vote"
    assert best.error.startswith("reward model returned HTTP 500")


async def test_run_uses_the_question_and_needs_a_model():
    tool = build_tool(ToolSpec(name="prm", kind="prm", settings={"n": 3}))
    alone = await tool.run(tool.sample_input)
    assert not alone.ok and "pair" in alone.error
    model = ScriptedModel(["Final answer: 144", "Final answer: 144", "Final answer: 124"])
    r = await tool.run(tool.sample_input, ToolContext(model=model))
    assert r.ok and r.output == "Final answer: 144"
    assert r.data["method"] == "majority_vote" and r.data["answers"] == ["144", "144", "124"]


def test_helpers():
    assert vote_key(" $1,000.0 ") == "1000" and vote_key("X = 2") == "x=2" and vote_key("0.5") == "0.5"
    assert majority_vote(["", ""]) == (0, [0.0, 0.0])
    assert split_steps("a\n\n\nb\n \nc") == ["a", "b", "c"]
    assert prm_input("S", "Q", "one\n\ntwo").endswith("one<extra_0>two<extra_0><|im_end|>\n")


def test_bad_settings():
    with pytest.raises(ConfigError, match="reward_model"):
        build_tool(ToolSpec(name="prm", kind="prm", settings={"endpoint": "http://x"}))
    with pytest.raises(ConfigError, match="aggregate"):
        build_tool(ToolSpec(name="prm", kind="prm", settings={"aggregate": "max"}))
    with pytest.raises(ConfigError, match="n must be"):
        build_tool(ToolSpec(name="prm", kind="prm", settings={"n": 0}))
