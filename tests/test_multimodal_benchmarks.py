"""Image benchmarks (ChartQA, TableVQA, Geometry3K, TallyQA, CountBench) from local files in the public
copies' shapes (JSONL with image paths; Parquet with Hugging Face image structs and TallyQA's nested
``qa`` lists), their graders, and a small end-to-end run through a loopback fake VLM (see
support/fake_vlm.py: no vision model can be reached here)."""

from __future__ import annotations

import asyncio
import json

import pandas as pd
import pytest

from atlas_router.config import parse_pool_config
from atlas_router.data.benchmarks import get_benchmark, load_benchmark
from atlas_router.data.benchmarks.loading import BenchmarkError
from atlas_router.data.benchmarks.multimodal import example_images
from atlas_router.data.benchmarks import grade
from atlas_router.data.graders.multimodal import extract_count, grade_count, grade_geometry, grade_relaxed, relaxed_match
from atlas_router.core.images import load_image
from atlas_router.execution.runner import PairJob, run_pairs
from atlas_router.pool.pool import Pool
from support.fake_vlm import SceneBook, create_fake_vlm_app
from support.scenes import bar_chart, counting_scene, png_bytes, table_image, triangle_scene
from support.servers import running_server

CHART = png_bytes(bar_chart({"2019": 12, "2020": 30}).image)
COUNT = png_bytes(counting_scene(4, seed=5).image)
TABLE = png_bytes(table_image([["a", "1"], ["b", "2"]]).image)
TRI = png_bytes(triangle_scene().image)


@pytest.fixture(autouse=True)
def _image_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_IMAGE_CACHE", str(tmp_path / "image-cache"))
    monkeypatch.delenv("ATLAS_IMAGE_ROOT", raising=False)


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    (d / "png").mkdir(parents=True)
    for name, data in (("chart", CHART), ("count", COUNT), ("table", TABLE), ("tri", TRI)):
        (d / "png" / f"{name}.png").write_bytes(data)
    return d


def test_local_jsonl_files_with_image_paths(data_dir):
    chart = load_benchmark("chartqa", path=write_jsonl(data_dir / "chartqa.jsonl", [
        {"imgname": "c1", "query": "What was the value in 2020?", "label": ["30"], "image": "png/chart.png"}]))
    assert chart[0].question == "What was the value in 2020?" and chart[0].reference == ["30"]
    assert chart[0].id == "c1"
    [ref] = example_images(chart[0])
    assert load_image(ref).data == CHART
    assert get_benchmark("chartqa").format_prompt(chart[0]).endswith("single number or a short phrase.")

    table = load_benchmark("tablevqa", path=write_jsonl(data_dir / "t.jsonl", [
        {"qa_id": "vwtq-1", "question": "Value of b?", "gt": "2", "image": "png/table.png"}]))
    assert (table[0].id, table[0].reference, load_image(example_images(table[0])[0]).data) == ("vwtq-1", ["2"], TABLE)

    geo = load_benchmark("geometry3k", path=write_jsonl(data_dir / "g.jsonl", [
        {"id": 7, "problem": "<image>Find AC.", "choices": ["3", "4", "5", "7"], "answer": "5", "ground_truth": "C",
         "images": ["png/tri.png"]}]))
    assert geo[0].question == "Find AC." and geo[0].reference == "C" and geo[0].choices == ["3", "4", "5", "7"]
    assert "C. 5" in get_benchmark("geometry3k").format_prompt(geo[0])

    tally = load_benchmark("tallyqa", path=write_jsonl(data_dir / "tally.jsonl", [  # the original TallyQA JSON shape
        {"answer": 4, "image": "png/count.png", "question": "How many red circles?", "question_id": 30095774,
         "issimple": True, "data_source": "amt"}]))
    assert (tally[0].id, tally[0].reference, tally[0].meta["issimple"]) == ("30095774", "4", True)

    count = load_benchmark("countbench", path=write_jsonl(data_dir / "cb.jsonl", [
        {"text": "Four red circles on a grey table", "number": 4, "image": "png/count.png",
         "image_url": "https://example.com/4.jpg"}]))
    assert count[0].reference == "4" and "four" not in count[0].question.lower() and "___" in count[0].question
    assert count[0].meta["caption"].startswith("Four") and load_image(example_images(count[0])[0]).data == COUNT


def test_parquet_with_hub_image_structs_and_nested_tallyqa(data_dir):
    path = data_dir / "tally.parquet"
    pd.DataFrame([
        {"image": {"bytes": COUNT, "path": None},
         "qa": [{"question": "How many red circles?", "answer": 4, "is_simple": True},
                {"question": "How many blue squares?", "answer": 3, "is_simple": False}]},
        {"image": {"bytes": CHART, "path": None}, "qa": [{"question": "How many bars?", "answer": 2, "is_simple": True}]},
    ]).to_parquet(path)
    examples = load_benchmark("tallyqa", path=path)
    assert [(e.question, e.reference) for e in examples] == [
        ("How many red circles?", "4"), ("How many blue squares?", "3"), ("How many bars?", "2")]
    assert examples[1].meta["is_simple"] is False and examples[1].meta["qa_index"] == 1
    refs = [example_images(e)[0] for e in examples]
    assert refs[0] == refs[1] != refs[2]  # one cached file per distinct image
    assert load_image(refs[0]).data == COUNT and load_image(refs[2]).data == CHART
    assert load_benchmark("tallyqa", path=path, limit=2)[1].question == "How many blue squares?"

    geo = data_dir / "geo.parquet"
    pd.DataFrame([{"images": [{"bytes": TRI, "path": "img_diagram.png"}], "problem": "<image>Find AC.",
                   "answer": "5", "id": 1, "choices": ["3", "4", "5", "7"], "ground_truth": "C"}]).to_parquet(geo)
    [g] = load_benchmark("geometry3k", path=geo)
    assert g.reference == "C" and load_image(example_images(g)[0]).data == TRI


