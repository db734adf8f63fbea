"""Pick alpha for a target instead of guessing it: "at most C per query" or "at least P accuracy".

Alpha is a unitless trade-off; operators think in budgets and quality floors. Calibration turns one
into the other on held-out data:

1. split the records by query into train and test (``eval.split``, stratified by benchmark);
2. split train again into a fit part and a calibration part, and fit the ClusterRouter on the fit
   part only, so that the calibration queries are as unseen as the test queries will be;
3. replay the calibration part at every alpha of a grid (the router's accuracy-cost curve);
4. pick the alpha that meets the target with 95% confidence: with ``max_cost`` the most accurate
   point whose cost per query is <= C even at its one-sided 95% upper bound (mean + 1.645 standard
   errors over the calibration queries; ties: cheaper); with ``min_quality`` the cheapest point whose
   accuracy is >= P at its 95% lower bound (ties: more accurate). Without the margin, a point picked
   because it sits just under C on the calibration queries lands above C on fresh queries half the time. When no point meets it, the closest one (cheapest, or most accurate) and
   ``met_on_calibration: false``;
5. replay the test split at that alpha with the same router: what the target costs and gains there,
   against the best single pair chosen on the fit part.

The router reported is exactly the one calibrated, so the test figures are an honest estimate of
what a deployment of that file with that alpha does.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from atlas_router.errors import AtlasError
from atlas_router.eval.metrics import Point, as_points, metrics_report, query_outcomes, references, single_pair_outcomes
from atlas_router.eval.replay import Embedded, ReplayTable, sweep_alpha
from atlas_router.eval.split import split_records
from atlas_router.routers.encoders import Encoder, build_encoder
from atlas_router.routers.table import pair_label

# Even steps of 0.025, plus a geometric grid below 0.1: accuracy differences between pairs are small
# next to normalised cost differences, so most of the cost range is crossed at small alpha.
DEFAULT_ALPHAS = sorted({round(float(a), 5) for a in [*np.linspace(0.0, 1.0, 41), *np.geomspace(1e-3, 0.1, 25)]})
TOLERANCE = 0.10
CONFIDENCE_Z = 1.645  # one-sided 95%


@dataclass
class Calibration:
    """A calibration run: the report, the calibrated router (alpha set) and the record splits it used."""

    report: dict[str, Any]
    router: Any
    data: dict[str, pd.DataFrame]


@dataclass
class Target:
    """Exactly one of: a cost ceiling per query, or an accuracy floor."""

    max_cost: float | None = None
    min_quality: float | None = None

    def __post_init__(self) -> None:
        if (self.max_cost is None) == (self.min_quality is None):
            raise AtlasError("give exactly one target: --max-cost C or --min-quality P")
        if self.max_cost is not None and not self.max_cost > 0:
            raise AtlasError(f"max cost must be > 0, got {self.max_cost}")
        if self.min_quality is not None and not 0.0 < self.min_quality <= 1.0:
            raise AtlasError(f"min quality must lie in (0, 1], got {self.min_quality}")

    @property
    def kind(self) -> str:
        return "max_cost" if self.max_cost is not None else "min_quality"

    @property
    def value(self) -> float:
        return float(self.max_cost if self.max_cost is not None else self.min_quality)

    def met(self, accuracy: float, cost: float, tolerance: float = 0.0) -> bool:
        """Whether (accuracy, cost) meets the target, allowing a relative ``tolerance``."""
        if self.max_cost is not None:
            return cost <= self.max_cost * (1.0 + tolerance) + 1e-15
        return accuracy >= self.min_quality * (1.0 - tolerance) - 1e-12


def pick_alpha(points: list[Point], target: Target, se: list[tuple[float, float]] | None = None
               ) -> tuple[Point, bool]:
    """The point that meets ``target`` best (module docs, step 4) and whether it meets it.

    ``se``: per point, the standard errors of its (accuracy, cost) means; the target must then hold at
    the one-sided 95% bound."""
    pts = as_points(points)
    se = se or [(0.0, 0.0)] * len(pts)
    ok = [p for p, (sa, sc) in zip(pts, se)
          if target.met(p.accuracy - CONFIDENCE_Z * sa, p.cost + CONFIDENCE_Z * sc)]
    if target.max_cost is not None:
        if ok:
            return max(ok, key=lambda p: (p.accuracy, -p.cost, p.alpha)), True
        return min(pts, key=lambda p: (p.cost, -p.accuracy)), False
    if ok:
        return min(ok, key=lambda p: (p.cost, -p.accuracy, -p.alpha)), True
    return max(pts, key=lambda p: (p.accuracy, -p.cost)), False


@dataclass
class Prepared:
    """Everything a target does not change: splits, the fitted router, both replays and curves."""

    router: Any
    encoder: Encoder
    data: dict[str, pd.DataFrame]
    calib_replay: ReplayTable
    test_replay: ReplayTable
    test_emb: Embedded
    calib_points: list[Point]
    test_points: list[Point]
    calib_se: list[tuple[float, float]]
    settings: dict[str, Any]
    fit_s: float


def prepare(records: pd.DataFrame, *, test_size: float = 0.3, calib_size: float = 0.3, seed: int = 0,
            encoder: Encoder | str | None = None, k: int | None = None, alphas: list[float] | None = None,
            router_params: dict[str, Any] | None = None) -> Prepared:
    """Steps 1-3 of the module docs (and the test curve), shared by every target."""
    from atlas_router.routers.cluster import ClusterRouter

    grid = sorted(set(DEFAULT_ALPHAS if alphas is None else [float(a) for a in alphas]))
    if not grid or any(not 0.0 <= a <= 1.0 for a in grid):
        raise AtlasError("alphas must be a non-empty list of numbers in [0, 1]")
    enc = encoder if isinstance(encoder, Encoder) else build_encoder(encoder)
    t0 = time.perf_counter()
    train, test = split_records(records, test_size, seed)
    fit_part, calib = split_records(train, calib_size, seed + 1)
    router = ClusterRouter(k=k, seed=seed, **(router_params or {})).fit(fit_part, enc)
    fit_s = time.perf_counter() - t0
    calib_replay, test_replay = ReplayTable(calib), ReplayTable(test)
    calib_emb = Embedded(enc.name, router.embed(calib_replay.queries))
    test_emb = Embedded(enc.name, router.embed(test_replay.queries))
    settings = {"test_size": test_size, "calib_size": calib_size, "seed": seed, "k": k, "alphas": grid,
                "router_params": dict(router_params or {})}
    return Prepared(
        router, enc, {"all": records, "fit": fit_part, "calibration": calib, "test": test}, calib_replay, test_replay,
        test_emb, as_points(sweep_alpha(router, calib_replay, grid, calib_emb)),
        as_points(sweep_alpha(router, test_replay, grid, test_emb)), _standard_errors(router, calib_replay,
                                                                                       calib_emb, grid),
        settings, fit_s,
    )


def _standard_errors(router: Any, replay: ReplayTable, emb: Embedded, alphas: list[float]
                     ) -> list[tuple[float, float]]:
    """Per alpha: standard errors of the mean accuracy and mean cost over the replayed queries."""
    out = []
    n = max(replay.table.n_queries, 2)
    for a in alphas:
        idx = router.route_indices(emb.vectors, alpha=a)
        score, cost, _calls, _missing = replay.outcomes([router.pairs_[j] for j in idx])
        out.append((float(score.std(ddof=1) / np.sqrt(n)), float(cost.std(ddof=1) / np.sqrt(n))))
    return out


def calibrate(records: pd.DataFrame, target: Target, *, n_resamples: int = 1000, **prepare_args: Any) -> Calibration:
    """Calibrate alpha for ``target`` (see the module docs); ``prepare_args`` go to ``prepare``."""
    return calibrate_prepared(prepare(records, **prepare_args), target, n_resamples=n_resamples)


def calibrate_prepared(prep: Prepared, target: Target, n_resamples: int = 1000) -> Calibration:
    """Steps 4-5 of the module docs on a prepared run; the router returned is a copy with alpha set."""
    chosen, met_calib = pick_alpha(prep.calib_points, target, prep.calib_se)
    router = copy.copy(prep.router).set_params(alpha=chosen.alpha)
    test_replay = prep.test_replay
    decisions = router.route(prep.test_emb.vectors, alpha=chosen.alpha)
    outcomes = query_outcomes(test_replay, decisions)
    best_j = int(np.argmax(np.where(np.isnan(router.pair_accuracy_), -np.inf, router.pair_accuracy_)))
    best_pair = router.pairs_[best_j]
    refs = references(test_replay, best_pair if best_pair in test_replay.index else None)
    baselines = {"best-single": single_pair_outcomes(test_replay, refs.pairs[refs.best])}
    seed = int(prep.settings["seed"])
    metrics = metrics_report(prep.test_points, outcomes, refs, baselines, n_resamples=n_resamples, seed=seed)
    acc, cost = float(outcomes.score.mean()), float(outcomes.cost.mean())
    report = {
        "target": {"kind": target.kind, "value": target.value},
        "alpha": chosen.alpha,
        "met_on_calibration": met_calib,
        "calibration": {"accuracy": chosen.accuracy, "cost": chosen.cost,
                        "n_queries": prep.calib_replay.table.n_queries},
        "test": {"accuracy": acc, "cost": cost, "calls": float(outcomes.calls.mean()), "n_queries": outcomes.n,
                 "accuracy_ci": metrics["accuracy_ci"], "cost_ci": metrics["cost_ci"]},
        "met_on_test": target.met(acc, cost),
        "within_tolerance": target.met(acc, cost, TOLERANCE),
        "tolerance": TOLERANCE,
        "target_ratio": (cost / target.value) if target.kind == "max_cost" else (acc / target.value),
        "best_single": {"pair": pair_label(refs.pairs[refs.best]), "accuracy": refs.best_accuracy,
                        "cost": refs.best_cost, "chosen_on": "fit split"},
        "gain": {"accuracy_delta": acc - refs.best_accuracy,
                 "cost_saving": (1.0 - cost / refs.best_cost) if refs.best_cost > 0 else None},
        "choices": metrics["share"],
        "metrics": {key: metrics[key] for key in ("apgr", "cpt", "aiq", "arena_score", "cost_at_quality",
                                                  "vs_oracle", "references", "baselines")},
        "calibration_points": [vars(p) for p in prep.calib_points],
        "test_points": [vars(p) for p in prep.test_points],
        "splits": {k: prep.settings[k] for k in ("test_size", "calib_size", "seed")} | {
            "fit_queries": router.n_queries_},
        "router": {"k": prep.settings["k"], "n_clusters": int(router.n_clusters_), "encoder": prep.encoder.name,
                   "fit_s": round(prep.fit_s, 2)},
    }
    return Calibration(report, router, prep.data)


def summary_lines(report: dict[str, Any]) -> list[str]:
    """Human-readable lines for the CLI."""
    t, c, s, b = report["target"], report["calibration"], report["test"], report["best_single"]
    want = f"cost per query <= {t['value']:.6g}" if t["kind"] == "max_cost" else f"accuracy >= {t['value']:.4g}"
    lines = [
        f"target: {want}",
        f"alpha: {report['alpha']:g}" + ("" if report["met_on_calibration"] else "  (target not reachable on the "
                                          "calibration split: closest point)"),
        f"calibration ({c['n_queries']} queries): accuracy {c['accuracy']:.4f}, cost {c['cost']:.6g}",
        f"test ({s['n_queries']} queries): accuracy {s['accuracy']:.4f} "
        f"[{s['accuracy_ci'][0]:.4f}, {s['accuracy_ci'][1]:.4f}], cost {s['cost']:.6g}, calls {s['calls']:.2f}",
        f"target on test: {'met' if report['met_on_test'] else 'missed'} (ratio {report['target_ratio']:.3f}; "
        f"within {report['tolerance']:.0%}: {'yes' if report['within_tolerance'] else 'no'})",
        f"best single ({b['pair']}): accuracy {b['accuracy']:.4f}, cost {b['cost']:.6g}",
    ]
    g = report["gain"]
    if g["cost_saving"] is not None:
        lines.append(f"vs best single: accuracy {g['accuracy_delta']:+.4f}, cost saving {g['cost_saving']:.1%}")
    return lines
