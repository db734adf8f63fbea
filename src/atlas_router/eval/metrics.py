"""Every routing metric the field reports, computed from one replay.

Input: the router's accuracy-cost points (one per alpha, e.g. ``replay.sweep_alpha``), the per-query
outcomes of one operating point, and the reference pairs of the same test table (``references``).
Why one module: papers disagree on which single number matters (RouteLLM's APGR/CPT, RouterBench's
AIQ, RouterArena's Arena score), so a report gives all of them from the same replay.

Definitions (costs are mean cost per query, accuracy is mean score in [0, 1])

* **References.** *best single*: the pair with the highest mean score on the test table (ties: the
  cheaper), unless a pair (e.g. chosen on train) is given. *cheapest*: the pair with the lowest mean
  cost. *oracle*: per query the best score of any pair, at the cost of the cheapest pair reaching it.
* **Cost share** (RouteLLM's "% calls to the strong model", generalised to N pairs):
  ``s(c) = (c - c_cheapest) / (c_best_single - c_cheapest)``. With two pairs (weak, strong) a router
  sending a fraction p of queries to the strong one costs ``c_weak + p (c_strong - c_weak)``, so
  ``s = p`` exactly; with N pairs it is the router's extra spend over the cheapest pair, as a share of
  what the best single pair spends over it.
* **Accuracy at a budget s**: the best accuracy of any router point with share <= s, or the
  cheapest pair's accuracy (always affordable at s >= 0): RouteLLM's curve starts at "all weak".
* **PGR / APGR** (RouteLLM, Ong et al. 2024): ``PGR(s) = (acc(s) - low) / (high - low)``;
  ``APGR = integral of PGR(s) over s in [0, 1]`` (exact: acc(s) is a step function). Two gaps:
  ``pair`` (low = cheapest pair, high = best single: RouteLLM's weak -> strong) and ``oracle``
  (low = best single, high = oracle: how much of the headroom above the best single pair a router
  recovers; negative where it is worse than the best single pair).
* **CPT(x)** (call-performance threshold): the smallest share s with ``PGR(s) >= x``, per gap
  (``None`` when never reached; it may exceed 1 when the router needs more than best-single spend).
* **AIQ** (RouterBench, Hu et al. 2024): area under the non-decreasing upper convex hull of the
  router's (cost, accuracy) points, cost normalised by ``(c - c_min) / (c_max - c_min)`` over
  [0, 1]; zero left of the cheapest point, flat right of the best one (as in RouterBench's code:
  c_min = 0, c_max = the largest cost compared). Pass a common ``c_max`` to compare routers.
* **Arena score** (RouterArena, Lu et al. 2025, arXiv:2510.00202, ``compute_arena_score`` in
  github.com/RouteWorks/RouterArena): ``S = (1 + b) A C / (b A + C)`` with b = 0.1 and
  ``C = (log2 c_max - log2 c) / (log2 c_max - log2 c_min)``, ``c`` the cost in USD per 1000 queries
  clamped to [c_min, c_max] = [0.0044, 200]: a weighted harmonic mean of accuracy and log-cost.
* **Cost at 95% quality**: the lowest cost of a router point with accuracy >= 0.95 x best single.
* **Calls**: mean model calls per query; share of calls and of queries per chosen pair.
* **Uncertainty**: seeded percentile bootstrap over queries (``scipy.stats.bootstrap``) for accuracy,
  cost and paired accuracy differences; Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) of
  per-benchmark accuracy against each baseline.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from atlas_router.errors import AtlasError
from atlas_router.routers.table import Pair, QueryTable, pair_label

# RouterArena's constants (USD per 1000 queries) and weight.
ARENA_BETA = 0.1
ARENA_C_MAX = 200.0
ARENA_C_MIN = 0.0044


@dataclass(frozen=True)
class Point:
    """One operating point of a router: its alpha and the mean accuracy, cost and calls per query."""

    alpha: float
    accuracy: float
    cost: float
    calls: float = 1.0


def as_points(points: Iterable[Point | Mapping[str, float] | Sequence[float]]) -> list[Point]:
    """Points from ``Point``s, dicts (``sweep_alpha`` output) or (alpha, accuracy, cost) tuples."""
    out = []
    for p in points:
        if isinstance(p, Point):
            out.append(p)
        elif isinstance(p, Mapping):
            out.append(Point(float(p.get("alpha", math.nan)), float(p["accuracy"]), float(p["cost"]),
                             float(p.get("calls", 1.0))))
        else:
            vals = [float(v) for v in p]
            if len(vals) < 3:
                raise AtlasError(f"a point needs (alpha, accuracy, cost), got {p!r}")
            out.append(Point(*vals[:4]))
    if not out:
        raise AtlasError("no accuracy-cost points to compute metrics from")
    for p in out:
        if not (np.isfinite(p.accuracy) and np.isfinite(p.cost)):
            raise AtlasError(f"point at alpha {p.alpha} has a non-finite accuracy or cost")
    return out


# -- references -------------------------------------------------------------------------------------
@dataclass
class References:
    """Single pairs and the oracle on the test table: what router metrics are relative to."""

    pairs: list[Pair]
    pair_accuracy: np.ndarray
    pair_cost: np.ndarray
    best: int
    cheapest: int
    oracle_accuracy: float
    oracle_cost: float

    @property
    def best_accuracy(self) -> float:
        return float(self.pair_accuracy[self.best])

    @property
    def best_cost(self) -> float:
        return float(self.pair_cost[self.best])

    @property
    def cheapest_accuracy(self) -> float:
        return float(self.pair_accuracy[self.cheapest])

    @property
    def cheapest_cost(self) -> float:
        return float(self.pair_cost[self.cheapest])

    def to_dict(self) -> dict[str, Any]:
        return {
            "best_single": {"pair": pair_label(self.pairs[self.best]), "accuracy": self.best_accuracy,
                            "cost": self.best_cost},
            "cheapest": {"pair": pair_label(self.pairs[self.cheapest]), "accuracy": self.cheapest_accuracy,
                         "cost": self.cheapest_cost},
            "oracle": {"accuracy": self.oracle_accuracy, "cost": self.oracle_cost},
        }


def references(table: QueryTable | Any, best_pair: Pair | None = None) -> References:
    """References of a test table (a ``QueryTable`` or anything with ``.table``, e.g. ``ReplayTable``)."""
    t: QueryTable = getattr(table, "table", table)
    if t.n_queries == 0:
        raise AtlasError("the test table has no queries")
    acc = t.pooled_accuracy()
    cost = t.pooled_cost()
    graded = ~np.isnan(acc)
    if not graded.any():
        raise AtlasError("no pair of the test table has graded records")
    if best_pair is not None:
        index = t.pair_index()
        if best_pair not in index:
            raise AtlasError(f"best pair {pair_label(best_pair)} has no records in the test table")
        best = index[best_pair]
    else:
        best = _argbest(np.where(graded, acc, -np.inf), -cost)
    cheapest = _argbest(np.where(graded, -cost, -np.inf), np.nan_to_num(acc, nan=-1.0))
    scores = np.where(np.isnan(t.scores), -np.inf, t.scores)
    costs = np.where(np.isnan(t.costs), cost[None, :], t.costs)
    top = scores.max(axis=1)
    reach = scores >= top[:, None] - 1e-12
    oracle_cost = np.where(reach, costs, np.inf).min(axis=1)
    top = np.where(np.isfinite(top), top, 0.0)
    oracle_cost = np.where(np.isfinite(oracle_cost), oracle_cost, 0.0)
    return References(list(t.pairs), acc, cost, int(best), int(cheapest), float(top.mean()), float(oracle_cost.mean()))


def _argbest(primary: np.ndarray, secondary: np.ndarray) -> int:
    """Index of the largest ``primary``; ties broken by the largest ``secondary``."""
    top = primary.max()
    tied = np.flatnonzero(primary >= top - 1e-12)
    return int(tied[np.argmax(secondary[tied])])


# -- per-query outcomes -----------------------------------------------------------------------------
@dataclass
class QueryOutcomes:
    """What one router setting did on each test query: recorded score, cost, calls and chosen pair."""

    score: np.ndarray
    cost: np.ndarray
    calls: np.ndarray
    pairs: list[str]
    benchmarks: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.score)
        if not (len(self.cost) == len(self.calls) == len(self.pairs) == len(self.benchmarks) == n):
            raise AtlasError("per-query outcomes must all have one entry per query")
        if n == 0:
            raise AtlasError("no per-query outcomes to compute metrics from")

    @property
    def n(self) -> int:
        return len(self.score)

    def per_benchmark(self) -> dict[str, float]:
        """Mean score per benchmark ("(none)" for queries without one)."""
        bench = np.asarray([b or "(none)" for b in self.benchmarks], dtype=object)
        return {str(b): float(self.score[bench == b].mean()) for b in sorted(set(bench))}


def query_outcomes(replay: Any, choices: Sequence[Any]) -> QueryOutcomes:
    """Outcomes of ``choices`` (Decisions or (model, tool) pairs, one per query) on a ``ReplayTable``."""
    pairs = [c.pair if hasattr(c, "pair") else tuple(c) for c in choices]
    if len(pairs) != replay.table.n_queries:
        raise AtlasError(f"{len(pairs)} choices for {replay.table.n_queries} test queries")
    score, cost, calls, _missing = replay.outcomes(pairs)
    return QueryOutcomes(score, cost, calls, [pair_label(p) for p in pairs], np.asarray(replay.table.benchmarks))


def single_pair_outcomes(replay: Any, pair: Pair) -> QueryOutcomes:
    """Outcomes of always choosing ``pair`` (a single-pair baseline)."""
    return query_outcomes(replay, [pair] * replay.table.n_queries)


# -- gap metrics (RouteLLM) -------------------------------------------------------------------------
@dataclass(frozen=True)
class Gap:
    """A performance gap to recover, and the cost range budgets are measured in."""

    low: float
    high: float
    low_cost: float
    high_cost: float

    def share(self, cost: float) -> float:
        """Cost share of ``cost`` (0 at ``low_cost``, 1 at ``high_cost``); NaN when the range is empty."""
        span = self.high_cost - self.low_cost
        return (cost - self.low_cost) / span if span > 0 else math.nan

    def pgr(self, accuracy: float) -> float:
        span = self.high - self.low
        return (accuracy - self.low) / span if span > 0 else math.nan


def gaps(refs: References) -> dict[str, Gap]:
    """The two gaps of the module docs: ``pair`` (cheapest -> best single), ``oracle`` (best single -> oracle)."""
    lo_c, hi_c = refs.cheapest_cost, refs.best_cost
    return {
        "pair": Gap(refs.cheapest_accuracy, refs.best_accuracy, lo_c, hi_c),
        "oracle": Gap(refs.best_accuracy, refs.oracle_accuracy, lo_c, hi_c),
    }


def _budget_curve(points: list[Point], gap: Gap, anchor: float) -> tuple[np.ndarray, np.ndarray]:
    """Breakpoints (shares, clipped at 0) and the accuracy affordable from each one on (a step function)."""
    shares = np.array([max(gap.share(p.cost), 0.0) for p in points] + [0.0])
    accs = np.array([p.accuracy for p in points] + [anchor])
    order = np.argsort(shares, kind="stable")
    shares, accs = shares[order], np.maximum.accumulate(accs[order])
    return shares, accs


def apgr(points: Sequence[Point], gap: Gap, anchor: float) -> float:
    """Mean PGR over budgets s in [0, 1]; ``anchor``: accuracy affordable at s = 0 (the cheapest pair)."""
    pts = as_points(points)
    if math.isnan(gap.share(gap.high_cost)) or math.isnan(gap.pgr(gap.high)):
        return math.nan
    shares, accs = _budget_curve(pts, gap, anchor)
    edges = np.append(np.clip(shares, 0.0, 1.0), 1.0)
    widths = np.diff(edges)  # accs[i] holds from shares[i] up to the next breakpoint
    return float(sum(w * gap.pgr(a) for w, a in zip(widths, accs)))


def cpt(points: Sequence[Point], gap: Gap, fraction: float, anchor: float) -> float | None:
    """Smallest cost share whose affordable accuracy recovers ``fraction`` of the gap (None: never)."""
    pts = as_points(points)
    if math.isnan(gap.share(gap.high_cost)) or math.isnan(gap.pgr(gap.high)):
        return None
    shares, accs = _budget_curve(pts, gap, anchor)
    hit = [s for s, a in zip(shares, accs) if gap.pgr(a) >= fraction - 1e-9]
    return float(min(hit)) if hit else None


# -- curve metrics (RouterBench) --------------------------------------------------------------------
def nondecreasing_hull(points: Sequence[Point]) -> np.ndarray:
    """(cost, accuracy) vertices of the upper convex hull, cut where accuracy stops rising."""
    pts = as_points(points)
    best: dict[float, float] = {}  # the best accuracy per cost
    for p in pts:
        best[p.cost] = max(best.get(p.cost, -np.inf), p.accuracy)
    xy = sorted(best.items())
    hull: list[tuple[float, float]] = []
    for x, y in xy:  # Andrew's monotone chain, upper half
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1) >= 0:  # middle point on or below the chord
                hull.pop()
            else:
                break
        hull.append((float(x), float(y)))
    arr = np.array(hull)
    stop = int(np.argmax(arr[:, 1])) + 1  # first maximum: past it the hull only falls
    return arr[:stop]


def aiq(points: Sequence[Point], c_max: float | None = None, c_min: float = 0.0) -> float:
    """RouterBench's AIQ: area under the non-decreasing hull over normalised cost [0, 1]."""
    hull = nondecreasing_hull(points)
    top = float(hull[:, 0].max()) if c_max is None else float(c_max)
    if top <= c_min:
        raise AtlasError(f"AIQ needs c_max > c_min, got c_max={top}, c_min={c_min}")
    x = (hull[:, 0] - c_min) / (top - c_min)
    y = hull[:, 1]
    grid = np.unique(np.clip(np.concatenate([x, [0.0, 1.0]]), 0.0, 1.0))
    area = 0.0
    for a, b in zip(grid[:-1], grid[1:]):
        if a < x[0] - 1e-15:  # left of the cheapest point: the router cannot work at this budget
            continue
        fa, fb = np.interp([a, b], x, y)  # exact: hull vertices are grid points; flat right of the last
        area += (b - a) * (fa + fb) / 2.0
    return float(area)