def test_hostile_image_references_fail_the_load(data_dir):
    cases = [
        ({"query": "q", "label": ["1"], "image": "../../../etc/passwd"}, "leaves its directory"),
        ({"query": "q", "label": ["1"], "image": "/etc/passwd"}, "leaves its directory"),
        ({"query": "q", "label": ["1"], "image": "file:///etc/passwd"}, "scheme that is not accepted"),
        ({"query": "q", "label": ["1"]}, "has no image"),
        ({"query": "q", "label": ["1"], "image": 42}, "must be a path, URL or image bytes"),
    ]
    for row, says in cases:
        with pytest.raises(BenchmarkError, match=says):
            load_benchmark("chartqa", path=write_jsonl(data_dir / "bad.jsonl", [row]))


def test_public_copies_are_named():
    hub = {name: get_benchmark(name).hub for name in ("chartqa", "tablevqa", "geometry3k", "tallyqa", "countbench")}
    assert {n: h.path for n, h in hub.items()} == {
        "chartqa": "HuggingFaceM4/ChartQA", "tablevqa": "terryoo/TableVQA-Bench", "geometry3k": "hiyouga/geometry3k",
        "tallyqa": "vikhyatk/tallyqa-test", "countbench": "nielsr/countbench"}
    assert get_benchmark("chart_qa").name == "chartqa" and get_benchmark("geo3k").domain == "geometry"


def test_relaxed_accuracy():
    assert relaxed_match("31.4", "30") and not relaxed_match("31.6", "30")  # 5% of 30 is 1.5
    assert relaxed_match("45%", "45") and relaxed_match("1,234", "1234") and relaxed_match("$12", "12.0")
    assert relaxed_match("0", "0") and not relaxed_match("0.01", "0")
    assert relaxed_match("The United States", "united states") and not relaxed_match("Canada", "United States")
    assert grade_relaxed("The bars show it.\nFinal answer: 29", ["30"]) == 1.0
    assert grade_relaxed("Final answer: 28", ["30"]) == 0.0
    assert grade_relaxed("Final answer: Yes", ["yes", "no"]) == 1.0
    assert grade_relaxed("Final answer: 30.5", ["30"], tolerance=0.0) == 0.0


def test_count_and_geometry_graders():
    assert extract_count("I see five of them.") == 5 and extract_count("There are 7 dogs.") == 7
    assert grade_count("Final answer: 4", "4") == 1.0 and grade_count("Final answer: 5", 4) == 0.0
    assert grade_count("about 4.5", "4") == 0.0 and grade_count("I cannot tell.", "0") == 0.0
    assert grade_count("There are four.", "4.0") == 1.0
    choices = ["3", "4", "5", "2\\sqrt{3}"]
    assert grade_geometry("Final answer: C", "C", choices) == 1.0
    assert grade_geometry("Final answer: B", "C", choices) == 0.0
    assert grade_geometry("AC = 5.\nFinal answer: 5", "C", choices) == 1.0  # the option's value, not its letter
    assert grade_geometry("Final answer: 2\\sqrt{3}", "D", choices) == 1.0
    assert grade_geometry("Final answer: 6", "C", choices) == 0.0
    assert grade_geometry("Final answer: 12.0", "12") == 1.0


@pytest.fixture(scope="module")
def fake_vlm():
    book = SceneBook()
    book.add(counting_scene(4, seed=5))
    book.add(bar_chart({"2019": 12, "2020": 30}))
    app, log = create_fake_vlm_app(book)
    with running_server(app) as url:
        yield url, log


def test_benchmark_images_reach_a_vision_model_and_are_graded(data_dir, fake_vlm):
    url, log = fake_vlm
    examples = load_benchmark("tallyqa", path=write_jsonl(data_dir / "tally.jsonl", [
        {"question": "How many red circles?", "answer": 4, "image": "png/count.png", "question_id": 1},
        {"question": "How many red circles?", "answer": 5, "image": "png/count.png", "question_id": 2},
        {"question": "Which year sold most?", "answer": 3, "image": "png/chart.png", "question_id": 3}]))
    pool = Pool(parse_pool_config({
        "models": [{"name": "vlm", "backend": "openai", "endpoint": f"{url}/v1", "vision": True, "max_retries": 0}],
        "tools": [{"name": "none", "kind": "none"}], "cache": {"enabled": False}}))
    bench = get_benchmark("tallyqa")
    jobs = [PairJob("vlm", "none", bench.format_prompt(e), key=e, images=tuple(example_images(e))) for e in examples]
    records = asyncio.run(run_pairs(pool, jobs))
    assert [r.error for r in records] == [None] * 3
    assert [grade(bench, r.response, e) for r, e in zip(records, examples)] == [1.0, 0.0, 0.0]
    assert sum(isinstance(m["messages"][-1]["content"], list) for m in log[-3:]) == 3  # the images went along
