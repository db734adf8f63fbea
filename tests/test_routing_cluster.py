"""ClusterRouter on synthetic multi-tool records (hashing encoder: fast and exact to reason about):
decisions follow the clusters and the utility, thin cells back off, OOD falls back, new pairs get a
prior, benchmark posteriors separate mixed clusters, and fits are reproducible and saveable."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atlas_router.routers.persist import save_router
from atlas_router.config import parse_pool_config
from atlas_router.errors import AtlasError
from atlas_router.routers import load_router, read_manifest
from atlas_router.routers.cluster import ClusterRouter
from atlas_router.routers.encoders import build_encoder
from support.routing_data import synthetic_records

ARITH = "What is 417 plus 12? (case 999)"
CODE = "Write a Python function that returns 55 squared. (case 999)"
FACTS = "Who wrote the novel number 321? (case 999)"


@pytest.fixture(scope="module")
def encoder():
    return build_encoder("hashing:256", cache=False)


@pytest.fixture(scope="module")
def records():
    return synthetic_records(n_per_topic=60, seed=0)


@pytest.fixture(scope="module")
def fitted(records, encoder):
    return ClusterRouter(k=3, alpha=0.0, seed=0).fit(records, encoder)


def test_routes_each_topic_to_its_best_pair_and_explains(fitted):
    arith, code, facts = fitted.route([ARITH, CODE, FACTS])
    print("decisions:", arith.pair, code.pair, facts.pair)
    assert arith.pair == ("large", "python_code") and code.pair == ("large", "python_code")
    assert facts.tool == "web_search"  # small and large are both ~0.9 with search on facts
    e = facts.explanation
    assert {"cluster", "distance", "ood", "ood_threshold", "fallback", "alpha", "top", "benchmark"} <= set(e)
    assert e["ood"] is False and e["alpha"] == 0.0 and e["fallback"] is None
    assert e["top"][0]["tool"] == "web_search" and e["top"][1]["tool"] == "web_search"
    assert e["top"][0]["n"] >= 15 and e["top"][0]["utility"] == pytest.approx(facts.utility, abs=1e-4)
    assert max(e["benchmark"], key=e["benchmark"].get) == "facts"
    assert max(arith.explanation["benchmark"], key=arith.explanation["benchmark"].get) == "arith"


def test_alpha_trades_accuracy_for_cost(fitted):
    cheap = fitted.route([ARITH, FACTS], alpha=1.0)
    assert all(d.model == "small" and d.tool == "none" for d in cheap)  # the cheapest pair
    mid = fitted.route([ARITH, FACTS], alpha=0.5)
    print("alpha 0.5:", [d.pair for d in mid])
    assert [d.pair for d in mid] == [("small", "python_code"), ("small", "web_search")]
    with pytest.raises(AtlasError, match="alpha must lie in"):
        fitted.route([ARITH], alpha=1.5)


def test_texts_and_embeddings_route_the_same(fitted, encoder):
    texts = [ARITH, CODE, FACTS, "something else entirely"]
    assert [d.to_dict() for d in fitted.route(texts)] == [d.to_dict() for d in fitted.route(encoder.encode(texts))]
    with pytest.raises(AtlasError, match="width"):
        fitted.route(np.zeros((1, 8), dtype=np.float32))


def _close(a, b) -> bool:
    """Equal, numbers to 1e-9 relative (one path may round a last bit differently: rounding to 4 places
    can then differ by 1e-4 at a half-way value, hence the absolute slack)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-9, abs=1.01e-4)
    return a == b


@pytest.mark.parametrize("settings", [{"task_weight": 0.5, "ridge_weight": 0.5}, {"task_weight": 1.0, "ridge_weight": 0.0},
                                      {"task_weight": 0.0, "ridge_weight": 0.3}])
