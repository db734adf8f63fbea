"""Fit every router on train records, replay them on test records, sweep alpha: one evaluation.

Protocols
    in-distribution: fit on all train records, evaluate on all test records;
    ``ood=[BENCH, ...]``: fit only on those benchmarks' train records, evaluate on every test
    benchmark (so most test benchmarks were never seen in training).
Test queries are embedded once and shared by every router fitted with the same encoder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from atlas_router.core.lazy import import_object
from atlas_router.errors import AtlasError
from atlas_router.routers.base import Router, make_router, router_names
from atlas_router.routers.encoders import Encoder, build_encoder
from atlas_router.eval.replay import (
    Embedded, ReplayTable, RouterResult, evaluate_router, predict_once, sweep_alpha,
)

DEFAULT_ROUTERS = ["atlas-cluster", "random", "best-single", "oracle", "knn", "mlp", "bert", "routerdc"]
LLM_ROUTERS = ["zero-shot", "few-shot"]
FRONTIER_ROUTERS = {"atlas-cluster", "oracle", "knn", "mlp", "bert", "routerdc"}
# Routers that exist only inside an evaluation: they wrap a trained RL policy directory (--policy), not a
# router file, so they are not in the router registry (whose members all save and load).
EVAL_ONLY_ROUTERS = {"rl": "atlas_router.rl.eval_routers:PolicyRouter",
                     "hybrid": "atlas_router.rl.eval_routers:HybridPolicyRouter"}
DEFAULT_ALPHAS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


@dataclass
class Evaluation:
    """Results of one evaluation run, ready for JSON, tables and the report."""

    alpha: float
    results: dict[str, RouterResult]
    frontier: dict[str, list[dict[str, float]]]
    n_train_queries: int
    n_test_queries: int
    train_benchmarks: list[str]
    test_benchmarks: list[str]
    ood: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    routers: dict[str, Router] = field(default_factory=dict, repr=False)
    embedded: Embedded | None = field(default=None, repr=False)
    references: dict[str, Any] = field(default_factory=dict)

    def operating_points(self) -> dict[str, dict[str, Any]]:
        """Per swept router: the cheapest point at least as accurate as best single (its cost as a share of
        best single's) and the share of the best-single -> oracle accuracy gap its best point closes."""
        if not self.references:
            return {}
        bs, oracle = self.references["best_single"], self.references["oracle"]
        out = {}
        for name, points in self.frontier.items():
            if name == "oracle" or not points:
                continue
            ok = [p for p in points if p["accuracy"] >= bs["accuracy"] - 1e-12]
            cheapest = min(ok, key=lambda p: (p["cost"], -p["accuracy"])) if ok else None
            top = max(points, key=lambda p: (p["accuracy"], -p["cost"]))
            gap = oracle["accuracy"] - bs["accuracy"]
            out[name] = {
                "cheapest_at_best_single_accuracy": cheapest,
                "cost_share": (cheapest["cost"] / bs["cost"] if cheapest and bs["cost"] > 0 else None),
                "best_accuracy": top["accuracy"],
                "gap_closed": (top["accuracy"] - bs["accuracy"]) / gap if gap > 0 else None,
            }
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "protocol": {"ood": self.ood} if self.ood else {"ood": None},
            "train": {"queries": self.n_train_queries, "benchmarks": self.train_benchmarks},
            "test": {"queries": self.n_test_queries, "benchmarks": self.test_benchmarks},
            "routers": {name: r.to_dict() for name, r in self.results.items()},
            "frontier": self.frontier.get("atlas-cluster", []),  # the cluster router's sweep over alpha
            "frontiers": self.frontier,  # every swept router
            "references": self.references,
            "operating_points": self.operating_points(),
            "notes": self.notes,
        }


def parse_router_list(text: str | None, with_llm: bool) -> list[str]:
    """Router names from a comma list ('all' or empty: the defaults, plus LLM routers with a live model)."""
    if not text or text.strip() == "all":
        return DEFAULT_ROUTERS + (LLM_ROUTERS if with_llm else [])
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = [*router_names(), *EVAL_ONLY_ROUTERS]
    bad = [n for n in names if n not in known]
    if bad:
        raise AtlasError(f"unknown router(s): {', '.join(bad)}; known: {', '.join(known)}")
    return list(dict.fromkeys(names))


def benchmarks_of(records: pd.DataFrame) -> list[str]:
    if "benchmark" not in records.columns:
        return []
    return sorted({str(b) for b in records["benchmark"].dropna().unique()})


