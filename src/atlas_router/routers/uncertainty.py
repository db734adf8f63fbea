"""How sure a fitted ClusterRouter is about each (cluster, pair) cell, and routing that respects it.

A cell's accuracy is a mean over n graded records. With n = 3 a pair can look perfect by luck and
win its cluster; the point estimate alone cannot tell that apart from n = 300. So per cell:

* successes ``s = n * raw accuracy`` (scores may be fractional; they still sum to "successes");
* the Beta posterior of a uniform prior, ``Beta(1 + s, 1 + n - s)``, its mean and central interval;
* the Wilson score interval (the standard frequentist interval for a proportion, well behaved at
  small n and near 0 or 1; written out because ``scipy.stats.binomtest`` only takes whole counts);
* a thin-cell flag (``n < thin``), which reports turn into warnings.

``LCBRouter`` chooses per cluster by ``U = (1 - a) * LCB(acc) - a * CostNorm``: the lower confidence
bound replaces the point estimate, so a pair must be good *and* well supported to win; an
unsupported pair (n = 0) only wins where every alternative is worse than its prior's lower bound.
It composes a fitted ClusterRouter (its clusters, costs, availability and OOD rule) without changing it.
It works on the cluster-level tables (rows: clusters and the pooled row), not on a router's finer
per-benchmark mix: an interval is about the records of one cell.

Only the router's public fitted attributes are read: ``counts_``, ``accuracy_``, ``cost_``,
``pairs_``, ``available_``, ``n_clusters_``, ``shrinkage``, ``cost_scale_``, ``ood_threshold_``,
``ood_fallback``. Successes come from ``accuracy_raw_`` when a router keeps raw means, else they are
recovered from the documented shrinkage ``Acc = (s + m * Acc_pooled) / (n + m)`` (row K, the pooled
row, is unshrunk: ``Acc = s / n``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from atlas_router.errors import AtlasError
from atlas_router.routers.base import Decision, Queries, Router, WrappedRouter
from atlas_router.routers.table import pair_label
from atlas_router.routers.utility import best_pairs, check_alpha, utility

DEFAULT_THIN = 10


def _check_confidence(confidence: float) -> float:
    c = float(confidence)
    if not 0.0 < c < 1.0:
        raise AtlasError(f"confidence must lie in (0, 1), got {confidence}")
    return c


def beta_interval(successes: np.ndarray, n: np.ndarray, confidence: float = 0.95
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(posterior mean, lower, upper) of Beta(1 + s, 1 + n - s), elementwise."""
    from scipy.stats import beta

    c = _check_confidence(confidence)
    s, n = np.asarray(successes, dtype=float), np.asarray(n, dtype=float)
    a, b = 1.0 + s, 1.0 + np.maximum(n - s, 0.0)
    tail = (1.0 - c) / 2.0
    return a / (a + b), beta.ppf(tail, a, b), beta.ppf(1.0 - tail, a, b)