def test_one_query_and_a_batch_route_alike(records, encoder, settings):
    """A single query (and a few) take a shorter path than a batch (routers/cluster.py: ``_RoutePlan._one``,
    ``_few_choices``); both must give the same pairs, rankings, utilities and explanations, out of
    distribution and at operating points too."""
    from atlas_router.routers.operating_point import OperatingPoint, route_at

    router = ClusterRouter(k=3, alpha=0.3, seed=0, shrinkage=5.0, **settings).fit(records, encoder)
    texts = list(dict.fromkeys(records["query"]))[::7][:40] + ["something else entirely", "zz qq xx", ARITH, FACTS]
    emb = encoder.encode(texts)
    assert len(emb) > 8  # the batch takes the array path
    for alpha in (0.0, 0.3, 1.0):
        batch = router.route(emb, alpha=alpha)
        assert any(d.explanation["ood"] for d in batch) and not all(d.explanation["ood"] for d in batch)
        few = router.route(emb[:5], alpha=alpha)
        indices = router.route_indices(emb, alpha=alpha)
        assert [router.pairs_[j] for j in indices] == [d.pair for d in batch]
        assert [int(router.route_indices(emb[i:i + 1], alpha=alpha)[0]) for i in range(len(emb))] == indices.tolist()
        for i, d in enumerate(batch):
            one = router.route(emb[i:i + 1], alpha=alpha)[0]
            for other in (one, *few[i:i + 1]):
                assert other.pair == d.pair and other.ranking == d.ranking
                assert other.utility == pytest.approx(d.utility, abs=1e-12)
                assert _close(other.explanation, d.explanation), (other.explanation, d.explanation)
    for point in (OperatingPoint(), OperatingPoint(tolerance=0.2)):
        batch = route_at(router, emb, point)
        singles = [route_at(router, emb[i:i + 1], point)[0] for i in range(len(emb))]
        assert [d.pair for d in singles] == [d.pair for d in batch]
        assert [d.ranking for d in singles] == [d.ranking for d in batch]
        assert [d.explanation["expected_accuracy"] for d in singles] == pytest.approx(
            [d.explanation["expected_accuracy"] for d in batch])


def test_same_seed_same_router_and_decisions(records, encoder):
    a = ClusterRouter(k=3, seed=7, n_init=3).fit(records, encoder)
    b = ClusterRouter(k=3, seed=7, n_init=3).fit(records.sample(frac=1.0, random_state=1), encoder)
    assert np.array_equal(a.centroids_, b.centroids_) and np.array_equal(a.task_accuracy_, b.task_accuracy_)
    assert a.data_hash_ == b.data_hash_  # row order does not change what was learned
    qs = records["query"].unique()[:50].tolist()
    assert [d.to_dict() for d in a.route(qs)] == [d.to_dict() for d in b.route(qs)]


def test_save_and_load_keep_decisions_and_manifest(fitted, tmp_path, encoder):
    path = save_router(fitted, tmp_path / "router.atlas")
    loaded = load_router(path)  # rebuilds its encoder from the stored spec
    qs = [ARITH, CODE, FACTS]
    assert [d.to_dict() for d in loaded.route(qs)] == [d.to_dict() for d in fitted.route(qs)]
    m = read_manifest(path)
    print("manifest:", {k: m[k] for k in ("router", "k", "seed", "encoder", "data_hash", "n_queries")})
    assert m["router"] == "atlas-cluster" and m["k"] == 3 and m["seed"] == 0 and m["encoder"] == "hashing-256"
    assert m["data_hash"] == fitted.data_hash_ and m["n_queries"] == 180 and len(m["pairs"]) == 6
    assert {"numpy", "scikit-learn", "python"} <= set(m["versions"])
    (tmp_path / "bad.atlas").write_bytes(b"not a router")
    with pytest.raises(AtlasError, match="not a readable router file"):
        load_router(tmp_path / "bad.atlas")
    with pytest.raises(AtlasError, match="not found"):
        load_router(tmp_path / "missing.atlas")


