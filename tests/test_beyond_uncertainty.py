"""Cell uncertainty of a fitted ClusterRouter: Beta/Wilson intervals by hand, thin cells, LCB routing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atlas_router.errors import AtlasError
from atlas_router.routers.cluster import ClusterRouter
from atlas_router.routers.encoders import build_encoder
from atlas_router.routers.uncertainty import (
    LCBRouter,
    beta_interval,
    cell_intervals,
    intervals_table,
    thin_cell_warnings,
    wilson_interval,
)


def test_beta_interval_by_hand():
    # n = 0: Beta(1, 1) is uniform: mean 0.5, central 95% interval [0.025, 0.975]
    mean, lo, hi = beta_interval(np.array([0.0]), np.array([0.0]))
    assert (mean[0], lo[0], hi[0]) == pytest.approx((0.5, 0.025, 0.975))
    # s = n = 1: Beta(2, 1) has CDF x^2, so quantile q is sqrt(q): sqrt(.025) = 0.158114, sqrt(.975) = 0.987421
    mean, lo, hi = beta_interval(np.array([1.0]), np.array([1.0]))
    assert mean[0] == pytest.approx(2 / 3)
    assert (lo[0], hi[0]) == pytest.approx((0.158114, 0.987421), abs=1e-6)


def test_wilson_interval_by_hand():
    # s = 8, n = 10, z = 1.959964, z^2 = 3.841459: denom = 1 + 3.841459/10 = 1.384146
    # centre = (0.8 + 3.841459/20) / 1.384146 = 0.992073 / 1.384146 = 0.716740
    # half = 1.959964 * sqrt(0.8*0.2/10 + 3.841459/400) / 1.384146 = 1.959964 * 0.160011 / 1.384146 = 0.226577
    lo, hi = wilson_interval(np.array([8.0]), np.array([10.0]))
    assert (lo[0], hi[0]) == pytest.approx((0.490163, 0.943317), abs=1e-5)
    # no trials: no information
    lo, hi = wilson_interval(np.array([0.0]), np.array([0.0]))
    assert (lo[0], hi[0]) == (0.0, 1.0)
    with pytest.raises(AtlasError, match="confidence"):
        wilson_interval(np.array([1.0]), np.array([2.0]), confidence=1.5)


def _lucky_records() -> pd.DataFrame:
    """One topic. 'solid' answers 40 queries, 34 right (0.85); 'lucky' has records for 2 queries, both right."""
    rows = []
    for i in range(40):
        q = f"Compute the sum of {i} and {i + 7} please"
        rows.append({"query_id": f"q{i}", "query": q, "benchmark": "arith", "model": "solid", "tool": "none",
                     "score": float(i >= 6), "cost": 1e-5})
        if i < 2:
            rows.append({"query_id": f"q{i + 100}", "query": q + " now", "benchmark": "arith", "model": "lucky",
                         "tool": "none", "score": 1.0, "cost": 1e-5})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def lucky_router() -> ClusterRouter:
    enc = build_encoder("hashing:64", cache=False)
    return ClusterRouter(k=1, alpha=0.0, shrinkage=0.0, n_init=1).fit(_lucky_records(), enc)


def test_intervals_table_of_a_fitted_router(lucky_router):
    table = intervals_table(lucky_router, thin=10)
    # one cluster + the pooled row, two pairs
    assert len(table) == 2 * 2 and set(table["cluster"]) == {0, -1}
    lucky = table[(table.cluster == 0) & (table.model == "lucky")].iloc[0]
    solid = table[(table.cluster == 0) & (table.model == "solid")].iloc[0]
    assert (lucky.n, lucky.successes, lucky.thin) == (2, 2.0, True)
    assert (solid.n, solid.successes, solid.thin) == (40, 34.0, False)
    # lucky: Beta(3, 1) has CDF x^3: lower 0.025^(1/3) = 0.292402; posterior mean 3/4
    assert lucky.beta_low == pytest.approx(0.292402, abs=1e-6) and lucky.posterior_mean == pytest.approx(0.75)
    # Wilson always contains the observed rate
    assert (table.wilson_low <= table.accuracy + 1e-12).all() and (table.accuracy <= table.wilson_high + 1e-12).all()
    iv = cell_intervals(lucky_router, confidence=0.5)
    wide = cell_intervals(lucky_router, confidence=0.99)
    assert (wide.beta_high - wide.beta_low > iv.beta_high - iv.beta_low).all()


def test_lcb_prefers_the_supported_pair(lucky_router):
    query = "Compute the sum of 3 and 10 please"
    # the point estimate picks the lucky pair (1.0 on 2 records over 0.85 on 40) ...
    assert lucky_router.route([query], alpha=0.0)[0].model == "lucky"
    warnings = thin_cell_warnings(lucky_router, alpha=0.0, thin=10)
    assert warnings == ["cluster 0: chosen pair lucky rests on n=2 < 10 graded records in the cluster"]
    # ... the lower bound does not: LCB(lucky) = 0.29 < LCB(solid) = Beta(35, 7) 2.5% quantile ~ 0.70
    d = LCBRouter(lucky_router).route([query], alpha=0.0)[0]
    assert d.model == "solid"
    assert d.explanation["n"] == 40 and not d.explanation["thin"]
    lo, hi = d.explanation["interval"]
    assert 0.65 < lo < 0.85 < hi < 0.95
    assert LCBRouter(lucky_router, method="wilson").route([query])[0].model == "solid"
    with pytest.raises(AtlasError, match="not fitted"):
        LCBRouter(ClusterRouter()).route([query])


def test_lcb_router_is_a_router_that_fits_its_base(lucky_router):
    """The wrapper is an estimator like any router: fit() fits the wrapped router, and the result routes
    as the wrapper of an already fitted router does (same settings, same records, same seed)."""
    from atlas_router.routers.base import Router
    from atlas_router.routers.encoders import build_encoder

    lcb = LCBRouter(ClusterRouter(k=1, alpha=0.0, shrinkage=0.0, n_init=1), confidence=0.9)
    assert isinstance(lcb, Router) and not lcb.is_fitted
    assert lcb.fit(_lucky_records(), build_encoder("hashing:64", cache=False)) is lcb and lcb.is_fitted
    assert lcb.pairs_ == lucky_router.pairs_ and lcb.get_params()["confidence"] == 0.9
    query = "Compute the sum of 3 and 10 please"
    d = lcb.route(query)[0]
    assert d.pair == LCBRouter(lucky_router, confidence=0.9).route([query])[0].pair == ("solid", "none")
    assert d.ranked()[0] == ("solid", "none") and ("lucky", "none") in d.ranked()


def test_lcb_router_replays_like_any_router(lucky_router):
    from atlas_router.eval.replay import ReplayTable, evaluate_router

    records = _lucky_records()
    replay = ReplayTable(records)
    lcb = evaluate_router("lcb", LCBRouter(lucky_router), replay, alpha=0.0)
    plain = evaluate_router("plain", lucky_router, replay, alpha=0.0)
    # every query: plain picks 'lucky' (no record for most queries: failures), LCB picks 'solid' (0.85)
    assert lcb.choices == {"solid": replay.table.n_queries}
    assert lcb.overall.accuracy > plain.overall.accuracy