def wilson_interval(successes: np.ndarray, n: np.ndarray, confidence: float = 0.95
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of s successes in n trials, elementwise; n = 0 gives [0, 1]."""
    from scipy.stats import norm

    c = _check_confidence(confidence)
    s, n = np.asarray(successes, dtype=float), np.asarray(n, dtype=float)
    z = float(norm.ppf(1.0 - (1.0 - c) / 2.0))
    safe = np.maximum(n, 1e-12)
    p = np.clip(s / safe, 0.0, 1.0)
    denom = 1.0 + z * z / safe
    centre = (p + z * z / (2.0 * safe)) / denom
    half = z * np.sqrt(p * (1.0 - p) / safe + z * z / (4.0 * safe * safe)) / denom
    empty = n <= 0
    return np.where(empty, 0.0, np.clip(centre - half, 0.0, 1.0)), np.where(empty, 1.0, np.clip(centre + half, 0.0, 1.0))


@dataclass
class CellIntervals:
    """Per (row, pair) arrays; rows are clusters 0..K-1 and the pooled row K."""

    n: np.ndarray
    successes: np.ndarray
    mean: np.ndarray  # Beta posterior mean
    beta_low: np.ndarray
    beta_high: np.ndarray
    wilson_low: np.ndarray
    wilson_high: np.ndarray
    thin: np.ndarray  # bool: n < threshold
    confidence: float
    threshold: int

    def lower(self, method: str = "beta") -> np.ndarray:
        if method == "beta":
            return self.beta_low
        if method == "wilson":
            return self.wilson_low
        raise AtlasError(f"lower bound method must be 'beta' or 'wilson', got {method!r}")


def _check_router(router: Any) -> None:
    for attr in ("counts_", "accuracy_", "cost_", "pairs_", "n_clusters_"):
        if not hasattr(router, attr):
            raise AtlasError(f"need a fitted cluster router (missing '{attr}'); fit one or load a router file")


def cell_successes(router: Any) -> tuple[np.ndarray, np.ndarray]:
    """(n, successes) per (row, pair) of a fitted ClusterRouter (see the module docs)."""
    _check_router(router)
    n = np.asarray(router.counts_, dtype=float)
    raw = getattr(router, "accuracy_raw_", None)
    if raw is not None:
        return n, n * np.nan_to_num(np.asarray(raw, dtype=float), nan=0.0)
    acc = np.asarray(router.accuracy_, dtype=float)
    k = int(router.n_clusters_)
    w = np.full((n.shape[0], 1), float(getattr(router, "shrinkage_", None) or getattr(router, "shrinkage", None) or 0.0))
    w[k:] = 0.0  # the pooled row is not shrunk
    s = acc * (n + w) - w * acc[k][None, :]
    return n, np.clip(s, 0.0, n)


def cluster_utility(router: Any, accuracy: np.ndarray, alpha: float) -> np.ndarray:
    """U = (1 - a) * accuracy - a * cost_ / cost_scale_ per (row, pair); unservable pairs get -inf."""
    u = utility(accuracy, np.asarray(router.cost_, dtype=float), check_alpha(alpha), router.cost_scale_)
    available = getattr(router, "available_", None)
    if available is not None:
        u[:, ~np.asarray(available, dtype=bool)] = -np.inf
    return u


def cell_intervals(router: Any, confidence: float = 0.95, thin: int = DEFAULT_THIN) -> CellIntervals:
    """Posterior and Wilson intervals of every cell of a fitted ClusterRouter."""
    if int(thin) < 0:
        raise AtlasError(f"thin-cell threshold must be >= 0, got {thin}")
    n, s = cell_successes(router)
    mean, blo, bhi = beta_interval(s, n, confidence)
    wlo, whi = wilson_interval(s, n, confidence)
    return CellIntervals(n, s, mean, blo, bhi, wlo, whi, n < int(thin), float(confidence), int(thin))


def intervals_table(router: Any, confidence: float = 0.95, thin: int = DEFAULT_THIN) -> pd.DataFrame:
    """One row per (cluster, pair): counts, point estimates, intervals and the thin flag.

    ``cluster`` is -1 for the pooled row (all training queries; what out-of-distribution queries use).
    """
    iv = cell_intervals(router, confidence, thin)
    k = int(router.n_clusters_)
    rows = []
    for r in range(iv.n.shape[0]):
        for j, (model, tool) in enumerate(router.pairs_):
            rows.append({
                "cluster": r if r < k else -1, "model": model, "tool": tool, "n": int(iv.n[r, j]),
                "successes": float(iv.successes[r, j]),
                "accuracy": float(iv.successes[r, j] / iv.n[r, j]) if iv.n[r, j] > 0 else float("nan"),
                "shrunk_accuracy": float(router.accuracy_[r, j]), "posterior_mean": float(iv.mean[r, j]),
                "beta_low": float(iv.beta_low[r, j]), "beta_high": float(iv.beta_high[r, j]),
                "wilson_low": float(iv.wilson_low[r, j]), "wilson_high": float(iv.wilson_high[r, j]),
                "thin": bool(iv.thin[r, j]),
            })
    return pd.DataFrame(rows)


def thin_cell_warnings(router: Any, alpha: float | None = None, thin: int = DEFAULT_THIN) -> list[str]:
    """One line per cluster whose best pair on its cluster-level table (at ``alpha``) rests on fewer
    than ``thin`` records."""
    _check_router(router)
    a = check_alpha(router.alpha if alpha is None else alpha)
    best = best_pairs(cluster_utility(router, np.asarray(router.accuracy_, dtype=float), a),
                      np.asarray(router.cost_, dtype=float))
    out = []
    for c in range(int(router.n_clusters_)):
        j = int(best[c])
        n = int(router.counts_[c, j])
        if n < int(thin):
            out.append(f"cluster {c}: chosen pair {pair_label(router.pairs_[j])} rests on n={n} < {int(thin)} "
                       "graded records in the cluster")
    return out


def lcb_utility(router: Any, alpha: float, confidence: float = 0.95, method: str = "beta") -> np.ndarray:
    """U with the accuracy lower bound, (K+1, P); pairs the router cannot serve get -inf."""
    return cluster_utility(router, cell_intervals(router, confidence).lower(method), alpha)


class LCBRouter(WrappedRouter):
    """A ClusterRouter whose choice per cluster maximises utility under the accuracy LCB. Wrap a fitted
    router as it is, or an unfitted one and ``fit`` it; the intervals follow the base's fit."""

    name = "atlas-cluster-lcb"

    def __init__(self, base: Router, confidence: float = 0.95, method: str = "beta", thin: int = DEFAULT_THIN) -> None:
        super().__init__(base)
        self.confidence = _check_confidence(confidence)
        if method not in ("beta", "wilson"):
            raise AtlasError(f"lower bound method must be 'beta' or 'wilson', got {method!r}")
        self.method = method
        self.thin = int(thin)
        if base.is_fitted:
            self._refit()

    def _refit(self) -> None:
        self._iv = cell_intervals(self.base, self.confidence, self.thin)
        self._iv_of = self.base.data_hash_

    def intervals(self) -> CellIntervals:
        """The cells' intervals of the base's current fit."""
        if self.__dict__.get("_iv_of") != getattr(self.base, "data_hash_", None):
            self._refit()
        return self._iv

    def _route(self, queries: Queries, alpha: float) -> list[Decision]:
        base, iv = self.base, self.intervals()
        clusters, dist = base.assign(base.embed(queries))
        ood = dist > base.ood_threshold_
        k = int(base.n_clusters_)
        rows = np.where(ood & (base.ood_fallback == "pooled"), k, clusters)
        u = lcb_utility(base, alpha, self.confidence, self.method)
        best = best_pairs(u, np.asarray(base.cost_, dtype=float))
        orders = np.argsort(-u, axis=1, kind="stable")[:, : max(int(getattr(base, "top", 3)), 1)]
        low = iv.lower(self.method)
        high = iv.beta_high if self.method == "beta" else iv.wilson_high
        out = []
        for c, d, o, r in zip(clusters, dist, ood, rows):
            j = int(best[r])
            model, tool = base.pairs_[j]
            out.append(Decision(model, tool, float(u[r, j]), {
                "router": self.name, "cluster": int(c), "distance": round(float(d), 4), "ood": bool(o),
                "stats": "pooled" if r == k else "cluster", "alpha": alpha, "confidence": self.confidence,
                "bound": self.method, "accuracy_lcb": round(float(low[r, j]), 4),
                "interval": [round(float(low[r, j]), 4), round(float(high[r, j]), 4)],
                "n": int(iv.n[r, j]), "thin": bool(iv.thin[r, j]),
            }, [base.pairs_[p] for p in orders[r] if np.isfinite(u[r, p])]))
        return out
