"""Operating points a user can state: "the cheapest pair within T accuracy points of the best".

The cost weight a of ``U = (1-a)·Acc - a·Cost/scale`` means different things in different pools: the
cost term is divided by the pool's largest mean cost, so a = 0.5 picks the cheapest pair of a pool of
tiny cheap models and a strong pair of a pool of expensive ones. A tolerance in accuracy points means
the same thing everywhere: for each query, take the router's expected accuracy of every pair, keep the
pairs within ``tolerance`` of the best one, and choose the cheapest of those. ``tolerance = 0`` is the
most accurate pair (ties to the cheaper); ``tolerance = 1`` is the cheapest pair.

The cost weight stays available (``OperatingPoint(alpha=...)``), routed by the router's own utility.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from atlas_router.errors import AtlasError
from atlas_router.routers.base import Decision, Router

# Default: give up at most 2 accuracy points (of the router's estimate) to save cost. Two points is
# below the sampling error of a cluster estimate with ~100 records, so the cheaper pair is, as far as
# the records can tell, as accurate as the best one.
DEFAULT_TOLERANCE = 0.02


@dataclass(frozen=True)
class OperatingPoint:
    """Either ``tolerance`` (accuracy points, in [0, 1]) or ``alpha`` (the cost weight), not both."""

    tolerance: float | None = DEFAULT_TOLERANCE
    alpha: float | None = None

    def __post_init__(self) -> None:
        if (self.tolerance is None) == (self.alpha is None):
            raise AtlasError("an operating point is a tolerance or a cost weight a, exactly one")
        value = self.tolerance if self.tolerance is not None else self.alpha
        if value is None or not 0.0 <= float(value) <= 1.0:
            raise AtlasError(f"operating point values lie in [0, 1], got {value}")

    @classmethod
    def parse(cls, text: str) -> "OperatingPoint":
        """``tol=0.02`` (or ``tolerance=0.02``) or ``a=0.3`` (or ``alpha=0.3``)."""
        m = re.fullmatch(r"\s*(tol|tolerance|a|alpha)\s*=\s*([0-9.]+)\s*", text or "")
        if not m:
            raise AtlasError(f"operating point '{text}': write tol=0.02 (accuracy points) or a=0.3 (cost weight)")
        value = float(m.group(2))
        return cls(tolerance=value) if m.group(1).startswith("tol") else cls(tolerance=None, alpha=value)

    def label(self) -> str:
        if self.tolerance is not None:
            return f"cheapest within {self.tolerance * 100:g} accuracy points of the best"
        return f"a={self.alpha:g}"


def cheapest_within(accuracy: np.ndarray, cost: np.ndarray, tolerance: float,
                    available: np.ndarray | None = None) -> np.ndarray:
    """Per row, the index of the cheapest pair whose accuracy is within ``tolerance`` of the row's best.

    Unavailable pairs (``available`` False, or NaN accuracy) never win; among equal costs the more
    accurate pair wins, then the lower index.
    """
    acc = np.atleast_2d(np.asarray(accuracy, dtype=float))
    c = np.broadcast_to(np.asarray(cost, dtype=float), acc.shape)
    ok = ~np.isnan(acc)
    if available is not None:
        ok &= np.broadcast_to(np.asarray(available, dtype=bool), acc.shape)
    masked = np.where(ok, acc, -np.inf)
    best = masked.max(axis=1, keepdims=True)
    near = ok & (masked >= best - tolerance - 1e-12)
    choice = np.empty(len(acc), dtype=int)
    for i in range(len(acc)):
        idx = np.flatnonzero(near[i])
        if idx.size == 0:
            choice[i] = 0
            continue
        order = np.lexsort((idx, -masked[i, idx], np.nan_to_num(c[i, idx], nan=np.inf)))
        choice[i] = int(idx[order[0]])
    return choice


def route_at(router: Router, queries: Any, point: OperatingPoint) -> list[Decision]:
    """Route ``queries`` at ``point`` with a fitted router that exposes per-query accuracy and cost.

    The cluster router exposes ``query_tables``; score-predicting baselines ``predict_accuracy`` and a
    per-pair cost. A cost weight goes to the router's own ``route``.
    """
    if point.alpha is not None:
        return router.route(queries, alpha=point.alpha)
    tol = float(point.tolerance or 0.0)
    if hasattr(router, "query_tables"):
        emb = router.embed(queries) if not isinstance(queries, np.ndarray) else queries
        single = router.single_at(tolerance=tol) if hasattr(router, "single_at") else None
        t = router.query_tables(emb, 0.0, single)
        choice = cheapest_within(t["accuracy"], t["cost"], tol, np.isfinite(t["utility"]))
        # the router's own decisions at a = 0, with the point's choice and its label (explanations stay lazy)
        return router.decisions(t, 0.0, choice, point.label())
    if hasattr(router, "predict_accuracy"):
        acc = np.asarray(router.predict_accuracy(queries), dtype=float)
        cost = np.asarray(router.pair_cost_, dtype=float)
        choice = cheapest_within(acc, cost, tol)
        orders = np.argsort(-np.nan_to_num(acc, nan=-np.inf), axis=1, kind="stable")[:, :3]
        decisions = [Decision(*router.pairs_[int(j)], float(acc[i, j]), {"router": router.name},
                              [router.pairs_[int(p)] for p in orders[i]])
                     for i, j in enumerate(choice)]
    else:
        raise AtlasError(f"router '{router.name}' gives no per-pair accuracy; use a cost weight (a=...)")
    for d in decisions:
        d.explanation["operating_point"] = point.label()
    return decisions
