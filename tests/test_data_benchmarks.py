"""Benchmark registry: shared files, the bundled HumanEval, every benchmark from files in its public format."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pandas as pd
import pytest

from atlas_router.data.benchmarks import get_benchmark, list_benchmarks, load_benchmark
from atlas_router.data.benchmarks import grade
from atlas_router.errors import AtlasError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

PAPER = {"aime2024", "aime2025", "amc", "humaneval", "mbpp", "calculator", "natural_questions", "webquestions",
         "logiqa2", "gpqa"}


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_registry_has_the_paper_benchmarks_plus_gsm8k_and_math() -> None:
    names = {b.name for b in list_benchmarks()}
    assert PAPER | {"gsm8k", "math"} <= names
    domains = {b.name: b.domain for b in list_benchmarks()}
    assert domains["humaneval"] == "code" and domains["gpqa"] == "science" and domains["calculator"] == "arithmetic"
    assert get_benchmark("human_eval").name == "humaneval" and get_benchmark("NQ").name == "natural_questions"
    assert get_benchmark("gpqa").hub.config == "gpqa_diamond"
    with pytest.raises(AtlasError, match="unknown benchmark 'mmmu'"):
        get_benchmark("mmmu")


def test_gsm8k_and_math_from_the_shared_files() -> None:
    gsm = load_benchmark("gsm8k", path=DATA / "benchmarks" / "gsm8k" / "test.jsonl")
    assert len(gsm) == 1319 and gsm[0].reference.endswith("#### 18")
    assert grade("gsm8k", gsm[0].reference, gsm[0]) == 1.0  # the gold rationale grades as correct
    assert grade("gsm8k", "#### 17", gsm[0]) == 0.0
    math = load_benchmark("math", path=DATA / "benchmarks" / "math" / "test_without_math500.jsonl")
    assert len(math) == 4500 and all(ex.reference for ex in math)
    assert math[0].reference == "2" and math[0].meta["level"] == "Level 3"  # the boxed value of the solution
    assert grade("math", f"Final answer: {math[1].reference}", math[1]) == 1.0
    assert len(load_benchmark("math", path=DATA / "benchmarks" / "math" / "test_without_math500.jsonl", limit=7)) == 7


def test_humaneval_loads_offline_from_the_package() -> None:
    problems = load_benchmark("humaneval")
    assert len(problems) == 164 and problems[0].id == "HumanEval/0"
    ref = problems[2].reference
    assert set(ref) == {"prompt", "test", "entry_point"} and ref["entry_point"] == "truncate_number"
    assert grade("humaneval", "    return number % 1.0\n", problems[2]) == 1.0
    assert "```python" in get_benchmark("humaneval").format_prompt(problems[2])


def test_each_benchmark_reads_its_public_format(tmp_path: Path) -> None:
    aime24 = tmp_path / "aime24.json"
    aime24.write_text(json.dumps([{"ID": "2024-I-1", "Problem": "Find x.", "Solution": "...", "Answer": 204}]))
    ex = load_benchmark("aime2024", path=aime24)[0]
    assert (ex.id, ex.question, ex.reference, ex.meta) == ("2024-I-1", "Find x.", "204", {"Solution": "..."})

    ex = load_benchmark("aime2025", path=_jsonl(tmp_path / "a25.jsonl", [{"id": 0, "problem": "P", "answer": "70"}]))[0]
    assert grade("aime2025", "\\boxed{70}", ex) == 1.0

    pd.DataFrame([{"id": 3, "problem": "AMC q", "answer": 142.0, "url": "u"}]).to_parquet(tmp_path / "amc.parquet")
    ex = load_benchmark("amc", path=tmp_path / "amc.parquet")[0]
    assert ex.reference == "142" and grade("amc", "Final answer: 142", ex) == 1.0

    mbpp_rows = [{"task_id": 11, "text": "Write add(a, b).", "code": "def add(a, b):\n    return a + b",
                  "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"], "test_setup_code": "",
                  "challenge_test_list": []}]
    pd.DataFrame(mbpp_rows).to_parquet(tmp_path / "mbpp.parquet")
    ex = load_benchmark("mbpp", path=tmp_path / "mbpp.parquet")[0]
    assert ex.reference["tests"] == mbpp_rows[0]["test_list"] and ex.id == "11"
    assert "assert add(1, 2) == 3" in get_benchmark("mbpp").format_prompt(ex)
    assert grade("mbpp", f"```python\n{ex.meta['code']}\n```", ex) == 1.0

    calc = _jsonl(tmp_path / "calc.jsonl", [{"question": "What is 1234.5 * 3?", "data_source": "tapo",
                                              "reward_model": {"style": "rule", "ground_truth": "3703.5"}}])
    ex = load_benchmark("calculator", path=calc)[0]
    assert ex.reference == "3703.5" and grade("calculator", "<answer>3703.5</answer> (3 * 1234.5)", ex) == 1.0

    nq = _jsonl(tmp_path / "nq.jsonl", [{"question": "who wrote hamlet", "answer": ["William Shakespeare"]}])
    ex = load_benchmark("natural_questions", path=nq)[0]
    assert ex.reference == ["William Shakespeare"] and grade("nq", "Final answer: Shakespeare", ex) == 0.0
    assert grade("nq", "Final answer: william shakespeare", ex) == 1.0

    webq = tmp_path / "webq.json"
    webq.write_text(json.dumps({"data": [{"url": "http://x", "question": "where is paris?", "answers": ["France"]}]}))
    ex = load_benchmark("webquestions", path=webq)[0]
    assert ex.id == "http://x" and ex.reference == ["France"]
    assert "short phrase" in get_benchmark("webquestions").format_prompt(ex)

    logi = _jsonl(tmp_path / "logiqa2.jsonl", [{"id": 7, "text": "All cats purr.", "question": "Which follows?",
                                                "options": ["a", "b", "c", "d"], "answer": 2, "type": {}}])
    ex = load_benchmark("logiqa2", path=logi)[0]
    assert ex.question.startswith("All cats purr.") and ex.choices == ["a", "b", "c", "d"] and ex.reference == "C"
    assert "C. c" in get_benchmark("logiqa2").format_prompt(ex)

    gpqa_rows = [{"Question": f"Q{i}?", "Correct Answer": "right", "Incorrect Answer 1": "w1",
                  "Incorrect Answer 2": "w2", "Incorrect Answer 3": "w3", "Record ID": f"r{i}"} for i in range(8)]
    pd.DataFrame(gpqa_rows).to_csv(tmp_path / "gpqa.csv", index=False)
    examples = load_benchmark("gpqa", path=tmp_path / "gpqa.csv")
    for ex in examples:
        assert sorted(ex.choices) == ["right", "w1", "w2", "w3"]
        assert ex.choices["ABCD".index(ex.reference)] == "right"
        assert grade("gpqa", f"Answer: {ex.reference}", ex) == 1.0
    assert len({ex.reference for ex in examples}) > 1  # the correct option is not always in one place
    again = load_benchmark("gpqa", path=tmp_path / "gpqa.csv")
    assert [e.choices for e in again] == [e.choices for e in examples]  # and the order is stable


def test_field_map_limit_and_errors(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "mine.jsonl", [{"prompt": f"q{i}", "gold": str(i), "split": "dev" if i % 2 else "test"}
                                            for i in range(6)])
    examples = load_benchmark("gsm8k", path=path, field_map={"question": "prompt", "reference": "gold"})
    assert [e.question for e in examples][:2] == ["q0", "q1"] and examples[3].reference == "3"
    assert len(load_benchmark("gsm8k", path=path, field_map={"question": "prompt"}, split="dev")) == 3
    assert len(load_benchmark("gsm8k", path=path, field_map={"question": "prompt"}, limit=2)) == 2
    with pytest.raises(AtlasError, match=r"no question field 'question'.*--field question=NAME"):
        load_benchmark("gsm8k", path=path)
    with pytest.raises(AtlasError, match="unknown example fields: answer"):
        load_benchmark("gsm8k", path=path, field_map={"answer": "gold"})
    with pytest.raises(AtlasError, match="benchmark file not found"):
        load_benchmark("gsm8k", path=tmp_path / "missing.jsonl")
    (tmp_path / "bad.txt").write_text("x")
    with pytest.raises(AtlasError, match="unsupported file type"):
        load_benchmark("gsm8k", path=tmp_path / "bad.txt")
    (tmp_path / "broken.jsonl").write_text('{"question": 1}\n{oops\n')
    with pytest.raises(AtlasError, match="line 2 is not JSON"):
        load_benchmark("gsm8k", path=tmp_path / "broken.jsonl")
    with pytest.raises(AtlasError, match="limit must be"):
        load_benchmark("gsm8k", path=path, limit=-1)
    with pytest.raises(AtlasError, match="no public download"):
        load_benchmark("calculator")


def test_hub_loading_calls_datasets_with_the_public_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    # The Hugging Face hub cannot be reached from here, so a stand-in `datasets` module records the call.
    calls: list[tuple] = []

    def load_dataset(path: str, *args: str, split: str) -> list[dict]:
        calls.append((path, args, split))
        return [{"question": "2+2?", "answer": "4 #### 4"}, {"question": "3+3?", "answer": "#### 6"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    examples = load_benchmark("gsm8k", limit=1)
    assert calls == [("openai/gsm8k", ("main",), "test")] and [e.question for e in examples] == ["2+2?"]
    load_benchmark("aime2025", split="train", limit=0)
    assert calls[-1] == ("yentinglin/aime_2025", (), "train")

    def failing(path: str, *args: str, split: str) -> list:
        raise ConnectionError("Couldn't reach 'Idavidrein/gpqa' on the Hub\nmore lines")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=failing))
    with pytest.raises(AtlasError, match=r"cannot load Idavidrein/gpqa split 'train' from the hub \(gated"):
        load_benchmark("gpqa")
