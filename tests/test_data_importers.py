"""Importers and their CLI: counts match the source files, blanks are counted, reimports add nothing."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from atlas_router.records.importers import import_into, read_llmrouter, read_routellm, read_routerbench
from atlas_router.errors import AtlasError
from atlas_router.records.schema import query_key
from atlas_router.records.store import RecordStore

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LLMROUTER = DATA / "routing" / "llmrouter"
ROUTELLM = DATA / "routing" / "routellm" / "gsm8k_responses.csv"


def atlas(*args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process."""
    return subprocess.run([sys.executable, "-m", "atlas_router", *args], capture_output=True, text=True, timeout=300)


def atlas_json(*args: str) -> dict:
    proc = atlas(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def routerbench_table() -> pd.DataFrame:
    """A small RouterBench-layout table with blank cells (two in scores, one in a cost)."""
    return pd.DataFrame({
        "sample_id": ["mmlu-astronomy.val.1", "mmlu-astronomy.val.2", "gsm8k.test.7", "mbpp.test.3"],
        "prompt": ["What is a star?", "Is Pluto a planet?", "2+3?", "Write add(a, b)."],
        "eval_name": ["mmlu-astronomy", "mmlu-astronomy", "grade-school-math", "mbpp"],
        "gpt-4-1106-preview": [1.0, 1.0, 1.0, None],
        "mistralai/mixtral-8x7b-chat": [0.0, None, 1.0, 0.5],
        "gpt-4-1106-preview|model_response": ["A ball of plasma.", "No.", "5", None],
        "gpt-4-1106-preview|total_cost": [0.01, 0.02, 0.005, None],
        "mistralai/mixtral-8x7b-chat|model_response": ["A planet.", None, "5", "def add(a,b): return a+b"],
        "mistralai/mixtral-8x7b-chat|total_cost": [0.001, None, 0.0005, None],
        "oracle_model_to_route_to": ["gpt-4-1106-preview", "gpt-4-1106-preview", "mistralai/mixtral-8x7b-chat",
                                     "mistralai/mixtral-8x7b-chat"],
    })


def test_llmrouter_real_files_counts_costs_and_reimport(tmp_path: Path) -> None:
    scores = json.loads((LLMROUTER / "train.json").read_text())
    prices = json.loads((LLMROUTER / "default_llm.json").read_text())
    out = tmp_path / "rec"
    summary = atlas_json("import", "llmrouter", "--scores", str(LLMROUTER / "train.json"),
                         "--queries", str(LLMROUTER / "default_query_train.jsonl"),
                         "--models", str(LLMROUTER / "default_llm.json"), "--out", str(out))
    n_scores = sum(len(r["scores"]) for r in scores)
    assert (summary["queries"], summary["models"], summary["records"]) == (len(scores), 9, n_scores) == (5489, 9, 49401)
    assert summary["skipped_blank"] == 0 and summary["added"] == 49401
    assert summary["benchmarks"]["gsm8k"] == 500 * 9 and len(summary["benchmarks"]) == 14
    again = atlas_json("import", "llmrouter", "--scores", str(LLMROUTER / "train.json"),
                       "--queries", str(LLMROUTER / "default_query_train.jsonl"), "--out", str(out))
    assert again["added"] == 0 and again["records"] == 49401

    df = RecordStore(out).load()
    assert len(df) == 49401 and (df["tool"] == "none").all() and (df["source"] == "llmrouter").all()
    first = scores[0]
    model, score = next(iter(first["scores"].items()))
    row = df[(df["query"] == first["question"]) & (df["model"] == model)].iloc[0]
    in_tokens = math.ceil(len(first["question"]) / 4)
    price = prices[model]
    assert row["score"] == score and row["input_tokens"] == in_tokens and row["output_tokens"] == 256
    assert row["cost"] == pytest.approx((in_tokens * price["input_price"] + 256 * price["output_price"]) / 1e6)
    assert row["benchmark"] == "agentverse-logicgrid" and json.loads(row["reference"])["answer"] == "C"
    gsm = df[df["benchmark"] == "gsm8k"].iloc[0]
    assert gsm["domain"] == "math" and gsm["query_id"] == query_key("gsm8k", gsm["query"])
    assert set(df.loc[df["benchmark"] == "human_eval", "domain"]) == {"code"}

    shown = atlas_json("records", "show", str(out))
    assert shown["rows"] == 49401 and shown["queries"] == 5489 and shown["pairs"] == 9
    group = next(g for g in shown["groups"] if g["benchmark"] == "gsm8k" and g["model"] == model)
    sub = df[(df["benchmark"] == "gsm8k") & (df["model"] == model)]
    assert group["count"] == len(sub) and group["mean_score"] == pytest.approx(sub["score"].mean())
    assert group["mean_cost"] == pytest.approx(sub["cost"].mean())


def test_llmrouter_without_queries_names_the_benchmark_after_the_file(tmp_path: Path) -> None:
    # RouterDC ships one scores file per benchmark and split
    path = tmp_path / "gsm8k-train.json"
    path.write_text(json.dumps([
        {"question": "1+1?", "scores": {"m1": 1.0, "m2": 0.0}},
        {"question": "2+2?", "scores": {"m1": None, "m2": 0.7}},
    ]))
    result = read_llmrouter(path)
    assert (result.queries, len(result.models), len(result.records), result.skipped_blank) == (2, 2, 3, 1)
    assert set(result.records["benchmark"]) == {"gsm8k"} and set(result.records["split"]) == {"train"}
    assert result.records["cost"].isna().all()  # no model list, no prices
    assert read_llmrouter(LLMROUTER / "train.json").records["benchmark"].unique().tolist() == ["llmrouter"]
    with pytest.raises(AtlasError, match="needs 'question' and a 'scores' object"):
        (tmp_path / "bad.json").write_text(json.dumps([{"question": "q"}]))
        read_llmrouter(tmp_path / "bad.json")
    (tmp_path / "big.json").write_text(json.dumps([{"question": "q", "scores": {"m": 3}}]))
    with pytest.raises(AtlasError, match=r"outside \[0, 1\]"):
        read_llmrouter(tmp_path / "big.json")


def test_routellm_real_file_through_the_cli(tmp_path: Path) -> None:
    source = pd.read_csv(ROUTELLM)
    out = tmp_path / "rec"
    summary = atlas_json("import", "routellm", str(ROUTELLM), "--out", str(out))
    assert (summary["queries"], summary["models"], summary["records"], summary["skipped_blank"]) == (1319, 2, 2638, 0)
    assert summary["benchmarks"] == {"gsm8k": 2638} and summary["added"] == 2638
    assert atlas_json("import", "routellm", str(ROUTELLM), "--out", str(out))["added"] == 0
    df = RecordStore(out).load()
    gpt4 = df[df["model"] == "gpt-4-1106-preview"]
    assert gpt4["score"].sum() == source["gpt-4-1106-preview"].sum()
    first = gpt4[gpt4["query"] == source["prompt"][0]].iloc[0]
    assert first["response"] == source["gpt-4-1106-preview_response"][0] and math.isnan(first["cost"])


def test_routellm_blank_cells_and_benchmark_override(tmp_path: Path) -> None:
    path = tmp_path / "mmlu_astronomy.csv"
    path.write_text("prompt,model-a,model-b,model-a_response\nq1,True,,yes\nq2,False,True,no\nq3,,,\n")
    result = read_routellm([path])
    assert (result.queries, result.models, len(result.records), result.skipped_blank) == (3, ["model-a", "model-b"], 3, 3)
    assert set(result.records["benchmark"]) == {"mmlu_astronomy"}
    assert sorted(result.records["score"]) == [0.0, 1.0, 1.0]
    assert set(read_routellm([path], benchmark="astro").records["benchmark"]) == {"astro"}
    (tmp_path / "bad.csv").write_text("prompt,m\nq,maybe\n")  # text only: not a score column
    with pytest.raises(AtlasError, match="no per-model correctness columns .*ignored non-numeric column.*'m'"):
        read_routellm([tmp_path / "bad.csv"])


def test_routerbench_csv_and_pickle_with_blank_cells(tmp_path: Path) -> None:
    table = routerbench_table()
    table.to_csv(tmp_path / "routerbench_small.csv", index=False)
    table.iloc[:2].to_pickle(tmp_path / "routerbench_0shot.pkl")

    result = read_routerbench([tmp_path / "routerbench_small.csv"])
    assert (result.queries, len(result.models), len(result.records), result.skipped_blank) == (4, 2, 6, 2)
    df = result.records
    row = df[(df["model"] == "gpt-4-1106-preview") & (df["query"] == "Is Pluto a planet?")].iloc[0]
    assert (row["score"], row["cost"], row["response"], row["benchmark"]) == (1.0, 0.02, "No.", "mmlu-astronomy")
    assert row["domain"] == "knowledge"
    mbpp = df[df["benchmark"] == "mbpp"].iloc[0]
    assert mbpp["score"] == 0.5 and math.isnan(mbpp["cost"]) and mbpp["domain"] == "code"

    out = tmp_path / "rec"
    summary = atlas_json("import", "routerbench", str(tmp_path / "routerbench_small.csv"),
                         str(tmp_path / "routerbench_0shot.pkl"), "--trust-pickle", "--out", str(out))
    # the pickle repeats the CSV's first two prompts: counted as source rows, stored once
    assert (summary["queries"], summary["models"], summary["records"], summary["skipped_blank"]) == (6, 2, 9, 3)
    assert summary["added"] == 6
    assert atlas_json("import", "routerbench", str(tmp_path / "routerbench_0shot.pkl"), "--trust-pickle",
                      "--out", str(out))["added"] == 0
    stored = RecordStore(out).load()
    assert len(stored) == 6 and (stored["source"] == "routerbench").all()
    shown = atlas("records", "show", str(out))
    assert shown.returncode == 0 and "mmlu-astronomy" in shown.stdout and "6 records, 4 queries" in shown.stdout


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    missing = atlas("import", "routerbench", str(tmp_path / "none.pkl"), "--out", str(tmp_path / "rec"))
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'none.pkl'}: RouterBench file not found"]
    (tmp_path / "x.pkl").write_bytes(b"not a pickle")
    broken = atlas("import", "routerbench", str(tmp_path / "x.pkl"), "--trust-pickle", "--out", str(tmp_path / "rec"))
    assert broken.returncode == 2 and "cannot read the table" in broken.stderr and "Traceback" not in broken.stderr
    shown = atlas("records", "show", str(tmp_path))
    assert shown.returncode == 2 and "not a records directory" in shown.stderr
    no_scores = atlas("import", "llmrouter", "--out", str(tmp_path / "rec"))
    assert no_scores.returncode != 0 and "--scores" in no_scores.stderr