def run_evaluation(
    train: pd.DataFrame,
    test: pd.DataFrame,
    routers: list[str] | None = None,
    alpha: float = 0.5,
    encoder: Encoder | None = None,
    seed: int = 0,
    k: int | None = None,
    ood: list[str] | None = None,
    chat_model: Any = None,
    pool_config: Any = None,
    alphas: list[float] | None = None,
    router_params: dict[str, dict[str, Any]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Evaluation:
    """Fit each named router on ``train`` and replay it on ``test``; see the module doc for protocols."""
    say = progress or (lambda _msg: None)
    names = list(routers) if routers else list(DEFAULT_ROUTERS)
    alphas = list(DEFAULT_ALPHAS if alphas is None else alphas)
    notes: list[str] = []
    if ood:
        known = set(benchmarks_of(train))
        missing = [b for b in ood if b not in known]
        if missing:
            raise AtlasError(f"--ood benchmark(s) not in the train records: {', '.join(missing)} "
                             f"(train has: {', '.join(sorted(known))})")
        train = train[train["benchmark"].astype(str).isin(set(ood))]
    if train.empty or test.empty:
        raise AtlasError("nothing to evaluate: the train or test records are empty")
    replay = ReplayTable(test)
    refs = _references(train, replay)
    embedded: Embedded | None = None
    if any(n in {"atlas-cluster", "knn", "mlp", "routerdc"} for n in names):
        encoder = encoder or build_encoder(None)
        say(f"embedding {replay.table.n_queries} test queries with {encoder.name}")
        embedded = Embedded(encoder.name, encoder.encode(replay.queries))
    results: dict[str, RouterResult] = {}
    frontier: dict[str, list[dict[str, float]]] = {}
    fitted: dict[str, Router] = {}
    for name in names:
        params: dict[str, Any] = {"alpha": alpha, "seed": seed, **(router_params or {}).get(name, {})}
        if name == "atlas-cluster" and k is not None:  # None: chosen by cross-validation
            params.setdefault("k", k)
        if name in LLM_ROUTERS:
            if chat_model is None:
                notes.append(f"{name}: skipped (needs a pool with a live model: --pool)")
                continue
            params.update(model=chat_model, pool=pool_config)
        router = _make_router(name, **params)
        say(f"fitting {name}")
        t0 = time.perf_counter()
        router.fit(test if name == "oracle" else train, encoder)  # the upper bound is fitted on the test records
        fit_s = time.perf_counter() - t0
        say(f"routing {replay.table.n_queries} test queries with {name}")
        t0 = time.perf_counter()
        predicted = predict_once(router, replay, embedded)  # score routers: predict once, decide per alpha
        result = evaluate_router(name, router, replay, embedded, alpha, predicted=predicted)
        if predicted is not None:
            result.route_s = time.perf_counter() - t0  # the prediction is the routing work
        result.fit_s = fit_s
        results[name] = result
        fitted[name] = router
        if name in FRONTIER_ROUTERS and alphas:
            frontier[name] = sweep_alpha(router, replay, alphas, embedded, predicted=predicted)
    for name in ("atlas-cluster",):
        r = fitted.get(name)
        if r is not None and embedded is not None:
            n_ood = int(sum(d > r.ood_threshold_ for d in r.assign(embedded.vectors)[1]))
            if n_ood:
                notes.append(f"{name}: {n_ood} of {replay.table.n_queries} test queries out of distribution "
                             "(routed on pooled statistics)")
    return Evaluation(
        alpha=alpha, results=results, frontier=frontier, n_train_queries=int(train["query_id"].nunique()),
        n_test_queries=replay.table.n_queries, train_benchmarks=benchmarks_of(train),
        test_benchmarks=benchmarks_of(test), ood=list(ood) if ood else None, notes=notes, routers=fitted,
        embedded=embedded, references=refs,
    )


def _make_router(name: str, **params: Any) -> Router:
    if name in EVAL_ONLY_ROUTERS:
        return import_object(EVAL_ONLY_ROUTERS[name])(**params)
    return make_router(name, **params)


def _references(train: pd.DataFrame, replay: ReplayTable) -> dict[str, Any]:
    """Best single (the training-best pair, replayed on test) and the oracle of the test records."""
    from atlas_router.eval.metrics import references
    from atlas_router.routers.baselines.simple import BestSingleRouter

    best = BestSingleRouter().fit(train)
    pair = best.pairs_[best.best_]
    if pair not in replay.index:
        return {}
    return references(replay, best_pair=pair).to_dict()


def cluster_points(ev: Evaluation) -> tuple[np.ndarray, np.ndarray] | None:
    """Test queries in 2-D (PCA of their embeddings) with their atlas-cluster cluster, for the report map."""
    router = ev.routers.get("atlas-cluster")
    if router is None or ev.embedded is None or len(ev.embedded.vectors) < 3:
        return None
    from sklearn.decomposition import PCA

    labels, _ = router.assign(ev.embedded.vectors)
    return PCA(n_components=2, random_state=0).fit_transform(ev.embedded.vectors), labels


def reaches_at_lower_cost(points: list[dict[str, float]], accuracy: float, cost: float) -> dict[str, float] | None:
    """The cheapest frontier point with at least ``accuracy`` at a cost below ``cost`` (or None)."""
    ok = [p for p in points if p["accuracy"] >= accuracy - 1e-12 and p["cost"] < cost]
    return min(ok, key=lambda p: p["cost"]) if ok else None


