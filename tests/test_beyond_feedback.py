"""Online feedback over a fitted ClusterRouter: later decisions change, a restart keeps them, new pairs are probed."""

from __future__ import annotations

import json

import pytest

from atlas_router.routers.persist import save_router
from atlas_router.errors import AtlasError
from atlas_router.routers.cluster import ClusterRouter
from atlas_router.routers.encoders import build_encoder
from atlas_router.routers.feedback import FeedbackStore, OnlineClusterRouter, router_fingerprint, sidecar_path
from support.routing_data import synthetic_records


@pytest.fixture(scope="module")
def encoder():
    return build_encoder("hashing:256", cache=False)


@pytest.fixture(scope="module")
def records():
    return synthetic_records(n_per_topic=60, seed=0)


@pytest.fixture(scope="module")
def fitted(encoder, records):
    return ClusterRouter(k=3, alpha=0.0, n_init=2).fit(records, encoder)


@pytest.fixture()
def router_file(tmp_path, fitted):
    return save_router(fitted, tmp_path / "router.joblib")


def _in_distribution(online, records, topic):
    """A training query of ``topic`` that the router does not flag as out of distribution."""
    for q in records[records.benchmark == topic]["query"].unique():
        d = online.route([q])[0]
        if not d.explanation["ood"]:
            return q, d
    raise AssertionError(f"no in-distribution query for {topic}")


def test_feedback_changes_later_decisions_and_survives_a_restart(router_file, encoder, records):
    online = OnlineClusterRouter.open(router_file, encoder=encoder)
    q, before = _in_distribution(online, records, "arith")
    other_q, other_before = _in_distribution(online, records, "facts")
    # without feedback the wrapper decides as the base router does
    assert before.pair == online.base.route([q])[0].pair
    assert before.explanation["feedback"] == {"n": 0, "events": 0, "changed_choice": False}
    cluster = before.explanation["cluster"]
    print("before:", before.pair, "cluster", cluster, "top", before.explanation["top"])

    # the chosen pair starts failing in this cluster
    counted = online.record_many([q] * 30, [before.pair], [0.0] * 30, [1e-6] * 30)
    assert counted == [cluster] * 30
    after = online.route([q])[0]
    print("after 30 failures:", after.pair, after.explanation["top"])
    assert after.pair != before.pair
    assert after.explanation["feedback"]["changed_choice"] is True
    assert after.explanation["base_choice"] == before.pair[0] + "+" + before.pair[1]
    failed = next(t for t in after.explanation["top"] + before.explanation["top"]
                  if (t["model"], t["tool"]) == before.pair and t.get("n_feedback"))
    assert failed["n_feedback"] == 30
    if other_before.explanation["cluster"] != cluster:  # other clusters keep their choice
        assert online.route([other_q])[0].pair == other_before.pair

    # the sidecar beside the router file holds the counts; a restart reads them back
    side = sidecar_path(router_file)
    data = json.loads(side.read_text())
    assert data["events"] == 30 and data["format"] == "atlas-feedback"
    cell = next(c for c in data["cells"] if c["cluster"] == cluster and (c["model"], c["tool"]) == before.pair)
    assert (cell["n"], cell["successes"]) == (30.0, 0.0)
    assert not [p for p in side.parent.iterdir() if p.name.startswith(".tmp-")]
    restarted = OnlineClusterRouter.open(router_file, encoder=encoder)
    assert restarted.route([q])[0].pair == after.pair


def test_new_pair_gets_probes_then_competes(router_file, encoder, records):
    online = OnlineClusterRouter.open(router_file, encoder=encoder, probe_budget=2)
    q, usual = _in_distribution(online, records, "arith")
    online.add_pair("tiny", "none", cost=0.0, prior_accuracy=0.3)
    assert ("tiny", "none") in online.pairs_
    first, second, third = (online.route([q])[0] for _ in range(3))
    assert first.pair == second.pair == ("tiny", "none")
    assert [first.explanation["probe"]["index"], second.explanation["probe"]["index"]] == [1, 2]
    # budget spent: back to the usual choice (prior 0.3 does not beat the cluster's best)
    assert third.explanation["probe"] is None and third.pair == usual.pair
    # a restart keeps the added pair and the spent probes
    restarted = OnlineClusterRouter.open(router_file, encoder=encoder, probe_budget=2)
    assert ("tiny", "none") in restarted.pairs_
    assert restarted.route([q])[0].explanation["probe"] is None
    # good feedback makes the new (free) pair win its cluster on merit once cost counts (alpha 0.5):
    # before, U(tiny) = 0.5 * 0.3 = 0.15; after 60 successes 0.5 * (0.3 * 10 + 60) / 70 = 0.45
    assert restarted.route([q], alpha=0.5)[0].pair != ("tiny", "none")
    restarted.record_many([q] * 60, [("tiny", "none")], [1.0] * 60, [0.0] * 60)
    won = restarted.route([q], alpha=0.5)[0]
    assert won.pair == ("tiny", "none") and won.explanation["probe"] is None
    assert won.explanation["feedback"]["n"] == 60


def test_feedback_refuses_bad_input(router_file, encoder, records, tmp_path):
    online = OnlineClusterRouter.open(router_file, encoder=encoder)
    q = records["query"].iloc[0]
    with pytest.raises(AtlasError, match="score"):
        online.record(q, "small", "none", 1.5)
    with pytest.raises(AtlasError, match="unknown pair"):
        online.record(q, "nobody", "none", 1.0)
    with pytest.raises(AtlasError, match="already"):
        online.add_pair("small", "none")
    online.record(q, "small", "none", 1.0)
    # a sidecar recorded for one fit is refused by another fit
    other = ClusterRouter(k=2, alpha=0.0, n_init=1, seed=1).fit(records, encoder)
    with pytest.raises(AtlasError, match="another fit"):
        FeedbackStore(sidecar_path(router_file), router_fingerprint(other))
    bad = tmp_path / "bad.feedback.json"
    bad.write_text("{not json")
    with pytest.raises(AtlasError, match="unreadable"):
        FeedbackStore(bad, router_fingerprint(other))


def test_online_router_replays_like_its_base(fitted, records):
    from atlas_router.eval.replay import ReplayTable, evaluate_router

    replay = ReplayTable(records)
    online = OnlineClusterRouter(fitted)  # feedback in memory only
    same = evaluate_router("online", online, replay, alpha=0.0)
    assert same.overall.accuracy == pytest.approx(evaluate_router("base", fitted, replay, alpha=0.0).overall.accuracy)
    with pytest.raises(AtlasError, match="in memory"):
        online.store.save()


def test_online_router_fits_its_base_and_starts_fresh_feedback(fitted, records, encoder):
    """fit() refits the wrapped router; feedback counted against other clusters is not carried over (the
    same fit again, same records and seed, keeps it)."""
    online = OnlineClusterRouter(ClusterRouter(k=2, alpha=0.0, n_init=1, seed=1))
    assert not online.is_fitted
    online.fit(records, encoder)
    q = records["query"].iloc[0]
    online.record(q, *online.pairs_[0], 1.0)
    assert online.store.events == 1
    online.fit(records, encoder)
    assert online.store.events == 1
    online.base.set_params(seed=2, k=3)
    online.fit(records, encoder)
    assert online.store.events == 0 and online.route([q])[0].pair in online.pairs_
