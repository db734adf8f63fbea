"""The demo's building blocks: complete queries, the template split, the operating point, shipped files.
(The real ``atlas demo`` runs end to end in tests/test_demo_tour.py.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atlas_router.errors import AtlasError
from atlas_router.eval.demo import LIVE_QUESTIONS, complete_queries, read_records, train_test, write_store
from atlas_router.data.benchmarks.demo_suite import load_demo_suite
from atlas_router.records.store import RecordStore
from atlas_router.routers.operating_point import OperatingPoint, cheapest_within


def _records(n_queries: int, split_of, pairs=(("m", "a"), ("m", "b"))) -> pd.DataFrame:
    rows = []
    for q in range(n_queries):
        for model, tool in pairs:
            rows.append({"query_id": f"q{q}", "benchmark": "b", "split": split_of(q), "query": f"question {q}",
                         "model": model, "tool": tool, "score": float(tool == "a"), "cost": 1.0})
    return pd.DataFrame(rows)


def test_complete_queries_drop_queries_missing_a_pair():
    df = _records(5, lambda q: "train")
    df = df[~((df["query_id"] == "q3") & (df["tool"] == "b"))]
    assert sorted(complete_queries(df)["query_id"].unique()) == ["q0", "q1", "q2", "q4"]


def test_split_by_templates_else_by_queries():
    train, test, how = train_test(_records(10, lambda q: "test" if q < 3 else "train"))
    assert how == "templates" and set(test["query_id"]) == {"q0", "q1", "q2"} and len(train) == 14
    train, test, how = train_test(_records(20, lambda q: "test" if q < 1 else "train"))  # too lopsided
    assert how == "queries" and not set(train["query_id"]) & set(test["query_id"])


def test_cheapest_within_tolerance():
    acc = np.array([[0.90, 0.89, 0.50], [0.90, 0.80, 0.95], [np.nan, 0.2, 0.1]])
    cost = np.array([10.0, 1.0, 0.1])
    assert cheapest_within(acc, cost, 0.02).tolist() == [1, 2, 1]
    assert cheapest_within(acc, cost, 0.0).tolist() == [0, 2, 1]
    assert cheapest_within(acc, cost, 1.0).tolist() == [2, 2, 2]
    assert cheapest_within(acc, cost, 0.5, available=np.array([True, True, False])).tolist() == [1, 1, 1]


def test_operating_point_parse_and_checks():
    assert OperatingPoint.parse("tol=0.05").tolerance == 0.05
    assert OperatingPoint.parse("a=0.3").alpha == 0.3
    assert OperatingPoint().label() == "cheapest within 2 accuracy points of the best"
    with pytest.raises(AtlasError):
        OperatingPoint.parse("fast")
    with pytest.raises(AtlasError):
        OperatingPoint(tolerance=0.1, alpha=0.2)


def test_stores_are_written_and_read_back(tmp_path):
    df = _records(4, lambda q: "train")
    write_store(tmp_path / "train", df)
    write_store(tmp_path / "train", df.head(2))  # replaced, not appended
    assert len(RecordStore(tmp_path / "train").load()) == 2
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(AtlasError, match="not a record store"):
        write_store(tmp_path / "other", df)
    df.to_parquet(tmp_path / "x.parquet")
    both = read_records([tmp_path / "train", tmp_path / "x.parquet"])
    assert len(both) == len(df)  # duplicates of a key: the first source wins


def test_live_questions_are_fresh():
    asked = {e.question for _, exs in load_demo_suite().values() for e in exs}
    assert not {q for q, _, _ in LIVE_QUESTIONS} & asked