def arena_score(accuracy: float, cost_per_query: float, beta: float = ARENA_BETA,
                c_max: float = ARENA_C_MAX, c_min: float = ARENA_C_MIN) -> float:
    """RouterArena's score of (accuracy, USD per query); see the module docs for the formula."""
    if not 0.0 <= accuracy <= 1.0:
        raise AtlasError(f"accuracy must lie in [0, 1], got {accuracy}")
    per_1000 = min(max(float(cost_per_query) * 1000.0, c_min), c_max)
    c = (math.log2(c_max) - math.log2(per_1000)) / (math.log2(c_max) - math.log2(c_min))
    denom = beta * accuracy + c
    return float((1.0 + beta) * accuracy * c / denom) if denom > 0 else 0.0


def cost_at_quality(points: Sequence[Point], target: float) -> Point | None:
    """The cheapest point with accuracy >= ``target`` (None when no point reaches it)."""
    ok = [p for p in as_points(points) if p.accuracy >= target - 1e-12]
    return min(ok, key=lambda p: (p.cost, -p.accuracy)) if ok else None


# -- calls ------------------------------------------------------------------------------------------
def call_shares(outcomes: QueryOutcomes) -> dict[str, Any]:
    """Mean calls per query, and per chosen pair its share of queries and of model calls."""
    labels = np.asarray(outcomes.pairs, dtype=object)
    total_calls = float(outcomes.calls.sum())
    per_pair = {}
    for label in sorted(set(outcomes.pairs)):
        m = labels == label
        per_pair[str(label)] = {
            "queries": round(float(m.mean()), 6),
            "calls": round(float(outcomes.calls[m].sum() / total_calls), 6) if total_calls > 0 else 0.0,
        }
    return {"calls_per_query": float(outcomes.calls.mean()), "share": per_pair}


