"""MUST HOLD on the public LLMRouter table (9 open LLMs, 14 benchmarks), split 70/30 by query:

* at a = 0 the cluster router is more accurate than best-single and than every learned baseline
  (knn, mlp, bert, routerdc), all fitted on the same train records with the same encoder;
* with a > 0 it reaches best-single's accuracy at a lower cost per query.

The figures are printed; the whole comparison runs the real MiniLM encoder and trains the baselines
with their defaults (nothing is weakened for the comparison).
"""

from __future__ import annotations

import pytest

from atlas_router.eval.run import reaches_at_lower_cost, run_evaluation
from atlas_router.eval.split import split_records
from atlas_router.routers.encoders import EmbeddingCache, build_encoder
from support.routing_data import embedding_cache_dir, llmrouter_frame

LEARNED = ["knn", "mlp", "bert", "routerdc"]


@pytest.fixture(scope="module")
def evaluation():
    train, test = split_records(llmrouter_frame(), test_size=0.3, seed=0)
    encoder = build_encoder("sentence-transformers", cache=EmbeddingCache(embedding_cache_dir()))
    encoder.encode(sorted(set(train["query"]) | set(test["query"])))  # one pass; routers then hit the cache
    return run_evaluation(train, test, ["atlas-cluster", "best-single", "oracle", "random", *LEARNED], alpha=0.0,
                          encoder=encoder, seed=0, progress=print)


def test_cluster_router_beats_best_single_and_learned_baselines_at_alpha_0(evaluation):
    r = evaluation.results
    print(f"\n{evaluation.n_train_queries} train / {evaluation.n_test_queries} test queries")
    for name, res in r.items():
        o = res.overall
        print(f"{name:14s} accuracy {o.accuracy:.4f}  cost/query {o.cost:.3e}  fit {res.fit_s:6.1f}s  "
              f"route {res.route_s:6.2f}s")
    cluster = r["atlas-cluster"].overall.accuracy
    assert r["oracle"].overall.accuracy > cluster > r["random"].overall.accuracy
    assert cluster > r["best-single"].overall.accuracy
    for name in LEARNED:
        assert cluster > r[name].overall.accuracy, f"atlas-cluster {cluster:.4f} <= {name} {r[name].overall.accuracy:.4f}"


def test_cluster_router_reaches_best_single_accuracy_at_lower_cost(evaluation):
    best = evaluation.results["best-single"].overall
    front = evaluation.frontier["atlas-cluster"]
    print(f"\nbest-single: accuracy {best.accuracy:.4f} cost/query {best.cost:.3e}")
    for p in front:
        print(f"atlas-cluster a={p['alpha']:<5g} accuracy {p['accuracy']:.4f} cost/query {p['cost']:.3e}")
    point = reaches_at_lower_cost([p for p in front if p["alpha"] > 0], best.accuracy, best.cost)
    assert point is not None, "no a > 0 reaches best-single's accuracy at a lower cost"
    print(f"a={point['alpha']:g}: accuracy {point['accuracy']:.4f} at {point['cost'] / best.cost:.1%} of "
          "best-single's cost")
    assert point["accuracy"] >= best.accuracy and point["cost"] < best.cost