def test_import_into_python_api(tmp_path: Path) -> None:
    table = routerbench_table()
    table.to_pickle(tmp_path / "rb.pkl")
    result = import_into(read_routerbench([tmp_path / "rb.pkl"], trust_pickle=True), tmp_path / "rec")
    again = import_into(read_routerbench([tmp_path / "rb.pkl"], trust_pickle=True), tmp_path / "rec")
    assert result.added == 6 and again.added == 0
    assert "skipped blank cells: 2" in "\n".join(result.lines())


class Payload:
    """Unpickling this runs ``touch MARKER``: proof that an importer executed the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pickled_tables_need_trust_and_parquet_needs_none(tmp_path: Path) -> None:
    import pickle

    marker = tmp_path / "pwned"
    (tmp_path / "rb.pkl").write_bytes(pickle.dumps(Payload(marker)))
    proc = atlas("import", "routerbench", str(tmp_path / "rb.pkl"), "--out", str(tmp_path / "rec"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "can run code" in lines[0] and "--trust-pickle" in lines[0]
    with pytest.raises(AtlasError, match="--trust-pickle"):
        read_routerbench([tmp_path / "rb.pkl"])
    assert not marker.exists() and not (tmp_path / "rec").exists()
    routerbench_table().to_parquet(tmp_path / "rb.parquet")
    result = read_routerbench([tmp_path / "rb.parquet"])
    assert (result.queries, len(result.models), len(result.records), result.skipped_blank) == (4, 2, 6, 2)


def test_pandas_index_and_text_columns_are_ignored_with_a_note(tmp_path: Path) -> None:
    table = routerbench_table()
    table["model_family"] = ["openai", "openai", "meta", "meta"]  # text: not scores
    table["Unnamed: 20"] = None  # a trailing comma in a hand-edited CSV
    table.to_csv(tmp_path / "rb.csv")  # pandas writes its index as the first, unnamed column
    assert pd.read_csv(tmp_path / "rb.csv").columns[0] == "Unnamed: 0"
    out = tmp_path / "rec"
    summary = atlas_json("import", "routerbench", str(tmp_path / "rb.csv"), "--out", str(out))
    assert (summary["queries"], summary["models"], summary["records"], summary["added"]) == (4, 2, 6, 6)
    notes = " ".join(summary["notes"])
    assert "'Unnamed: 0'" in notes and "'Unnamed: 20'" in notes and "'model_family'" in notes
    assert set(RecordStore(out).load()["model"]) == {"gpt-4-1106-preview", "mistralai/mixtral-8x7b-chat"}
    shown = atlas("import", "routerbench", str(tmp_path / "rb.csv"), "--out", str(out))
    assert shown.returncode == 0 and "note:" in shown.stdout and "ignored unnamed column(s)" in shown.stdout
    # the same for RouteLLM tables, and pandas' reset_index() column
    path = tmp_path / "gsm8k_responses.csv"
    pd.DataFrame({"prompt": ["q1", "q2"], "m1": [True, False], "m1_response": ["a", "b"], "judge": ["x", "y"]}) \
        .reset_index().to_csv(path)
    result = read_routellm([path])
    assert result.models == ["m1"] and len(result.records) == 2
    assert any("'index'" in n and "'Unnamed: 0'" in n for n in result.notes)
    assert any("'judge'" in n for n in result.notes)
    # a score column with some numbers and some text is still a model column with a bad cell
    (tmp_path / "mixed.csv").write_text("prompt,m\nq1,1\nq2,maybe\n")
    with pytest.raises(AtlasError, match="score 'maybe' is not a number"):
        read_routellm([tmp_path / "mixed.csv"])
