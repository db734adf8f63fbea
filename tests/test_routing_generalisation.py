"""The product's promise on queries the router never saw, over more than one split of the LLMRouter table.

Two seeded 70/30 query splits; every router with its default settings, fitted on train, replayed at
a = 0 on test. atlas-cluster must be at least as accurate as best single on each split (its margin is
printed with a 95% paired bootstrap interval), its mean must be >= each baseline's mean, and no baseline
may be ahead of it by more than 0.01 on any split. A leave-benchmarks-out split checks "do no harm" when
whole kinds of questions are missing from training. The trained baselines (mlp, bert, routerdc) are
compared on one split in test_routing_llmrouter.py and on five by bench/routing_generalisation.py:
training them three more times would dominate the suite's runtime.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from atlas_router.eval.generalisation import compare, leave_benchmarks_out, split_protocols
from atlas_router.routers.encoders import EmbeddingCache, build_encoder
from support.routing_data import embedding_cache_dir, llmrouter_frame

SEEDS = [0, 1]
# each split fits the cross-validated cluster router on ~3.8k queries; a busy two-core machine needs minutes
pytestmark = pytest.mark.timeout(1800)
BASELINES = ["random", "knn"]
ROUTERS = ["atlas-cluster", "best-single", *BASELINES]


@pytest.fixture(scope="module")
def encoder():
    # ATLAS_TEST_EMBED_CACHE: reuse MiniLM embeddings of an earlier run (they depend only on the texts)
    cache = os.environ.get("ATLAS_TEST_EMBED_CACHE") or embedding_cache_dir()
    enc = build_encoder("sentence-transformers", cache=EmbeddingCache(cache))
    enc.encode(sorted(set(llmrouter_frame()["query"])))  # one pass; every fit then hits the cache
    return enc


@pytest.fixture(scope="module")
def comparisons(encoder):
    return [compare(p, ROUTERS, encoder, seed=0, progress=print) for p in split_protocols(llmrouter_frame(), SEEDS)]


def test_cluster_router_holds_the_promise_on_several_splits(comparisons):
    means = {name: float(np.mean([c.accuracy()[name] for c in comparisons])) for name in ROUTERS}
    for c in comparisons:
        acc = c.accuracy()
        print(f"\n{c.protocol}: " + " ".join(f"{n} {a:.4f}" for n, a in acc.items()))
        print(f"  settings: {c.settings['atlas-cluster']}")
        m_single = c.margin("best-single")
        best = c.best_baseline()
        m_best = c.margin(best)
        print(f"  margin over best single {m_single['margin']:+.4f} [{m_single['low']:+.4f}, {m_single['high']:+.4f}]; "
              f"over {best} {m_best['margin']:+.4f} [{m_best['low']:+.4f}, {m_best['high']:+.4f}]")
        assert acc["atlas-cluster"] >= acc["best-single"]
        assert m_single["high"] > 0  # the interval is not entirely below best single
        for b in BASELINES:
            assert acc[b] <= acc["atlas-cluster"] + 0.01, f"{c.protocol}: {b} {acc[b]:.4f} ahead by more than 0.01"
    print("\nmeans: " + " ".join(f"{n} {a:.4f}" for n, a in means.items()))
    for b in BASELINES:
        assert means["atlas-cluster"] >= means[b]


def test_cluster_router_does_no_harm_without_some_benchmarks(encoder):
    proto = leave_benchmarks_out(llmrouter_frame(), seed=0, n_out=3)
    c = compare(proto, ["atlas-cluster", "best-single"], encoder, seed=0)
    acc = c.accuracy()
    m = c.margin("best-single")
    print(f"\n{proto.name}: {acc}; margin {m['margin']:+.4f} [{m['low']:+.4f}, {m['high']:+.4f}]")
    assert acc["atlas-cluster"] >= acc["best-single"] - 0.005
