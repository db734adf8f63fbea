"""Routing metrics against small cases computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from atlas_router.errors import AtlasError
from atlas_router.eval.metrics import (
    Gap,
    Point,
    aiq,
    apgr,
    arena_score,
    bootstrap_ci,
    call_shares,
    cost_at_quality,
    cpt,
    gaps,
    metrics_report,
    nondecreasing_hull,
    query_outcomes,
    references,
    single_pair_outcomes,
    wilcoxon_test,
)
from atlas_router.eval.replay import ReplayTable

# Five queries, three pairs. Cost per query: a = 1e-4, b = 3e-4, c = 2e-4 (USD); b makes 2 calls.
#        a  b  c     benchmark
# q1     1  1  1     x
# q2     0  1  0     x
# q3     0  1  1     y
# q4     0  0  1     y
# q5     0  1  0     y
SCORES = {"q1": (1, 1, 1), "q2": (0, 1, 0), "q3": (0, 1, 1), "q4": (0, 0, 1), "q5": (0, 1, 0)}
BENCH = {"q1": "x", "q2": "x", "q3": "y", "q4": "y", "q5": "y"}
COST = {"a": 1e-4, "b": 3e-4, "c": 2e-4}
CALLS = {"a": 1, "b": 2, "c": 1}

# Router points (alpha, accuracy, cost); the alpha = 0.5 point is the choices c, b, c, a, c below.
POINTS = [Point(1.0, 0.2, 1e-4), Point(0.5, 0.6, 2e-4), Point(0.0, 0.9, 2.5e-4)]
CHOICES = [("c", "none"), ("b", "none"), ("c", "none"), ("a", "none"), ("c", "none")]


@pytest.fixture(scope="module")
def replay() -> ReplayTable:
    rows = []
    for q, scores in SCORES.items():
        for model, s in zip("abc", scores):
            rows.append({"query_id": q, "query": f"question {q}", "benchmark": BENCH[q], "model": model,
                         "tool": "none", "score": float(s), "cost": COST[model], "calls": CALLS[model]})
    return ReplayTable(pd.DataFrame(rows))


def test_references_by_hand(replay):
    refs = references(replay)
    # accuracy a = 1/5 = 0.2, b = 4/5 = 0.8, c = 3/5 = 0.6 -> best single b; cheapest a
    assert refs.pairs[refs.best] == ("b", "none") and refs.best_accuracy == pytest.approx(0.8)
    assert refs.pairs[refs.cheapest] == ("a", "none") and refs.cheapest_cost == pytest.approx(1e-4)
    # oracle: every query has a pair scoring 1 -> 1.0; cheapest such pair per query:
    # q1 a (1e-4), q2 b (3e-4), q3 c (2e-4), q4 c (2e-4), q5 b (3e-4) -> mean 11e-4 / 5 = 2.2e-4
    assert refs.oracle_accuracy == pytest.approx(1.0)
    assert refs.oracle_cost == pytest.approx(2.2e-4)
    with pytest.raises(AtlasError, match="no records"):
        references(replay, best_pair=("zz", "none"))


def test_apgr_and_cpt_by_hand(replay):
    g = gaps(references(replay))
    # cost share s = (c - 1e-4) / (3e-4 - 1e-4): points at s = 0, 0.5, 0.75
    # pair gap (0.2 -> 0.8): PGR = 0 on [0, .5), (0.6-0.2)/0.6 = 0.6667 on [.5, .75), (0.9-0.2)/0.6 = 1.1667 on [.75, 1]
    # APGR = 0 * 0.5 + 0.6667 * 0.25 + 1.1667 * 0.25 = 0.45833
    assert apgr(POINTS, g["pair"], anchor=0.2) == pytest.approx(0.458333, abs=1e-5)
    assert cpt(POINTS, g["pair"], 0.5, anchor=0.2) == pytest.approx(0.5)
    assert cpt(POINTS, g["pair"], 0.8, anchor=0.2) == pytest.approx(0.75)
    # oracle gap (0.8 -> 1.0): PGR = (0.2-0.8)/0.2 = -3, (0.6-0.8)/0.2 = -1, (0.9-0.8)/0.2 = 0.5
    # APGR = -3 * 0.5 - 1 * 0.25 + 0.5 * 0.25 = -1.625; CPT(50%) = 0.75; CPT(80%): never
    assert apgr(POINTS, g["oracle"], anchor=0.2) == pytest.approx(-1.625)
    assert cpt(POINTS, g["oracle"], 0.5, anchor=0.2) == pytest.approx(0.75)
    assert cpt(POINTS, g["oracle"], 0.8, anchor=0.2) is None


def test_two_pair_share_is_routellm_strong_call_fraction():
    # weak costs 1, strong costs 5: sending 30% to strong costs 1 + 0.3 * 4 = 2.2 -> share 0.3
    gap = Gap(low=0.5, high=0.9, low_cost=1.0, high_cost=5.0)
    assert gap.share(2.2) == pytest.approx(0.3)
    # a router reaching 0.7 at 30% strong calls: PGR = (0.7-0.5)/0.4 = 0.5 -> CPT(50%) = 0.3;
    # and 0.9 at 100%: APGR = 0 * 0.3 + 0.5 * 0.7 = 0.35
    pts = [Point(0.5, 0.7, 2.2), Point(0.0, 0.9, 5.0)]
    assert cpt(pts, gap, 0.5, anchor=0.5) == pytest.approx(0.3)
    assert apgr(pts, gap, anchor=0.5) == pytest.approx(0.35)
    # a degenerate range (best single is the cheapest pair) has no shares
    assert math.isnan(apgr(pts, Gap(0.5, 0.9, 1.0, 1.0), anchor=0.5))


def test_aiq_by_hand():
    # points (cost, acc) (1, .2), (2, .6), (2.5, .9); at cost 2 the chord (1,.2)-(2.5,.9) is at .6667 > .6,
    # so the hull is (1, .2), (2.5, .9). With c_max = 3: x = 1/3 and 5/6.
    # area = 0 on [0, 1/3] + (0.2 + 0.9) / 2 * 0.5 + 0.9 * (1/6) = 0.275 + 0.15 = 0.425
    pts = [Point(1.0, 0.2, 1.0), Point(0.5, 0.6, 2.0), Point(0.0, 0.9, 2.5)]
    assert nondecreasing_hull(pts).tolist() == [[1.0, 0.2], [2.5, 0.9]]
    assert aiq(pts, c_max=3.0) == pytest.approx(0.425)
    # non-decreasing: (0, .4), (.5, .8), (1, .7) -> the last vertex is cut, flat .8 after x = .5
    # area = (0.4 + 0.8) / 2 * 0.5 + 0.8 * 0.5 = 0.3 + 0.4 = 0.7
    pts2 = [Point(1, 0.4, 0.0), Point(0.5, 0.8, 0.5), Point(0, 0.7, 1.0)]
    assert nondecreasing_hull(pts2).tolist() == [[0.0, 0.4], [0.5, 0.8]]
    assert aiq(pts2, c_max=1.0) == pytest.approx(0.7)


def test_arena_score_by_hand():
    # cost per 1000 queries = sqrt(200 * 0.0044) sits half-way in log2 space: C = 0.5;
    # A = 0.5: S = 1.1 * 0.5 * 0.5 / (0.1 * 0.5 + 0.5) = 0.275 / 0.55 = 0.5
    assert arena_score(0.5, math.sqrt(200 * 0.0044) / 1000) == pytest.approx(0.5)
    # 2e-4 USD per query = 0.2 per 1000: C = log2(200/0.2) / log2(200/0.0044) = 9.96578 / 15.47214 = 0.644112
    # S = 1.1 * 0.6 * 0.644112 / (0.06 + 0.644112) = 0.425114 / 0.704112 = 0.603759
    assert arena_score(0.6, 2e-4) == pytest.approx(0.603759, abs=1e-5)
    # clamped: dearer than 200 per 1000 -> C = 0 -> S = 0; cheaper than 0.0044 -> C = 1, S(A=1) = 1.1/1.1 = 1
    assert arena_score(0.9, 1.0) == 0.0
    assert arena_score(1.0, 1e-9) == pytest.approx(1.0)
    with pytest.raises(AtlasError):
        arena_score(1.5, 1e-4)


def test_cost_at_quality_and_calls(replay):
    # 95% of best single 0.8 = 0.76: only (0.9, 2.5e-4) reaches it
    at = cost_at_quality(POINTS, 0.76)
    assert at is not None and at.cost == pytest.approx(2.5e-4) and at.alpha == 0.0
    assert cost_at_quality(POINTS, 0.95) is None
    out = query_outcomes(replay, CHOICES)
    # choices c, b, c, a, c -> scores 1, 1, 1, 0, 0 = 0.6; costs (2+3+2+1+2)e-4 / 5 = 2e-4
    assert out.score.mean() == pytest.approx(0.6) and out.cost.mean() == pytest.approx(2e-4)
    shares = call_shares(out)
    # calls 1, 2, 1, 1, 1 = 6 -> 1.2 per query; a 1/6, b 2/6, c 3/6 of calls; queries a .2, b .2, c .6
    assert shares["calls_per_query"] == pytest.approx(1.2)
    assert shares["share"]["b"] == {"queries": 0.2, "calls": pytest.approx(2 / 6, abs=1e-6)}
    assert shares["share"]["c"]["calls"] == pytest.approx(0.5)


def test_bootstrap_and_wilcoxon():
    # constant values: no spread, the CI is the value itself
    assert bootstrap_ci(np.full(20, 0.25)) == (0.25, 0.25)
    v = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 1] * 5, dtype=float)
    lo, hi = bootstrap_ci(v, seed=3)
    assert lo < v.mean() < hi and 0 <= lo and hi <= 1
    assert bootstrap_ci(v, seed=3) == (lo, hi)  # seeded: reproducible
    wide = bootstrap_ci(v[:10], seed=3)
    assert wide[1] - wide[0] > hi - lo  # fewer queries, wider interval
    # five benchmarks all improved by 0.1..0.5: W- = 0, exact two-sided p = 2 * 1/2^5 = 0.0625
    router = {f"b{i}": 0.5 + 0.1 * i for i in range(1, 6)}
    base = {f"b{i}": 0.5 for i in range(1, 6)}
    res = wilcoxon_test(router, base)
    assert res["pvalue"] == pytest.approx(0.0625) and res["statistic"] == 0.0
    assert (res["wins"], res["losses"], res["ties"]) == (5, 0, 0)
    assert wilcoxon_test(base, base)["pvalue"] == 1.0


def test_metrics_report(replay):
    refs = references(replay)
    out = query_outcomes(replay, CHOICES)
    base = {"best-single": single_pair_outcomes(replay, ("b", "none"))}
    rep = metrics_report(POINTS, out, refs, base, n_resamples=200)
    assert rep["accuracy"] == pytest.approx(0.6)
    assert rep["vs_best_single"]["accuracy_delta"] == pytest.approx(0.6 - 0.8)
    assert rep["vs_best_single"]["cost_ratio"] == pytest.approx(2 / 3)
    assert rep["vs_oracle"]["accuracy_ratio"] == pytest.approx(0.6)
    assert rep["apgr"]["pair"] == pytest.approx(0.458333, abs=1e-5)
    assert rep["cpt"]["pair"] == {"50": pytest.approx(0.5), "80": pytest.approx(0.75)}
    # AIQ over [0, c_max = 3e-4] (the dearest pair) equals the hand case above: 0.425
    assert rep["aiq"] == pytest.approx(0.425)
    assert rep["arena_score"] == pytest.approx(0.603759, abs=1e-5)
    assert rep["cost_at_quality"]["cost_ratio_to_best_single"] == pytest.approx(2.5 / 3)
    # per benchmark: router x = (1+1)/2 = 1, y = (1+0+0)/3 = .333; best single x = 1, y = (1+0+1)/3 = .667
    b = rep["baselines"]["best-single"]
    assert rep["per_benchmark"] == {"x": pytest.approx(1.0), "y": pytest.approx(1 / 3)}
    assert b["accuracy_delta"] == pytest.approx(-0.2)
    assert b["wilcoxon"]["losses"] == 1 and b["wilcoxon"]["ties"] == 1
    lo, hi = b["accuracy_delta_ci"]
    assert lo <= -0.2 <= hi


def test_replay_metrics_of_a_fitted_router():
    from atlas_router.eval.metrics import replay_metrics
    from atlas_router.eval.replay import evaluate_router
    from atlas_router.eval.split import split_records
    from atlas_router.routers.cluster import ClusterRouter
    from atlas_router.routers.encoders import build_encoder
    from support.routing_data import synthetic_records

    train, test = split_records(synthetic_records(n_per_topic=40, seed=5), 0.3, 0)
    router = ClusterRouter(k=3, alpha=0.2, n_init=2).fit(train, build_encoder("hashing:128", cache=False))
    rep_table = ReplayTable(test)
    rep = replay_metrics(router, rep_table, [0.0, 0.2, 0.5, 1.0], n_resamples=200)
    direct = evaluate_router("atlas-cluster", router, rep_table, alpha=0.2).overall
    assert rep["alpha"] == 0.2 and rep["accuracy"] == pytest.approx(direct.accuracy)
    assert rep["cost"] == pytest.approx(direct.cost) and rep["calls_per_query"] == pytest.approx(direct.calls)
    assert set(rep["baselines"]) == {"best-single", "cheapest"} and len(rep["points"]) == 4
    # tools help on this table: routing beats the best single pair on accuracy
    assert rep["accuracy"] > rep["references"]["best_single"]["accuracy"]
    print({k: rep[k] for k in ("accuracy", "cost", "apgr", "cpt", "aiq", "arena_score")})
