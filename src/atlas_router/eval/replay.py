"""Replay evaluation: route each test query, then read the chosen pair's *recorded* outcome.

No model is called: the test records already hold every pair's score and cost on every test query,
so a router is scored by looking its choices up. A choice with no record for that query (a pair the
test table lacks) counts as a failure (score 0) at the pair's mean cost, and is counted in
``missing`` so that a report can say so.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from atlas_router.routers.base import Decision, Router
from atlas_router.routers.table import Pair, QueryTable, pair_label, query_table


@dataclass
class Outcome:
    """Accuracy, cost and calls per query of one router over a set of queries."""

    accuracy: float
    cost: float  # mean cost per query
    calls: float  # mean model calls per query
    n: int
    missing: int = 0  # choices with no record for that query (counted as failures)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RouterResult:
    """One router's evaluation: overall, per benchmark, which pairs it chose, timings."""

    name: str
    overall: Outcome
    per_benchmark: dict[str, Outcome]
    choices: dict[str, int]
    fit_s: float = 0.0
    route_s: float = 0.0
    alpha: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {**self.overall.to_dict(), "per_benchmark": {b: o.to_dict() for b, o in self.per_benchmark.items()},
               "choices": self.choices, "fit_s": round(self.fit_s, 3), "route_s": round(self.route_s, 3)}
        if self.alpha is not None:
            out["alpha"] = self.alpha
        if self.notes:
            out["notes"] = self.notes
        return out


class ReplayTable:
    """Test records prepared for lookups: per query and pair, the recorded score, cost and calls."""

    def __init__(self, records: pd.DataFrame) -> None:
        self.table: QueryTable = query_table(records)
        self.index = self.table.pair_index()
        t = self.table
        self.mean_cost = np.nan_to_num(t.pooled_cost(), nan=0.0)
        calls = np.nanmean(np.where(np.isnan(t.calls), np.nan, t.calls), axis=0) if t.n_queries else np.array([])
        self.mean_calls = np.nan_to_num(calls, nan=1.0)

    @property
    def queries(self) -> list[str]:
        return self.table.queries

    def outcomes(self, pairs: list[Pair], fallback_cost: dict[Pair, float] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(score, cost, calls, missing) per query for the chosen pair of each query."""
        t = self.table
        n = t.n_queries
        score, cost, calls = np.zeros(n), np.zeros(n), np.ones(n)
        missing = np.zeros(n, dtype=bool)
        for i, p in enumerate(pairs):
            j = self.index.get(p)
            if j is None or np.isnan(t.scores[i, j]):
                missing[i] = True
                cost[i] = self.mean_cost[j] if j is not None else (fallback_cost or {}).get(p, 0.0)
                calls[i] = self.mean_calls[j] if j is not None else 1.0
                continue
            score[i] = t.scores[i, j]
            c = t.costs[i, j]
            cost[i] = self.mean_cost[j] if np.isnan(c) else c
            k = t.calls[i, j]
            calls[i] = 1.0 if np.isnan(k) else k
        return score, cost, calls, missing

    def summarise(self, name: str, decisions: list[Decision], router: Router | None = None,
                  alpha: float | None = None) -> RouterResult:
        pairs = [d.pair for d in decisions]
        fallback = dict(zip(router.pairs_, router.pair_cost_)) if router is not None and router.is_fitted else None
        score, cost, calls, missing = self.outcomes(pairs, fallback)
        bench = self.table.benchmarks
        per = {}
        for b in sorted(set(bench)):
            m = bench == b
            per[b or "(none)"] = _outcome(score[m], cost[m], calls[m], missing[m])
        labels = [pair_label(p) for p in pairs]
        choices = dict(sorted(pd.Series(labels).value_counts().items(), key=lambda kv: -kv[1])) if labels else {}
        result = RouterResult(name, _outcome(score, cost, calls, missing), per, {k: int(v) for k, v in choices.items()},
                              alpha=alpha)
        if missing.any():
            result.notes.append(f"{int(missing.sum())} choice(s) had no record for the query: counted as failures "
                                "at the pair's mean cost")
        return result


def _outcome(score: np.ndarray, cost: np.ndarray, calls: np.ndarray, missing: np.ndarray) -> Outcome:
    n = len(score)
    if n == 0:
        return Outcome(0.0, 0.0, 0.0, 0, 0)
    return Outcome(float(score.mean()), float(cost.mean()), float(calls.mean()), n, int(missing.sum()))


@dataclass
class Embedded:
    """Test-query embeddings computed once and shared by every router fitted with the same encoder."""

    encoder_name: str
    vectors: np.ndarray


def route_inputs(router: Router, replay: ReplayTable, embedded: Embedded | None):
    """What to hand ``route``: shared embeddings when the router can use them, else texts."""
    if embedded is not None and router.uses_encoder and not router.needs_text \
            and getattr(router, "encoder_name_", None) == embedded.encoder_name:
        return embedded.vectors
    return replay.queries


def evaluate_router(name: str, router: Router, replay: ReplayTable, embedded: Embedded | None = None,
                    alpha: float | None = None, predicted: np.ndarray | None = None) -> RouterResult:
    """Route every test query once and score the choices from the records.

    ``predicted``: accuracies a score-predicting router already made for these queries (reused).
    """
    t0 = time.perf_counter()
    if predicted is not None:
        decisions = router.decide(predicted, router.alpha if alpha is None else alpha)
    else:
        decisions = router.route(route_inputs(router, replay, embedded), alpha=alpha)
    elapsed = time.perf_counter() - t0
    result = replay.summarise(name, decisions, router, alpha)
    result.route_s = elapsed
    return result


def predict_once(router: Router, replay: ReplayTable, embedded: Embedded | None = None) -> np.ndarray | None:
    """Predicted accuracies of a score-predicting router for the test queries (None for other routers)."""
    from atlas_router.routers.baselines.common import ScoreRouter

    if not isinstance(router, ScoreRouter):
        return None
    return router.predict_accuracy(route_inputs(router, replay, embedded))


def sweep_alpha(router: Router, replay: ReplayTable, alphas: list[float],
                embedded: Embedded | None = None, predicted: np.ndarray | None = None) -> list[dict[str, float]]:
    """Accuracy and cost per query at each alpha: the router's accuracy-cost frontier.

    Score-predicting routers predict once (or reuse ``predicted``) and only re-decide per alpha.
    """
    inputs = route_inputs(router, replay, embedded)
    if predicted is None:
        predicted = predict_once(router, replay, embedded)
    points = []
    for a in alphas:
        decisions = router.decide(predicted, a) if predicted is not None else router.route(inputs, alpha=a)
        o = replay.summarise(router.name, decisions, router, a).overall
        points.append({"alpha": float(a), "accuracy": o.accuracy, "cost": o.cost, "calls": o.calls})
    return points
