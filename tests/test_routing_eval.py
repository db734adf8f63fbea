"""Replay evaluation: query-level splits, lookups of recorded outcomes (missing ones fail at mean
cost), per-benchmark tables, the alpha frontier, the OOD protocol and the report."""

from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd
import pytest

from atlas_router.errors import AtlasError
from atlas_router.eval.replay import ReplayTable
from atlas_router.eval.report import write_report
from atlas_router.eval.run import cluster_points, reaches_at_lower_cost, run_evaluation
from atlas_router.eval.split import split_records
from atlas_router.routers import make_router
from atlas_router.routers.base import Decision
from atlas_router.routers.encoders import build_encoder
from support.routing_data import synthetic_records


@pytest.fixture(scope="module")
def records():
    return synthetic_records(n_per_topic=60, seed=2)


@pytest.fixture(scope="module")
def evaluation(records):
    train, test = split_records(records, test_size=0.3, seed=0)
    return run_evaluation(train, test, ["atlas-cluster", "random", "best-single", "oracle", "knn", "mlp"],
                          alpha=0.0, encoder=build_encoder("hashing:256", cache=False), seed=0)


def test_split_is_by_query_seeded_and_stratified(records):
    train, test = split_records(records, test_size=0.3, seed=5)
    assert set(train.query_id).isdisjoint(set(test.query_id)) and len(train) + len(test) == len(records)
    per_bench = test.drop_duplicates("query_id").benchmark.value_counts()
    assert per_bench.to_dict() == {"arith": 18, "code": 18, "facts": 18}  # 30% of 60 per benchmark
    again, _ = split_records(records, test_size=0.3, seed=5)
    other, _ = split_records(records, test_size=0.3, seed=6)
    assert again.equals(train) and set(other.query_id) != set(train.query_id)
    with pytest.raises(AtlasError, match="test_size"):
        split_records(records, test_size=1.5)


def test_missing_records_count_as_failures_at_the_pairs_mean_cost():
    df = pd.DataFrame([
        {"query_id": "q1", "query": "one", "benchmark": "b", "model": "m", "tool": "none", "score": 1.0, "cost": 2.0},
        {"query_id": "q1", "query": "one", "benchmark": "b", "model": "n", "tool": "none", "score": 1.0, "cost": 4.0},
        {"query_id": "q2", "query": "two", "benchmark": "b", "model": "m", "tool": "none", "score": 1.0, "cost": 6.0},
    ])
    replay = ReplayTable(df)
    result = replay.summarise("x", [Decision("n", "none", 0.0), Decision("n", "none", 0.0)])
    o = result.overall
    print(o, result.notes)
    assert o.accuracy == 0.5 and o.missing == 1 and o.cost == pytest.approx((4.0 + 4.0) / 2)
    assert "no record for the query" in result.notes[0]


def test_results_per_router_and_benchmark(evaluation):
    data = evaluation.to_json()
    routers = data["routers"]
    for name, r in routers.items():
        print(f"{name:14s} {r['accuracy']:.3f} {r['cost']:.2e} {r['calls']:.2f}")
    assert set(routers) == {"atlas-cluster", "random", "best-single", "oracle", "knn", "mlp"}
    for r in routers.values():
        assert set(r["per_benchmark"]) == {"arith", "code", "facts"} and r["missing"] == 0
        n = sum(b["n"] for b in r["per_benchmark"].values())
        assert r["accuracy"] == pytest.approx(sum(b["accuracy"] * b["n"] for b in r["per_benchmark"].values()) / n)
    assert routers["oracle"]["accuracy"] == max(r["accuracy"] for r in routers.values())
    assert routers["atlas-cluster"]["accuracy"] > routers["best-single"]["accuracy"] > routers["random"]["accuracy"]
    assert routers["atlas-cluster"]["calls"] > 1.0  # tool pairs make two model calls


def test_frontier_trades_accuracy_for_cost(evaluation):
    front = evaluation.frontier["atlas-cluster"]
    assert [p["alpha"] for p in front] == sorted(p["alpha"] for p in front)
    assert front[0]["cost"] > front[-1]["cost"] and front[0]["accuracy"] > front[-1]["accuracy"]
    best = evaluation.results["best-single"].overall
    print([(p["alpha"], round(p["accuracy"], 3), p["cost"]) for p in front], best)
    assert reaches_at_lower_cost(front, best.accuracy, best.cost) is not None
    assert reaches_at_lower_cost(front, 2.0, best.cost) is None


def test_ood_protocol_fits_on_named_benchmarks_only(records):
    train, test = split_records(records, test_size=0.3, seed=0)
    ev = run_evaluation(train, test, ["atlas-cluster", "best-single"], alpha=0.0,
                        encoder=build_encoder("hashing:256", cache=False), ood=["arith"])
    print(ev.to_json()["protocol"], ev.train_benchmarks, ev.test_benchmarks, ev.notes)
    assert ev.train_benchmarks == ["arith"] and ev.test_benchmarks == ["arith", "code", "facts"]
    assert ev.n_train_queries == 42 and ev.to_json()["protocol"] == {"ood": ["arith"]}
    assert ev.results["atlas-cluster"].per_benchmark["facts"].n == 18
    with pytest.raises(AtlasError, match="not in the train records: poetry"):
        run_evaluation(train, test, ["best-single"], ood=["poetry"])


def test_report_has_tables_frontier_bars_and_cluster_map(evaluation, tmp_path):
    md, page = write_report(evaluation.to_json(), tmp_path, cluster_points=cluster_points(evaluation))
    text = md.read_text()
    assert "| atlas-cluster |" in text and "## facts" in text
    html = page.read_text()
    images = re.findall(r"src=\"data:image/png;base64,([A-Za-z0-9+/=]+)\"", html)
    assert len(images) == 3 and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert {p.name for p in tmp_path.glob("*.png")} == {"frontier.png", "benchmarks.png", "clusters.png"}
    points, labels = cluster_points(evaluation)
    # K is chosen by cross-validation (K = 1 is allowed): every label is one of the router's clusters
    assert points.shape == (evaluation.n_test_queries, 2)
    assert set(np.unique(labels).tolist()) <= set(range(evaluation.routers["atlas-cluster"].n_clusters_))


def test_unfitted_and_empty_inputs_are_atlas_errors(records):
    with pytest.raises(AtlasError, match="empty"):
        run_evaluation(records.iloc[:0], records, ["best-single"])
    with pytest.raises(AtlasError, match="not fitted"):
        make_router("knn").route(["x"])