def test_out_of_distribution_queries_fall_back_to_pooled_stats(fitted, records, encoder):
    emb = encoder.encode(records["query"].unique().tolist())
    _, dist = fitted.assign(emb)
    assert fitted.ood_threshold_ == pytest.approx(np.quantile(dist, 0.99), rel=1e-6)
    far = fitted.route(["zebra quantum lullaby marmalade violin"])[0]
    print("far query:", far.explanation["distance"], ">", far.explanation["ood_threshold"], far.pair)
    assert far.explanation["ood"] is True and far.explanation["stats"] == "pooled"
    assert "out of distribution" in far.explanation["fallback"]
    assert far.pair == ("large", "python_code")  # the best pooled pair
    near = ClusterRouter(k=3, alpha=0.0, ood_fallback="nearest").fit(records, encoder)
    kept = near.route(["zebra quantum lullaby marmalade violin"])[0]
    assert kept.explanation["ood"] is True and kept.explanation["stats"] == "cluster"


def test_shrinkage_backs_off_towards_the_pooled_accuracy(encoder):
    # two topics; 'spiky' looks perfect on 2 records of topic B but fails everywhere in topic A
    rows = []
    for t, word in enumerate(["apples", "rockets"]):
        for i in range(60):
            q = f"question about {word} number {i}"
            rows.append({"query_id": f"{word}{i}", "query": q, "benchmark": word, "model": "steady", "tool": "none",
                         "score": 0.6, "cost": 1.0})
            if word == "apples" or i < 2:
                rows.append({"query_id": f"{word}{i}", "query": q, "benchmark": word, "model": "spiky", "tool": "none",
                             "score": 0.0 if word == "apples" else 1.0, "cost": 1.0})
    df = pd.DataFrame(rows)
    q = ["question about rockets number 7"]
    # the paper's method with a given pseudo-count isolates shrinkage (no CV, no evidence rule)
    raw = ClusterRouter(k=2, alpha=0.0, method="paper", shrinkage=0.0).fit(df, encoder).route(q)[0]
    shrunk = ClusterRouter(k=2, alpha=0.0, method="paper", shrinkage=10.0).fit(df, encoder).route(q)[0]
    print("m=0:", raw.pair, raw.explanation["top"][:2], "\nm=10:", shrunk.pair, shrunk.explanation["top"][:2])
    assert raw.model == "spiky" and shrunk.model == "steady"
    spiky = next(t for t in shrunk.explanation["top"] if t["model"] == "spiky")
    assert spiky["n"] == 2 and spiky["accuracy"] < 0.6


def test_benchmark_posterior_separates_a_mixed_cluster(encoder):
    # one cluster (k=1) holds two benchmarks whose best pairs differ
    rows = []
    for word, best in (("apples", "a"), ("rockets", "b")):
        for i in range(40):
            q = f"tell me about {word} please {i}"
            for model in ("a", "b"):
                rows.append({"query_id": f"{word}{i}", "query": q, "benchmark": word, "model": model, "tool": "none",
                             "score": float(model == best or i % 2 == 0), "cost": 1.0})
    df = pd.DataFrame(rows)
    qs = ["tell me about apples please 3", "tell me about rockets please 4"]
    mixed = ClusterRouter(k=1, alpha=0.0, method="paper", task_weight=1.0).fit(df, encoder)
    plain = ClusterRouter(k=1, alpha=0.0, method="paper").fit(df, encoder)
    print("by benchmark:", [d.model for d in mixed.route(qs)], "plain:", [d.model for d in plain.route(qs)])
    assert [d.model for d in mixed.route(qs)] == ["a", "b"]
    assert len({d.model for d in plain.route(qs)}) == 1
    assert mixed.task_temperature_ > 0 and mixed.tasks_ == ["apples", "rockets"]


def test_new_pool_pairs_are_excluded_or_get_a_price_based_prior(records, encoder):
    pool = parse_pool_config({
        "models": [{"name": n, "backend": "openai", "endpoint": "http://127.0.0.1:9/v1",
                    "price": {"input": p, "output": p}} for n, p in (("small", 0.1), ("large", 1.0), ("fresh", 0.01))],
        "tools": [{"name": "none", "kind": "none"}, {"name": "python_code", "kind": "python_code"}],
    })
    excl = ClusterRouter(k=3, alpha=0.0, pool=pool).fit(records, encoder)
    assert ("fresh", "none") not in excl.pairs_
    assert all(d.tool in ("none", "python_code") for d in excl.route([ARITH, FACTS]))  # web_search is not in the pool
    prior = ClusterRouter(k=3, alpha=0.5, pool=pool, new_pair="prior", prior_accuracy=0.9).fit(records, encoder)
    d = prior.route([FACTS])[0]
    print("with prior:", d.pair, d.explanation["fallback"])
    assert d.pair == ("fresh", "none") and "no records" in d.explanation["fallback"]
    j = prior.pairs_.index(("fresh", "none"))
    assert prior.cost_[0, j] < prior.cost_[0, prior.pairs_.index(("small", "none"))]  # price-based, cheapest


