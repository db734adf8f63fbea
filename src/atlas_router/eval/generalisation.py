"""Does a router generalise? Fit on one part of a routing table, replay on another, over several protocols.

Protocols (each a named (train, test) pair of record frames)
    ``split:S``   a seeded 70/30 query split stratified by benchmark (``eval.split``), seed S;
    ``lobo:S``    the same split, then the training side loses ``n_out`` benchmarks drawn with seed S (the
                  test side keeps them: unseen kinds of questions);
    ``models:S``  a random subset of the pairs (half of them, at least two) drawn with seed S, then split S.
Per protocol every router is fitted on train and routed at a = 0; each test query's recorded score of the
chosen pair is kept, so margins are *paired* per-query differences with a seeded 95% percentile bootstrap
interval (``eval.metrics.bootstrap_ci``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from atlas_router.errors import AtlasError
from atlas_router.eval.metrics import bootstrap_ci
from atlas_router.eval.replay import Embedded, ReplayTable, route_inputs
from atlas_router.eval.split import split_records
from atlas_router.routers.base import make_router
from atlas_router.routers.encoders import Encoder

TARGET = "atlas-cluster"
REFERENCES = {"best-single", "oracle", TARGET}


@dataclass
class Protocol:
    name: str
    train: pd.DataFrame
    test: pd.DataFrame


@dataclass
class Comparison:
    """Per router: the recorded score of its choice on every test query of one protocol (a = 0)."""

    protocol: str
    scores: dict[str, np.ndarray]
    costs: dict[str, np.ndarray]
    n_train: int
    n_test: int
    settings: dict[str, Any] = field(default_factory=dict)

    def accuracy(self) -> dict[str, float]:
        return {name: float(s.mean()) for name, s in self.scores.items()}

    def margin(self, other: str, target: str = TARGET, seed: int = 0) -> dict[str, float]:
        """Mean paired difference target - other and its 95% bootstrap interval."""
        d = self.scores[target] - self.scores[other]
        lo, hi = bootstrap_ci(d, n_resamples=1000, seed=seed)
        return {"other": other, "margin": float(d.mean()), "low": lo, "high": hi}

    def best_baseline(self, target: str = TARGET) -> str | None:
        """The most accurate router that is neither the target nor a reference (best single, oracle)."""
        acc = {n: a for n, a in self.accuracy().items() if n not in REFERENCES and n != target}
        return max(acc, key=acc.get) if acc else None


def split_protocols(records: pd.DataFrame, seeds: list[int], test_size: float = 0.3) -> list[Protocol]:
    return [Protocol(f"split:{s}", *split_records(records, test_size=test_size, seed=s)) for s in seeds]


def leave_benchmarks_out(records: pd.DataFrame, seed: int, n_out: int = 3, test_size: float = 0.3) -> Protocol:
    if "benchmark" not in records.columns:
        raise AtlasError("leave-benchmarks-out needs records with a 'benchmark' column")
    train, test = split_records(records, test_size=test_size, seed=seed)
    names = sorted(train["benchmark"].astype(str).unique())
    if len(names) <= n_out:
        raise AtlasError(f"need more than {n_out} benchmarks to leave {n_out} out, have {len(names)}")
    out = set(np.random.default_rng(seed).choice(names, size=n_out, replace=False).tolist())
    kept = train[~train["benchmark"].astype(str).isin(out)].reset_index(drop=True)
    return Protocol(f"lobo:{seed} (without {', '.join(sorted(out))})", kept, test)


def model_subset(records: pd.DataFrame, seed: int, test_size: float = 0.3) -> Protocol:
    pairs = sorted(set(zip(records["model"].astype(str), records["tool"].astype(str))))
    n = max(2, len(pairs) // 2)
    rng = np.random.default_rng(seed)
    keep = {pairs[i] for i in rng.choice(len(pairs), size=n, replace=False)}
    mask = [p in keep for p in zip(records["model"].astype(str), records["tool"].astype(str))]
    sub = records[np.asarray(mask)].reset_index(drop=True)
    train, test = split_records(sub, test_size=test_size, seed=seed)
    return Protocol(f"models:{seed} ({n} of {len(pairs)} pairs)", train, test)


def compare(protocol: Protocol, routers: list[str], encoder: Encoder, seed: int = 0,
            params: dict[str, dict[str, Any]] | None = None,
            progress: Callable[[str], None] | None = None) -> Comparison:
    """Fit every router on the protocol's train records and score its a = 0 choices on the test records."""
    say = progress or (lambda _m: None)
    replay = ReplayTable(protocol.test)
    embedded = Embedded(encoder.name, encoder.encode(replay.queries))
    scores: dict[str, np.ndarray] = {}
    costs: dict[str, np.ndarray] = {}
    settings: dict[str, Any] = {}
    for name in routers:
        router = make_router(name, alpha=0.0, seed=seed, **(params or {}).get(name, {}))
        say(f"{protocol.name}: fitting {name}")
        fit_on = protocol.test if name == "oracle" else protocol.train  # the upper bound: fitted on test
        router.fit(fit_on, encoder if router.uses_encoder else None)
        decisions = router.route(route_inputs(router, replay, embedded), alpha=0.0)
        score, cost, _calls, _missing = replay.outcomes([d.pair for d in decisions])
        scores[name], costs[name] = score, cost
        if hasattr(router, "settings"):
            settings[name] = router.settings()
    return Comparison(protocol.name, scores, costs, int(protocol.train["query_id"].nunique()),
                      replay.table.n_queries, settings)
