"""Chart, counting and geometry tools, image questions through run_pair, and ``atlas ask --image``,
against a real HTTP server on loopback that plays the vision-language model.

The server is a fake on purpose (see support/fake_vlm.py): no vision model weights can be reached here.
It answers from the content of the images the tests render, matched by the hash of the bytes it
receives, so every answer depends on the image actually travelling through the tool or pair as a data
URL in an OpenAI-style content part.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
import yaml

from atlas_router.config import ToolSpec, parse_pool_config
from atlas_router.errors import ConfigError
from atlas_router.core.images import load_image
from atlas_router.execution.runner import PairJob, run_pair, run_pairs
from atlas_router.pool.pool import Pool
from atlas_router.tools.base import ToolContext
from atlas_router.tools.registry import build_tool
from support.fake_vlm import SceneBook, create_fake_vlm_app
from support.scenes import bar_chart, counting_scene, triangle_scene
from support.servers import running_server

BOOK = SceneBook()
CHART = bar_chart({"2019": 12, "2020": 30, "2021": 25})
CHART_PNG = BOOK.add(CHART)
COUNT = counting_scene(6, colour="red", seed=3)
COUNT_PNG = BOOK.add(COUNT)
TRI = triangle_scene(3, 4)
TRI_PNG = BOOK.add(TRI)
TRI_SLIP = triangle_scene(5, 12)
TRI_SLIP_PNG = BOOK.add(TRI_SLIP)


@pytest.fixture(scope="module")
def vlm():
    app, log = create_fake_vlm_app(BOOK)
    with running_server(app) as url:
        yield url, log


def tool(kind: str, url: str, **settings):
    return build_tool(ToolSpec(name=kind, kind=kind, settings={"endpoint": f"{url}/v1", "model_id": "fake-vlm",
                                                                "timeout_s": 10, **settings}))


def run(t, tool_input: str, *images: bytes, question: str = ""):
    ctx = ToolContext(question=question, images=[load_image(i) for i in images])
    return asyncio.run(t.run(tool_input, ctx))


def test_chart_tool_extracts_the_table_then_answers_from_it(vlm):
    url, log = vlm
    before = len(log)
    result = run(tool("chart", url), 'chart(image=1, question="What was the value in 2020?")', CHART_PNG)
    assert result.ok, result.error
    assert result.data["table"]["rows"] == [["2019", 12], ["2020", 30], ["2021", 25]]
    assert result.data["answer"] == "30"
    assert [s["step"] for s in result.data["steps"]] == ["extract_table", "answer"]
    assert "| 2020 | 30 |" in result.output and result.output.endswith("Answer: 30")
    first, second = log[before], log[before + 1]
    parts = first["messages"][1]["content"]
    assert parts[1]["type"] == "image_url" and parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert isinstance(second["messages"][1]["content"], str)  # the answer step reads the table, not the image
    assert first["model"] == "fake-vlm" and result.data["usage"]["calls"] == 2


def test_chart_tool_refuses_when_no_table_comes_back(vlm):
    url, _ = vlm
    result = run(tool("chart", url), "What is shown?", COUNT_PNG)  # not a chart: the fake VLM says so
    assert not result.ok
    assert "no JSON object" in result.error
    assert [s["step"] for s in result.data["steps"]] == ["extract_table", "extract_table (retry)"]


def test_counting_tool_locates_checks_and_counts(vlm):
    url, _ = vlm
    result = run(tool("counting", url), "How many red circles are there?", COUNT_PNG)
    assert result.ok, result.error
    assert result.data["count"] == 6 == COUNT.truth["count"]
    assert len(result.data["instances"]) == 5 and len(result.data["missing"]) == 1  # the check found the miss
    assert result.data["boxes"][-1] == [float(v) for v in COUNT.truth["boxes"][-1]]
    assert result.output.endswith("Answer: 6")


def test_geometry_tool_extracts_reasons_checks_and_summarises(vlm):
    url, _ = vlm
    ok = run(tool("geometry", url), 'geometry(question="Find AC.")', TRI_PNG)
    assert ok.ok, ok.error
    assert ok.data["structure"]["lengths"] == {"AB": 3, "BC": 4}
    assert ok.data["verdict"] == "correct" and ok.data["answer"] == "5"
    assert [s["step"] for s in ok.data["steps"]] == ["extract_structure", "reason", "check"]
    slip = run(tool("geometry", url), "Find AC.", TRI_SLIP_PNG)
    assert slip.data["proposed"] == "17" and slip.data["verdict"] == "wrong"
    assert slip.data["answer"] == "13" and "corrected from 17" in slip.output


def test_image_tools_only_open_the_questions_images(vlm):
    url, log = vlm
    before = len(log)
    chart = tool("chart", url)
    for call in ('chart(image="/etc/passwd", question="x")', 'chart(image="http://127.0.0.1:1/x.png")',
                 'chart(image=3, question="x")'):
        result = run(chart, call, CHART_PNG)
        assert not result.ok and result.error
    assert "not opened" in run(chart, 'chart(image="/etc/passwd")', CHART_PNG).error
    assert "does not exist" in run(chart, 'chart(image=3)', CHART_PNG).error
    assert "no image attached" in run(chart, "What is this?").error
    assert len(log) == before  # nothing reached the model


def test_vlm_tool_settings_are_checked():
    with pytest.raises(ConfigError, match="endpoint"):
        build_tool(ToolSpec(name="c", kind="chart", settings={}))
    with pytest.raises(ConfigError, match="unknown setting"):
        build_tool(ToolSpec(name="c", kind="chart", settings={"endpoint": "http://127.0.0.1:1/v1", "modle": "x"}))
    with pytest.raises(ConfigError, match="ATLAS_NO_SUCH_KEY"):
        build_tool(ToolSpec(name="c", kind="chart", settings={"endpoint": "http://127.0.0.1:1/v1",
                                                             "api_key_env": "ATLAS_NO_SUCH_KEY"}))


def test_unreachable_vlm_endpoint_is_a_clear_tool_error():
    from support.servers import free_port

    t = tool("counting", f"http://127.0.0.1:{free_port()}", timeout_s=1, max_retries=0)
    result = run(t, "How many?", COUNT_PNG)
    assert not result.ok and "connection failed" in result.error


def pool_config(url: str, tools: list[dict] | None = None) -> dict:
    return {
        "models": [
            {"name": "vision", "backend": "openai", "endpoint": f"{url}/v1", "model_id": "fake-vlm", "vision": True,
             "max_retries": 0, "timeout_s": 10},
            {"name": "text-only", "backend": "openai", "endpoint": f"{url}/v1", "model_id": "fake-llm",
             "max_retries": 0, "timeout_s": 10},
        ],
        "tools": tools or [{"name": "none", "kind": "none"}],
        "cache": {"enabled": False},
    }


def test_run_pair_sends_images_to_vision_models_and_descriptions_to_text_models(vlm, tmp_path):
    url, log = vlm
    path = tmp_path / "scene.png"
    path.write_bytes(COUNT_PNG)
    pool = Pool(parse_pool_config(pool_config(url)))
    before = len(log)
    seen = asyncio.run(run_pair(pool, "vision", "none", "How many red circles are there?", images=[str(path)]))
    assert seen.error is None and seen.answer == "6"
    sent = log[before]["messages"][-1]["content"]
    assert sent[0] == {"type": "text", "text": "How many red circles are there?"} and sent[1]["type"] == "image_url"
    assert seen.question == "How many red circles are there?"  # the record's question stays text
    recorded = seen.transcript[-2]["content"][1]["image_url"]["url"]
    assert recorded.startswith("<inline image") and len(recorded) < 100  # no image bytes in records

    blind = asyncio.run(run_pair(pool, "text-only", "none", "How many red circles are there?", images=[str(path)]))
    assert blind.error is None
    content = log[-1]["messages"][-1]["content"]
    assert isinstance(content, str) and "[image: " in content and "480x360" in content


def test_run_pair_with_counting_tool_prefetch_and_bad_image_recorded(vlm, tmp_path):
    url, _ = vlm
    pool = Pool(parse_pool_config(pool_config(url, [{"name": "count", "kind": "counting",
                                                     "settings": {"endpoint": f"{url}/v1", "model_id": "fake-vlm"}}])))
    (tmp_path / "c.png").write_bytes(COUNT_PNG)
    (tmp_path / "broken.png").write_bytes(COUNT_PNG[:200])
    jobs = [PairJob("text-only", "count", "How many red circles are there?", images=(str(tmp_path / "c.png"),)),
            PairJob("text-only", "count", "How many red circles are there?", images=(str(tmp_path / "broken.png"),))]
    good, bad = asyncio.run(run_pairs(pool, jobs))
    call = good.tool_calls[0]
    assert call["prefetch"] and call["ok"] and call["data"]["count"] == 6
    assert "Answer: 6" in good.transcript[-2]["content"]  # the tool's findings reach the text-only model
    assert bad.error and "ImageError" in bad.error and "truncated" in bad.error and not bad.tool_calls


def test_cli_ask_with_image(vlm, tmp_path):
    url, _ = vlm
    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(yaml.safe_dump(pool_config(url)))
    (tmp_path / "chart.png").write_bytes(CHART_PNG)
    env = {**os.environ, "ATLAS_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "atlas_router", "ask", "--pool", str(pool_file), "-m", "vision",
           "--image", str(tmp_path / "chart.png"), "Which year had the highest sales?", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["answer"] == "2020"

    (tmp_path / "evil.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    (tmp_path / "evil.png").write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    for bad, says in ((tmp_path / "evil.svg", "not an image file extension"), (tmp_path / "evil.png", "SVG"),
                      ("file:///etc/passwd", "file:// URLs are not accepted")):
        cmd[cmd.index("--image") + 1] = str(bad)
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode != 0
        lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and says in lines[0], done.stderr  # one clear line, no traceback