def test_bad_settings_and_inputs_are_atlas_errors(records, encoder):
    with pytest.raises(AtlasError, match="not fitted"):
        ClusterRouter().route(["x"])
    with pytest.raises(AtlasError, match="k must be at least 1"):
        ClusterRouter(k=0).fit(records, encoder)
    with pytest.raises(AtlasError, match="lack column"):
        ClusterRouter().fit(records.drop(columns=["score"]), encoder)
    with pytest.raises(AtlasError, match="empty"):
        ClusterRouter().fit(records.iloc[:0], encoder)
    bad = records.copy()
    bad.loc[0, "score"] = 3.0
    with pytest.raises(AtlasError, match=r"\[0, 1\]"):
        ClusterRouter().fit(bad, encoder)


def _equal_or_worse_cheap_pair(seed: int = 0, n: int = 120) -> pd.DataFrame:
    """Two topics, two pairs: 'big' is right 90% everywhere at 10x the price; 'small' matches it on
    arithmetic and is right 30% on facts. No pair is more accurate anywhere; only cost tells them apart."""
    rng = np.random.default_rng(seed)
    skill = {("big", "none"): {"arith": 0.9, "facts": 0.9}, ("small", "none"): {"arith": 0.9, "facts": 0.3}}
    rows = []
    for topic in ("arith", "facts"):
        for i in range(n):
            q = (f"What is {rng.integers(100, 999)} plus {rng.integers(100, 999)}? (case {i})" if topic == "arith"
                 else f"Who wrote the novel number {rng.integers(100, 999)}? (case {i})")
            hit = rng.random() < 0.9  # the shared part of both pairs' successes (correlated, as real models are)
            for (model, tool), s in skill.items():
                score = float(hit) if s[topic] == 0.9 else float(hit and rng.random() < s[topic] / 0.9)
                rows.append({"query_id": f"{topic}-{i}", "benchmark": topic, "query": q, "model": model,
                             "tool": tool, "score": score, "cost": 1e-5 if model == "big" else 1e-6,
                             "input_tokens": 10, "output_tokens": 10, "calls": 1, "source": "synthetic"})
    return pd.DataFrame(rows)


def test_do_no_harm_is_decided_per_operating_point(encoder, tmp_path):
    """At a = 0 routing cannot beat the best single pair (nothing is more accurate than 'big'), so it
    keeps 'big'; with cost in the utility, or at "cheapest within 2 points", sending arithmetic to the
    equally accurate 'small' is a gain the cross-validation sees, and the router takes it."""
    r = ClusterRouter(seed=0, n_init=2).fit(_equal_or_worse_cheap_pair(), encoder)
    print("harm evidence:", r.harm_)
    assert r.single_ and r.single_at(0.0)  # the a = 0 decision (settings chosen there)
    assert not r.single_at(0.3) and not r.single_at(tolerance=0.02)
    arith, facts = "What is 123 plus 456? (case 999)", "Who wrote the novel number 777? (case 999)"
    assert [d.model for d in r.route([arith, facts], alpha=0.0)] == ["big", "big"]
    routed = r.route([arith, facts], alpha=0.3)
    assert [d.model for d in routed] == ["small", "big"] and routed[0].explanation["fallback"] is None
    from atlas_router.routers.operating_point import OperatingPoint, route_at
    assert [d.model for d in route_at(r, [arith, facts], OperatingPoint(tolerance=0.02))] == ["small", "big"]
    loaded = load_router(save_router(r, tmp_path / "router.atlas"))  # the per-point decisions are fitted state
    assert loaded.harm_ == r.harm_ and [d.model for d in loaded.route([arith, facts], alpha=0.3)] == ["small", "big"]