# -- uncertainty ------------------------------------------------------------------------------------
def bootstrap_ci(values: np.ndarray, n_resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of per-query ``values`` (resampling queries), seeded."""
    from scipy.stats import bootstrap

    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise AtlasError("bootstrap needs at least one value")
    if v.size == 1 or np.all(v == v[0]):
        return float(v[0]), float(v[0])
    res = bootstrap((v,), np.mean, n_resamples=int(n_resamples), confidence_level=confidence,
                    method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return float(ci.low), float(ci.high)


def wilcoxon_test(router: Mapping[str, float], baseline: Mapping[str, float]) -> dict[str, Any]:
    """Wilcoxon signed-rank test of per-benchmark accuracy, router vs baseline (benchmarks both have)."""
    from scipy.stats import wilcoxon

    common = sorted(set(router) & set(baseline))
    d = np.array([router[b] - baseline[b] for b in common], dtype=float)
    out: dict[str, Any] = {"benchmarks": len(common), "wins": int((d > 0).sum()), "losses": int((d < 0).sum()),
                           "ties": int((d == 0).sum()), "mean_delta": float(d.mean()) if d.size else 0.0}
    if not (d != 0).any():
        out.update(statistic=None, pvalue=1.0, note="no benchmark differs: nothing to test")
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # tiny samples: scipy warns about the normal approximation
        res = wilcoxon(d)
    out.update(statistic=float(res.statistic), pvalue=float(res.pvalue))
    return out


# -- the report -------------------------------------------------------------------------------------
def metrics_report(points: Sequence[Point | Mapping[str, float]], outcomes: QueryOutcomes, refs: References,
                   baselines: Mapping[str, QueryOutcomes] | None = None, *, n_resamples: int = 1000,
                   confidence: float = 0.95, seed: int = 0, aiq_c_max: float | None = None,
                   quality_share: float = 0.95) -> dict[str, Any]:
    """All metrics of the module docs for one router: ``outcomes`` is its operating point per query,
    ``points`` its accuracy-cost curve, ``baselines`` other routers' outcomes on the same queries."""
    pts = as_points(points)
    acc, cost = float(outcomes.score.mean()), float(outcomes.cost.mean())
    g = gaps(refs)
    anchor = refs.cheapest_accuracy
    c_max = aiq_c_max if aiq_c_max is not None else max(float(np.nanmax(refs.pair_cost)), max(p.cost for p in pts))
    target = quality_share * refs.best_accuracy
    at_q = cost_at_quality(pts, target)
    lo, hi = bootstrap_ci(outcomes.score, n_resamples, confidence, seed)
    clo, chi = bootstrap_ci(outcomes.cost, n_resamples, confidence, seed)
    report: dict[str, Any] = {
        "n_queries": outcomes.n,
        "accuracy": acc,
        "cost": cost,
        "accuracy_ci": [lo, hi],
        "cost_ci": [clo, chi],
        "references": refs.to_dict(),
        "vs_best_single": {"accuracy_delta": acc - refs.best_accuracy,
                           "cost_ratio": cost / refs.best_cost if refs.best_cost > 0 else None},
        "vs_oracle": {"accuracy_ratio": acc / refs.oracle_accuracy if refs.oracle_accuracy > 0 else None,
                      "accuracy_gap": refs.oracle_accuracy - acc},
        "apgr": {name: apgr(pts, gap, anchor) for name, gap in g.items()},
        "cpt": {name: {"50": cpt(pts, gap, 0.5, anchor), "80": cpt(pts, gap, 0.8, anchor)} for name, gap in g.items()},
        "aiq": aiq(pts, c_max=c_max),
        "aiq_c_max": c_max,
        "arena_score": arena_score(acc, cost),
        "cost_at_quality": {
            "quality_share": quality_share, "target_accuracy": target,
            "cost": at_q.cost if at_q else None, "alpha": at_q.alpha if at_q else None,
            "cost_ratio_to_best_single": (at_q.cost / refs.best_cost) if at_q and refs.best_cost > 0 else None,
        },
        **call_shares(outcomes),
        "points": [{"alpha": p.alpha, "accuracy": p.accuracy, "cost": p.cost, "calls": p.calls} for p in pts],
    }
    base = dict(baselines or {})
    tests = {}
    mine = outcomes.per_benchmark()
    for name, other in base.items():
        if other.n != outcomes.n:
            raise AtlasError(f"baseline '{name}' has {other.n} outcomes, the router {outcomes.n}: not the same queries")
        dlo, dhi = bootstrap_ci(outcomes.score - other.score, n_resamples, confidence, seed)
        tests[name] = {"accuracy": float(other.score.mean()), "cost": float(other.cost.mean()),
                       "accuracy_delta": acc - float(other.score.mean()), "accuracy_delta_ci": [dlo, dhi],
                       "wilcoxon": wilcoxon_test(mine, other.per_benchmark())}
    report["baselines"] = tests
    report["per_benchmark"] = mine
    return report


def replay_metrics(router: Any, replay: Any, alphas: Sequence[float], alpha: float | None = None,
                   embedded: Any = None, baselines: Mapping[str, QueryOutcomes] | None = None,
                   **report_args: Any) -> dict[str, Any]:
    """Sweep ``router`` over ``alphas`` on a ``ReplayTable``, take its outcomes at ``alpha`` (default: its
    own), and report every metric against the best single and cheapest pairs (plus ``baselines``)."""
    from atlas_router.eval.replay import route_inputs, sweep_alpha

    points = as_points(sweep_alpha(router, replay, list(alphas), embedded))
    a = router.alpha if alpha is None else alpha
    outcomes = query_outcomes(replay, router.route(route_inputs(router, replay, embedded), alpha=a))
    refs = references(replay)
    base = {"best-single": single_pair_outcomes(replay, refs.pairs[refs.best]),
            "cheapest": single_pair_outcomes(replay, refs.pairs[refs.cheapest]), **dict(baselines or {})}
    report = metrics_report(points, outcomes, refs, base, **report_args)
    report["alpha"] = float(a)
    return report
