"""ATLAS cluster routing: k-means over query embeddings, per-cluster pair statistics, settings chosen by
cross-validation on the records it is given, and a "do no harm" rule towards the best single pair.

The paper's method (``method="paper"``, registered as ``atlas-cluster-paper``)
    1. Embed every training query (default encoder: all-MiniLM-L6-v2).
    2. KMeans(K=8, k-means++, elkan, max_iter=1000, n_init=10, random_state=seed).
    3. Per cluster c and pair p: accuracy (mean score) and mean cost.
    4. Route a query to argmax_p U = (1 - a) Acc[c, p] - a Cost[c, p] / cost_scale of its nearest cluster.

The default (``method="auto"``): the same model family, with what the paper fixes by hand learned
    Predicted accuracy of pair p for query q
        ``A(q, p) = (1 - r) * Acc_cells(q, p) + r * clip(ridge_p(e(q)), 0, 1)``
    * ``Acc_cells``: the query's cluster row, each cell shrunk towards its parent with pseudo-count m
      (``shrinkage``): ``(n * mean + m * parent) / (n + m)`` (cluster -> pooled pair; (cluster, benchmark)
      -> (benchmark, pair) -> pooled pair). With benchmark names in the records, a share ``task_weight``
      of it comes from the (cluster, benchmark) rows mixed by the posterior P(benchmark | query) of a
      Gaussian linear discriminant (Ledoit-Wolf shrunk covariance; logits divided by a temperature
      fitted on out-of-fold predictions, because LDA posteriors are overconfident).
    * ``ridge_p``: a per-pair success model, ridge regression of the pair's score on the embedding
      (closed form, one SVD for every pair and penalty; ``ridge_lambda`` x the number of queries).
      Weight ``ridge_weight`` r; 0 is pure cluster statistics.
    Do no harm, per cell
        The default of every query is the best single pair d(a) (the best pooled utility at a). Another
        pair must beat it by more than ``evidence`` z standard errors of the *paired* difference in its
        cell: ``U'(q, p) = U(q, p) - z (1 - a) sd_cell(s_p - s_d) / sqrt(n + m)``. Paired, because models'
        successes are strongly correlated across queries: the difference is far less noisy than either
        accuracy. The cell's variance is itself shrunk towards the pooled one with the same m.
    Settings by cross-validation (``folds``, default 5, by query)
        Every setting left ``None`` (K, m, task_weight, ridge_weight, ridge_lambda, z) is chosen on
        out-of-fold routed accuracy at a = 0 (ties: the lower Brier score of the predicted accuracies), over a
        small grid: the embeddings are computed once,
        k-means runs once per (fold, K) and the ridge once per fold; a grid point is then a few array
        operations. K's grid adapts to the data: K <= n / 20 (at least 20 queries per cluster on average).
        The best grid point is kept only if the one-sided 95% lower bound of its out-of-fold gain over the
        best single pair (of each fold's training part) is above zero: mean - 1.645 standard errors of the
        paired per-query gains (the best of many grid points is optimistic: the bound guards against
        routing on a lucky grid point when the data are few); otherwise the
        router routes every query to the best single pair at each a (``single_``): it does no harm in
        expectation. ``cv_`` keeps the evidence (gain, standard error, grid size, chosen settings).
    Do no harm, per operating point
        Settings are chosen at a = 0, but a router is used at other operating points, where a cheaper pair
        of equal accuracy is a gain. So the same test is repeated, with the chosen settings' out-of-fold
        predictions, at each a of ``HARM_ALPHAS`` (and the router's own a), in utility
        ``(1 - a) * score - a * cost / cost_scale`` against the best single pair *at that a*; and at each
        tolerance of ``HARM_TOLERANCES`` ("cheapest within T points of the best"), where the gain is
        ``score(routed) - score(best single) + T`` (the accuracy given up must stay within T). ``harm_``
        keeps the lower bounds and decisions; routing at an operating point uses the nearest one measured.

Utility
    ``U = (1 - a) * Acc - a * CostNorm`` with ``CostNorm = cost / cost_scale_`` where ``cost_scale_`` is
    the largest pooled mean cost of any pair on the training records (see ``routers.utility``). Costs come
    from the same cells as accuracies (cost is not learned by the ridge). Everything routing reads at one
    operating point is built once and cached (``_RoutePlan``): routing a batch, or one query, is one
    matrix product, a softmax and one gather of the stacked tables, whatever the number of pairs.

Out of distribution
    ``ood_threshold_`` is the ``ood_quantile`` (0.99) quantile of the training queries' distances to their
    nearest centroid. A query beyond it is flagged ``ood: true`` and, with ``ood_fallback="pooled"``
    (default), routed on the pooled statistics (so at a = 0, to the best single pair); ``"nearest"`` keeps
    the nearest cluster.

Pool extension (pairs with no records)
    By default a pool pair without records is excluded (``new_pair="exclude"``). With ``new_pair="prior"``
    it gets accuracy ``prior_accuracy`` everywhere and a price-based cost (the cell's mean tokens times the
    model's price). Pairs of the records that are not in the pool are never chosen.

All fitted state is numpy arrays, numbers, strings and lists (no estimator objects).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import numpy as np

from atlas_router.config import PoolConfig
from atlas_router.errors import AtlasError
from atlas_router.routers.base import Decision, LazyDecision, Queries, Router
from atlas_router.routers.table import QueryTable
from atlas_router.routers.utility import best_pairs, utility

GRID: dict[str, tuple[float, ...]] = {
    "k": (1, 2, 4, 8, 16, 32),
    "shrinkage": (2.0, 10.0, 50.0),
    "task_weight": (0.0, 1.0),
    "ridge_weight": (0.0, 0.5, 1.0),
    "ridge_lambda": (3e-4, 3e-3, 3e-2, 3e-1),
    "evidence": (0.0, 1.0, 2.0),
}
PAPER = {"k": 8, "shrinkage": 0.0, "task_weight": 0.0, "ridge_weight": 0.0, "ridge_lambda": 0.0, "evidence": 0.0}
MIN_PER_CLUSTER = 20  # K of the grid leaves at least this many training queries per cluster on average
MIN_CV_QUERIES = 20  # fewer training queries: no cross-validation, the router is the best single pair
CV_KMEANS_INIT = 2  # k-means restarts inside cross-validation (the final fit uses n_init)
GAIN_Z = 1.645  # one-sided 95%: the CV gain over best single must be this many standard errors above 0
# operating points at which the do-no-harm decision is measured (routing at a value between two uses the
# nearest one); the router's own alpha is always added
HARM_ALPHAS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
HARM_TOLERANCES = (0.0, 0.01, 0.02, 0.05, 0.1)
SETTINGS = tuple(PAPER)


class ClusterRouter(Router):
    """Route each query to the pair of best predicted utility; see the module docs."""

    name = "atlas-cluster"
    estimates_accuracy = True

    def __init__(
        self,
        k: int | None = None,
        alpha: float = 0.5,
        seed: int = 0,
        method: Literal["auto", "paper"] = "auto",
        n_init: int = 10,
        max_iter: int = 1000,
        shrinkage: float | None = None,
        task_weight: float | None = None,
        ridge_weight: float | None = None,
        ridge_lambda: float | None = None,
        evidence: float | None = None,
        folds: int = 5,
        ood_quantile: float = 0.99,
        ood_fallback: Literal["pooled", "nearest"] = "pooled",
        new_pair: Literal["exclude", "prior"] = "exclude",
        prior_accuracy: float = 0.5,
        pool: PoolConfig | None = None,
        top: int = 3,
    ) -> None:
        super().__init__(alpha=alpha, seed=seed)
        self.k = k
        self.method = method
        self.n_init = n_init
        self.max_iter = max_iter
        self.shrinkage = shrinkage
        self.task_weight = task_weight
        self.ridge_weight = ridge_weight
        self.ridge_lambda = ridge_lambda
        self.evidence = evidence
        self.folds = folds
        self.ood_quantile = ood_quantile
        self.ood_fallback = ood_fallback
        self.new_pair = new_pair
        self.prior_accuracy = prior_accuracy
        self.pool = pool
        self.top = top

    # -- settings ---------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.method not in ("auto", "paper"):
            raise AtlasError(f"method must be 'auto' or 'paper', got {self.method!r}")
        if self.k is not None and int(self.k) < 1:
            raise AtlasError(f"k must be at least 1, got {self.k}")
        for name in ("shrinkage", "ridge_lambda", "evidence"):
            v = getattr(self, name)
            if v is not None and float(v) < 0:
                raise AtlasError(f"{name} must be >= 0, got {v}")
        for name in ("task_weight", "ridge_weight"):
            v = getattr(self, name)
            if v is not None and not 0 <= float(v) <= 1:
                raise AtlasError(f"{name} must lie in [0, 1], got {v}")
        if int(self.folds) < 2:
            raise AtlasError(f"folds must be at least 2, got {self.folds}")
        if not 0 < self.ood_quantile <= 1:
            raise AtlasError(f"ood_quantile must lie in (0, 1], got {self.ood_quantile}")
        if self.ood_fallback not in ("pooled", "nearest"):
            raise AtlasError(f"ood_fallback must be 'pooled' or 'nearest', got {self.ood_fallback!r}")
        if self.new_pair not in ("exclude", "prior"):
            raise AtlasError(f"new_pair must be 'exclude' or 'prior', got {self.new_pair!r}")
        if not 0 <= self.prior_accuracy <= 1:
            raise AtlasError(f"prior_accuracy must lie in [0, 1], got {self.prior_accuracy}")

    def _grid(self, n: int, has_tasks: bool) -> dict[str, tuple[float, ...]]:
        """Candidate values per setting: the given value, the paper's, or the CV grid."""
        out: dict[str, tuple[float, ...]] = {}
        for name in SETTINGS:
            given = getattr(self, name)
            if given is not None:
                out[name] = (float(given),)
            elif self.method == "paper":
                out[name] = (float(PAPER[name]),)
            elif name == "k":
                kmax = max(1, n // MIN_PER_CLUSTER)
                out[name] = tuple(float(k) for k in GRID["k"] if k <= kmax)
            else:
                out[name] = GRID[name]
        if not has_tasks:
            out["task_weight"] = (0.0,)
        if max(out["ridge_weight"]) == 0:
            out["ridge_lambda"] = (0.0,)
        return out

    # -- fitting ----------------------------------------------------------------------------------
    def _fit(self, table: QueryTable) -> None:
        from threadpoolctl import threadpool_limits

        self._check_params()
        self.__dict__.pop("_plans", None)  # the routing plans of an earlier fit
        # small dense algebra (<= a few thousand x a few hundred): one BLAS thread is fastest, and on a
        # busy machine several threads spin against each other (an SVD 50x slower on two shared cores)
        with threadpool_limits(limits=1, user_api="blas"):
            self._fit_limited(table)

    def _fit_limited(self, table: QueryTable) -> None:
        emb = self.embed_table(table).astype(np.float64)
        self.embedding_dim_ = emb.shape[1]
        pairs = list(table.pairs)
        scores = _fill(table.scores, np.nan_to_num(self.pair_accuracy_, nan=0.0))
        names, task_idx = _task_labels(table.benchmarks)
        has_tasks = len(names) >= 2
        grid = self._grid(table.n_queries, has_tasks)
        self.task_temperature_ = 1.0
        self.single_ = False
        self.harm_: dict[str, list[float]] = {}
        self.cv_: dict[str, Any] = {"ran": False}
        n_distinct = len(np.unique(emb.round(6), axis=0))
        searched = any(len(v) > 1 for v in grid.values())
        if searched and table.n_queries >= MIN_CV_QUERIES and n_distinct >= 2:
            chosen = self._cross_validate(emb, scores, table.costs, task_idx, names, grid)
        else:
            chosen = {name: v[0] for name, v in grid.items()}
            if searched:  # too few queries to tell settings apart: stay with the best single pair
                self.single_ = True
                self.cv_ = {"ran": False, "reason": f"{table.n_queries} queries (< {MIN_CV_QUERIES}): best single pair"}
        self.k_ = int(chosen["k"])
        self.shrinkage_ = float(chosen["shrinkage"])
        self.task_weight_ = float(chosen["task_weight"])
        self.ridge_weight_ = float(chosen["ridge_weight"])
        self.ridge_lambda_ = float(chosen["ridge_lambda"])
        self.evidence_ = float(chosen["evidence"])

        self.n_clusters_ = int(min(self.k_, n_distinct))
        self.centroids_, self.labels_, self.inertia_ = _kmeans(emb, self.n_clusters_, self.seed, self.n_init,
                                                               self.max_iter)
        self.centroid_sq_ = (self.centroids_**2).sum(1)
        dist = np.sqrt(self._sq_distances(emb)[np.arange(len(emb)), self.labels_])
        self.train_distances_ = dist.astype(np.float32)
        self.ood_threshold_ = float(np.quantile(dist, self.ood_quantile))
        self.cluster_sizes_ = np.bincount(self.labels_, minlength=self.n_clusters_)

        self.tasks_ = ["*"]
        self.task_coef_ = None
        self.task_intercept_ = None
        rows = np.zeros(len(emb), dtype=np.int64)
        if self.task_weight_ > 0 and has_tasks:
            keep = task_idx >= 0
            coef, intercept = _lda_logit_params(emb[keep], task_idx[keep], len(names))
            if not self.cv_.get("ran"):
                self.task_temperature_ = _lda_temperature(emb[keep], task_idx[keep], len(names), self.seed)
            self.tasks_ = list(names)
            self.task_coef_ = coef / self.task_temperature_
            self.task_intercept_ = intercept / self.task_temperature_
            rows = np.where(keep, task_idx, self.task_posterior(emb).argmax(1))  # unnamed: most likely one
        self.ridge_coef_ = np.zeros((emb.shape[1], len(pairs)))
        self.ridge_intercept_ = np.zeros(len(pairs))
        if self.ridge_weight_ > 0:
            (coef, intercept), = _ridge(emb, scores, [self.ridge_lambda_ * len(emb)])
            self.ridge_coef_, self.ridge_intercept_ = coef, intercept
        self._fit_stats(table, scores, rows)

    def _fit_stats(self, table: QueryTable, scores: np.ndarray, task_rows: np.ndarray) -> None:
        """Accuracy, cost, counts and score moments per (cluster, benchmark, pair); row K is pooled."""
        k, n_tasks, m = self.n_clusters_, len(self.tasks_), self.shrinkage_
        pairs = list(table.pairs)
        allowed = np.ones(len(pairs), dtype=bool)
        prior_pairs: list[tuple[str, str]] = []
        if self.pool is not None:
            pool_pairs = self.pool.pairs()
            allowed = np.array([p in set(pool_pairs) for p in pairs], dtype=bool)
            if self.new_pair == "prior":
                prior_pairs = [p for p in pool_pairs if p not in set(pairs)]
        pooled_acc = np.nan_to_num(self.pair_accuracy_, nan=0.0)
        cells = _Cells(table, scores, self.labels_, task_rows, k, n_tasks)
        stats = cells.shrunk(m, pooled_acc, self.pair_cost_)
        n_c, acc_c, cost_c, n_t, acc_t, cost_t = stats
        self.accuracy_raw_ = cells.raw_cluster_accuracy()
        self.moments_, self.cluster_moments_ = cells.moments()  # for the paired-difference penalty
        tokens = cells.tokens()  # (K+1, B, 2)
        extra = len(prior_pairs)
        if extra:
            pad = lambda a, v: np.concatenate([a, np.broadcast_to(v, a.shape[:-1] + (extra,))], axis=-1)  # noqa: E731
            n_c, n_t = pad(n_c, 0.0), pad(n_t, 0.0)
            acc_c, acc_t = pad(acc_c, self.prior_accuracy), pad(acc_t, self.prior_accuracy)
            cost_t = pad(cost_t, 0.0)
            for j, (model, _tool) in enumerate(prior_pairs, start=len(pairs)):
                price = self.pool.model(model).price
                cost_t[..., j] = (tokens[..., 0] * price.input + tokens[..., 1] * price.output) / 1e6
            cost_c = np.concatenate([cost_c, cost_t[..., len(pairs):].mean(1)], axis=-1)
            self.ridge_coef_ = np.hstack([self.ridge_coef_, np.zeros((self.ridge_coef_.shape[0], extra))])
            self.ridge_intercept_ = np.concatenate([self.ridge_intercept_, np.full(extra, self.prior_accuracy)])
        never_graded = np.isnan(self.pair_accuracy_)
        self.pairs_ = pairs + prior_pairs
        self.prior_pairs_ = prior_pairs
        self.available_ = np.concatenate([allowed & ~never_graded, np.ones(extra, dtype=bool)])
        if not self.available_.any():
            raise AtlasError("no pair can be routed to: none of the pool's pairs has graded records")
        self.default_accuracy_ = np.concatenate([pooled_acc, np.full(extra, self.prior_accuracy)])
        self.counts_, self.accuracy_, self.cost_ = n_c, acc_c, cost_c  # (K+1, P): per cluster
        self.task_counts_, self.task_accuracy_, self.task_cost_ = n_t, acc_t, cost_t  # (K+1, B, P)

    # -- cross-validation -------------------------------------------------------------------------
    def _cross_validate(self, emb: np.ndarray, scores: np.ndarray, costs: np.ndarray, task_idx: np.ndarray,
                        names: list[str], grid: dict[str, tuple[float, ...]]) -> dict[str, float]:
        """Out-of-fold routed accuracy (a = 0) of every grid point; see the module docs."""
        from sklearn.model_selection import KFold

        n, n_pairs = scores.shape
        folds = list(KFold(min(int(self.folds), n), shuffle=True, random_state=self.seed).split(emb))
        pooled_cost = self.pair_cost_
        n_tasks = max(len(names), 1)
        post = np.ones((n, 1))
        if max(grid["task_weight"]) > 0:
            logits = np.full((n, n_tasks), -np.inf)
            for tr, te in folds:
                keep = tr[task_idx[tr] >= 0]
                coef, intercept = _lda_logit_params(emb[keep], task_idx[keep], n_tasks)
                logits[te] = emb[te] @ coef + intercept
            self.task_temperature_ = _fit_temperature(logits, task_idx)
            post = _softmax(logits / self.task_temperature_)
        default = np.zeros(n, dtype=np.int64)
        cells: dict[tuple[float, float, float], tuple[np.ndarray, np.ndarray]] = {}
        ridge: dict[float, np.ndarray] = {lam: np.zeros((n, n_pairs)) for lam in grid["ridge_lambda"]}
        for tr, te in folds:
            pooled = scores[tr].mean(0)
            b = int(best_pairs(pooled[None, :], pooled_cost)[0])
            default[te] = b
            rows_tr = task_idx[tr] if n_tasks > 1 else np.zeros(len(tr), dtype=np.int64)
            if n_tasks > 1:  # unnamed training queries count through their most likely benchmark
                rows_tr = np.where(rows_tr >= 0, rows_tr, post[tr].argmax(1))
            for k in grid["k"]:
                centroids, labels, _ = _kmeans(emb[tr], int(k), self.seed, CV_KMEANS_INIT, self.max_iter)
                held = _nearest(emb[te], centroids)
                fold_cells = _FoldCells(scores[tr], labels, rows_tr, int(k), n_tasks, b)
                for m in grid["shrinkage"]:
                    acc_c, pen_c, acc_t, pen_t = fold_cells.shrunk(m)
                    for w in grid["task_weight"]:
                        key = (k, m, w)
                        if key not in cells:
                            cells[key] = (np.zeros((n, n_pairs)), np.zeros((n, n_pairs)))
                        a, p = cells[key]
                        a[te], p[te] = acc_c[held], pen_c[held]
                        if w > 0:
                            pt = post[te]
                            a[te] = (1 - w) * a[te] + w * np.einsum("nb,nbp->np", pt, acc_t[held])
                            p[te] = (1 - w) * p[te] + w * np.einsum("nb,nbp->np", pt, pen_t[held])
            lams = [lam for lam in grid["ridge_lambda"] if lam > 0]
            if lams and max(grid["ridge_weight"]) > 0:
                for lam, (coef, intercept) in zip(lams, _ridge(emb[tr], scores[tr], [lam * len(tr) for lam in lams])):
                    ridge[lam][te] = np.clip(emb[te] @ coef + intercept, 0.0, 1.0)

        idx = np.arange(n)
        base = scores[idx, default]
        results = []
        for (k, m, w), (a_cells, pen) in cells.items():
            for r in grid["ridge_weight"]:
                for lam in (grid["ridge_lambda"] if r > 0 else (grid["ridge_lambda"][0],)):
                    acc = a_cells if r == 0 else (1 - r) * a_cells + r * ridge[lam]
                    brier = float(((acc - scores) ** 2).mean())
                    for z in grid["evidence"]:
                        choice = best_pairs(acc - z * pen, pooled_cost)
                        gain = scores[idx, choice] - base
                        results.append((float(gain.mean()), float(gain.std(ddof=1) / np.sqrt(n)), brier,
                                        {"k": k, "shrinkage": m, "task_weight": w, "ridge_weight": r,
                                         "ridge_lambda": lam, "evidence": z}))
        # routed accuracy first; among equal gains (common when no setting beats the best single pair at
        # a = 0) the settings that predict held-out scores best, since other operating points use them
        best_gain, best_se, best_brier, best = max(results, key=lambda t: (t[0], -t[2]))
        a_cells, pen = cells[(best["k"], best["shrinkage"], best["task_weight"])]
        r = best["ridge_weight"]
        acc = a_cells if r == 0 else (1 - r) * a_cells + r * ridge[best["ridge_lambda"]]
        self.harm_ = self._harm_evidence(acc, pen * best["evidence"], scores, costs, folds)
        self.single_ = not best_gain - GAIN_Z * best_se > 0
        self.cv_ = {"ran": True, "folds": len(folds), "grid_points": len(results), "gain": best_gain, "se": best_se,
                    "brier": best_brier,
                    "single_accuracy": float(base.mean()), "settings": {k: float(v) for k, v in best.items()},
                    "decision": "best single pair (95% lower bound of the gain <= 0)" if self.single_
                    else "routed (95% lower bound of the gain > 0)"}
        return best

    def _harm_evidence(self, acc: np.ndarray, pen: np.ndarray, scores: np.ndarray, costs: np.ndarray,
                       folds: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, list[float]]:
        """Out-of-fold gain over the best single pair at every measured operating point (module docs)."""
        from atlas_router.routers.operating_point import cheapest_within

        n = len(scores)
        filled = np.where(np.isnan(costs), np.nan_to_num(self.pair_cost_)[None, :], costs)
        scale = self.cost_scale_

        def lower_bound(gain: np.ndarray) -> float:
            return float(gain.mean() - GAIN_Z * gain.std(ddof=1) / np.sqrt(n))

        alphas = sorted(set(HARM_ALPHAS) | {float(self.alpha)})
        lb_alpha = []
        for a in alphas:
            gain = np.empty(n)
            for tr, te in folds:
                c_tr = filled[tr].mean(0)
                d = int(best_pairs(utility(scores[tr].mean(0), c_tr, a, scale)[None, :], c_tr)[0])
                choice = best_pairs((1 - a) * (acc[te] - pen[te]) - a * c_tr[None, :] / scale, c_tr)
                true = (1 - a) * scores[te] - a * filled[te] / scale
                gain[te] = true[np.arange(len(te)), choice] - true[:, d]
            lb_alpha.append(lower_bound(gain))
        lb_tol = []
        for tol in HARM_TOLERANCES:
            gain = np.empty(n)
            for tr, te in folds:
                c_tr = filled[tr].mean(0)
                d = int(best_pairs(scores[tr].mean(0)[None, :], c_tr)[0])
                choice = cheapest_within(acc[te], c_tr, tol)
                gain[te] = scores[te][np.arange(len(te)), choice] - scores[te, d] + tol
            lb_tol.append(lower_bound(gain))
        return {"alphas": alphas, "alpha_lower_bound": lb_alpha, "alpha_routed": [lb > 0 for lb in lb_alpha],
                "tolerances": list(HARM_TOLERANCES), "tolerance_lower_bound": lb_tol,
                "tolerance_routed": [lb > 0 for lb in lb_tol]}

    def single_at(self, alpha: float | None = None, tolerance: float | None = None) -> bool:
        """Whether the do-no-harm rule keeps the best single pair at this operating point (nearest one
        measured in cross-validation; without cross-validation, the fit-time decision ``single_``)."""
        harm = getattr(self, "harm_", None)
        if not harm:
            return bool(self.single_)
        key, value = ("tolerance", tolerance) if tolerance is not None else ("alpha", alpha or 0.0)
        grid = np.asarray(harm[key + "s"], dtype=float)
        return not bool(harm[key + "_routed"][int(np.abs(grid - float(value)).argmin())])

    # -- routing ----------------------------------------------------------------------------------
    def task_posterior(self, emb: np.ndarray) -> np.ndarray:
        """P(benchmark | query) per row (a single column of ones without benchmark names)."""
        if self.task_coef_ is None:
            return np.ones((len(emb), 1))
        return _softmax(np.asarray(emb, dtype=np.float64) @ self.task_coef_ + self.task_intercept_)

    def _sq_distances(self, emb: np.ndarray) -> np.ndarray:
        emb = np.asarray(emb, dtype=np.float64)
        d = (emb**2).sum(1)[:, None] - 2.0 * emb @ self.centroids_.T + self.centroid_sq_[None, :]
        return np.maximum(d, 0.0)

    def default_pair(self, alpha: float) -> int:
        """The best single pair at ``alpha``: best pooled utility among servable pairs (ties: cheaper)."""
        u = utility(self.default_accuracy_, self.cost_[-1], alpha, self.cost_scale_)
        u = np.where(self.available_, u, -np.inf)
        return int(best_pairs(u[None, :], self.cost_[-1])[0])

    def utility_table(self, alpha: float, single: bool | None = None) -> dict[str, np.ndarray]:
        """Utility of the cell statistics (accuracy part scaled by 1 - ridge weight)
        minus the evidence penalty, per cluster row (K+1, P) and per (row, benchmark) (K+1, B, P).
        ``single`` (default: the do-no-harm decision at ``alpha``) leaves only the best single pair.
        Built once per operating point by the routing plan (``_plan``), which caches it."""
        single = self.single_at(alpha) if single is None else single
        d = self.default_pair(alpha)
        keep = 1.0 - self.ridge_weight_
        z = self.evidence_ * (1.0 - alpha)
        pen_c = _penalty(self.cluster_moments_, d, self.shrinkage_, self.counts_.shape[-1])
        pen_t = _penalty(self.moments_, d, self.shrinkage_, self.counts_.shape[-1])
        u_c = keep * (1 - alpha) * self.accuracy_ - alpha * self.cost_ / self.cost_scale_ - z * pen_c
        u_t = keep * (1 - alpha) * self.task_accuracy_ - alpha * self.task_cost_ / self.cost_scale_ - z * pen_t
        blocked = ~self.available_
        if single:
            blocked = np.arange(len(self.pairs_)) != d
        u_c[..., blocked] = -np.inf
        u_t[..., blocked] = -np.inf
        return {"u_c": u_c, "u_t": u_t, "default": d, "single": single}

    def assign(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest cluster and the distance to its centroid, per embedding row."""
        d2 = self._sq_distances(emb)
        idx = d2.argmin(axis=1)
        return idx, np.sqrt(d2[np.arange(len(idx)), idx])

    def query_tables(self, emb: np.ndarray, alpha: float, single: bool | None = None) -> dict[str, np.ndarray]:
        """Per query: cluster, distance, ood, table row, task posterior, mixed accuracy/cost/n/utility
        (``single``: see ``utility_table``)."""
        return self._plan(alpha, single).tables(self, np.asarray(emb, dtype=np.float64))

    def _plan(self, alpha: float, single: bool | None) -> "_RoutePlan":
        """The routing plan at (alpha, single), built once and cached (also under ``single=None``, so that
        routing does not look the do-no-harm decision up again)."""
        plans = self.__dict__.setdefault("_plans", {})
        plan = plans.get((alpha, single))
        if plan is None:
            if len(plans) > 64:
                plans.clear()
            plan = plans[(alpha, single)] = _RoutePlan(self, self.utility_table(alpha, single), alpha)
        return plan

    def _route(self, queries: Queries, alpha: float) -> list[Decision]:
        emb = np.asarray(self.embed(queries), dtype=np.float64)
        plan = self._plan(alpha, None)
        if len(emb) == 1:  # one query: its row as plain lists, decided on them (a few numpy calls in all)
            return self._decide(plan.one(self, emb[0]), alpha, None, None)
        return self.decisions(plan.tables(self, emb), alpha)

    def route_indices(self, emb: np.ndarray, alpha: float | None = None) -> np.ndarray:
        """Chosen pair index per embedding row, without explanations (the fast path for batches)."""
        a, emb = self.alpha if alpha is None else alpha, np.asarray(self.embed(emb), dtype=np.float64)
        if len(emb) == 1:
            x = self._plan(a, None).one(self, emb[0])
            return np.array(_few_choices(x["u"], x["cost"], 0, None, None)[0], dtype=np.intp)
        t = self.query_tables(emb, a)
        if len(t["utility"]) <= _FEW:
            return np.array(_few_choices(t["utility"].tolist(), t["cost"].tolist(), 0, None, None)[0], dtype=np.intp)
        return best_pairs(t["utility"], t["cost"])

    def decisions(self, t: dict[str, np.ndarray], alpha: float, choice: np.ndarray | None = None,
                  point: str | None = None) -> list[Decision]:
        """One Decision per row of ``t``: the pair of best utility (or ``choice``, the pairs an operating
        point chose, labelled ``point``, whose utility is then their expected accuracy), the ranking by
        utility, and an explanation written when first read (``LazyDecision``)."""
        u, k_top = t["utility"], max(int(self.top), 1)
        if len(u) <= _FEW:  # a few rows: plain Python on lists beats the numpy calls' fixed cost
            return self._decide(_row_lists(t, self.n_clusters_), alpha, None if choice is None else choice.tolist(),
                                point)
        if choice is None:
            choice = best_pairs(u, t["cost"])
        rows = np.arange(len(u))
        values = (t["accuracy"] if point is not None else u)[rows, choice].tolist()
        order_ix = np.argsort(-u, axis=1, kind="stable")[:, :k_top]
        finite = (u[rows[:, None], order_ix] > -np.inf).tolist()
        orders = [[p for p, ok in zip(o, f) if ok] for o, f in zip(order_ix.tolist(), finite)]
        return self._lazy(choice.tolist(), values, orders, _Explainer(self, t["single"], alpha, orders, point, t=t))

    def _decide(self, x: dict[str, Any], alpha: float, choice: list[int] | None, point: str | None) -> list[Decision]:
        """``decisions`` for rows already in list form (``_row_lists``, ``_RoutePlan.one``)."""
        choices, values, orders = _few_choices(x["u"], x["cost"], max(int(self.top), 1), choice,
                                               x["acc"] if point is not None else None)
        return self._lazy(choices, values, orders, _Explainer(self, x["single"], alpha, orders, point, lists=x))

    def _lazy(self, choices: list[int], values: list[float], orders: list[list[int]],
              explain: "_Explainer") -> list[Decision]:
        pairs = self.pairs_
        return [LazyDecision(*pairs[j], values[i], [pairs[p] for p in orders[i]], functools.partial(explain.row, i, j))
                for i, j in enumerate(choices)]

    def settings(self) -> dict[str, Any]:
        """The settings in use (chosen by cross-validation or given) and the CV evidence."""
        return {"method": self.method, "k": self.n_clusters_, "shrinkage": self.shrinkage_,
                "task_weight": self.task_weight_, "ridge_weight": self.ridge_weight_,
                "ridge_lambda": self.ridge_lambda_, "evidence": self.evidence_, "single": self.single_,
                "cv": self.cv_}

    def cluster_summary(self, alpha: float | None = None) -> list[dict[str, Any]]:
        """Per cluster: size and its best pair on the cluster's own table (reports, ``--explain``)."""
        a = self.alpha if alpha is None else alpha
        u = utility(self.accuracy_, self.cost_, a, self.cost_scale_)
        u[:, ~self.available_] = -np.inf
        best = best_pairs(u, self.cost_)
        return [
            {"cluster": c, "size": int(self.cluster_sizes_[c]), "model": self.pairs_[best[c]][0],
             "tool": self.pairs_[best[c]][1], "accuracy": float(self.accuracy_[c, best[c]]),
             "cost": float(self.cost_[c, best[c]]), "utility": float(u[c, best[c]])}
            for c in range(self.n_clusters_)
        ]


class PaperClusterRouter(ClusterRouter):
    """The paper's method as published: K=8, mean accuracy and cost per cluster, no learned settings."""

    name = "atlas-cluster-paper"

    def __init__(self, k: int | None = None, alpha: float = 0.5, seed: int = 0, method: str = "paper",
                 **params: Any) -> None:
        super().__init__(k=k, alpha=alpha, seed=seed, method=method, **params)  # type: ignore[arg-type]


_FEW = 8  # rows up to which decisions are made on lists (measured: bench/routing_speed.py)


def _few_choices(u: list[list[float]], cost: list[list[float]], k_top: int, choice: list[int] | None,
                 acc: list[list[float]] | None) -> tuple[list[int], list[float], list[list[int]]]:
    """``best_pairs`` (or the given ``choice``), the chosen value (utility, or ``acc`` when given) and the
    top ``k_top`` finite pairs by utility (stable), for a few rows, on plain lists."""
    choices, values, orders = [], [], []
    for i, (ui, ci) in enumerate(zip(u, cost)):
        ranked = sorted(range(len(ui)), key=ui.__getitem__, reverse=True)  # stable: ties keep pair order
        if choice is None:
            floor = ui[ranked[0]] - 1e-12
            if len(ui) > 1 and ui[ranked[1]] >= floor:  # near-ties in utility: the cheapest of them
                near = [p for p in ranked if ui[p] >= floor]
                j = min(near, key=lambda p: (ci[p] if ci[p] == ci[p] else -math.inf, p))
            else:
                j = ranked[0]
        else:
            j = choice[i]
        choices.append(j)
        values.append((acc[i] if acc is not None else ui)[j])
        orders.append([p for p in ranked[:k_top] if ui[p] > -math.inf])
    return choices, values, orders


def _row_lists(t: dict[str, Any], k: int) -> dict[str, Any]:
    """The rows of ``tables`` as plain lists (what explanations and ``_few_choices`` read)."""
    post = t["posterior"]
    return {"u": t["utility"].tolist(), "acc": t["accuracy"].tolist(), "cost": t["cost"].tolist(),
            "n": t["n"].tolist(), "pooled": (t["row"] == k).tolist(), "dist": t["distance"].tolist(),
            "cluster": t["cluster"].tolist(), "ood": t["ood"].tolist(), "row": t["row"].tolist(),
            "post": post.tolist() if post is not None else None, "single": t["single"]}


class _Explainer:
    """Writes the explanations of one batch of cluster decisions on demand: the batch's arrays (``t``)
    become plain lists on the first explanation read (rows already in list form are given as ``lists``),
    then each row's is a few dict lookups."""

    def __init__(self, router: "ClusterRouter", single: bool, alpha: float, orders: list[list[int]],
                 point: str | None, t: dict[str, Any] | None = None, lists: dict[str, Any] | None = None) -> None:
        self.router, self.single, self.alpha, self.orders, self.point = router, single, alpha, orders, point
        self.t, self._lists = t, lists

    def lists(self) -> dict[str, Any]:
        if self._lists is None:
            assert self.t is not None
            self._lists = _row_lists(self.t, self.router.n_clusters_)
        return self._lists

    def row(self, i: int, j: int) -> dict[str, Any]:
        r, x = self.router, self.lists()
        pairs = r.pairs_
        u_i, n_i, acc_i = x["u"][i], x["n"][i], x["acc"][i]
        if x["pooled"][i]:
            fallback = "out of distribution: routed on pooled statistics"
        elif self.single:
            fallback = "best single pair: no setting beat it with 95% confidence in cross-validation"
        elif pairs[j] in r.prior_pairs_:
            fallback = f"pair has no records: prior accuracy {r.prior_accuracy:g} and price-based cost"
        elif n_i[j] < r.shrinkage_:
            fallback = f"few records (n={n_i[j]:.0f} < m={r.shrinkage_:g}): shrunk towards broader statistics"
        else:
            fallback = None
        top = [{"model": pairs[p][0], "tool": pairs[p][1], "accuracy": round(acc_i[p], 4),
                "cost": x["cost"][i][p], "n": int(round(n_i[p])), "utility": round(u_i[p], 4)}
               for p in self.orders[i]]
        out: dict[str, Any] = {
            "router": r.name, "cluster": x["cluster"][i], "distance": round(x["dist"][i], 4), "ood": x["ood"][i],
            "ood_threshold": round(r.ood_threshold_, 4), "stats": "pooled" if x["pooled"][i] else "cluster",
            "fallback": fallback, "alpha": self.alpha, "top": top,
        }
        if x["post"] is not None:
            post = x["post"][i]
            best3 = sorted(range(len(post)), key=post.__getitem__, reverse=True)[:3]  # stable, as argsort
            out["benchmark"] = {r.tasks_[b]: round(post[b], 3) for b in best3 if post[b] >= 0.01}
        if self.point is not None:  # an operating point chose the pair: its expected accuracy, not a utility
            del out["alpha"]
            out["expected_accuracy"] = round(acc_i[j], 4)
            out["operating_point"] = self.point
        return out


class _RoutePlan:
    """Everything routing reads at one (alpha, single), laid out so a batch (or one query) costs one matrix
    product, a softmax and one gather-and-mix of the stacked tables, whatever the number of pairs:
    the centroids, the benchmark logits and the ridge models share one projection ``emb @ proj``, and
    utility, accuracy, cost and counts are mixed together as one (rows, 4, P) table."""

    def __init__(self, router: "ClusterRouter", tab: dict[str, Any], alpha: float) -> None:
        self.k = router.n_clusters_
        self.w = router.task_weight_ if router.task_coef_ is not None else 0.0
        self.r = router.ridge_weight_
        self.alpha = alpha
        parts = [-2.0 * router.centroids_.T]  # squared distance = |e|^2 - 2 e.c + |c|^2
        if self.w > 0:
            parts.append(router.task_coef_)
        if self.r > 0:
            parts.append(router.ridge_coef_)
        self.proj = np.ascontiguousarray(np.hstack(parts), dtype=np.float64)
        self.n_tasks = router.task_coef_.shape[1] if self.w > 0 else 0
        self.cluster_table = np.stack([tab["u_c"], router.accuracy_, router.cost_, router.counts_], axis=1)
        if self.w > 0:
            task = np.stack([tab["u_t"], router.task_accuracy_, router.task_cost_, router.task_counts_], axis=2)
            self.task_table = task.reshape(task.shape[0], task.shape[1], -1)  # (K+1, B, 4P)
        self.single = tab["single"]
        # for one query: the mixing weights folded into the tables, so that its row costs a few numpy calls
        with np.errstate(invalid="ignore"):
            self._fold_for_one(router)

    def _fold_for_one(self, router: "ClusterRouter") -> None:
        """The tables ``one`` reads: the mixing weights and non-finite entries folded in once."""
        scale = np.array([1.0, 1.0 - self.r, 1.0, 1.0])[None, :, None]  # accuracy keeps 1 - r of the table
        if self.w > 0:  # (w = 1: the cluster table is not used at all, as in tables(); no 0 * -inf)
            cluster_part = (np.zeros_like(self.cluster_table) if self.w == 1.0
                            else (1.0 - self.w) * self.cluster_table * scale)
            task = self.task_table.reshape(*self.task_table.shape[:2], 4, -1)  # (K+1, B, 4, P)
            task_part = self.w * (task * scale[:, None]).reshape(self.task_table.shape)
            # the posterior weights only the finite entries; a column with any non-finite entry takes their
            # sum (-inf, or NaN), added once, as the weighted sum would (no 0 * inf, so no errstate per call)
            finite = np.isfinite(task_part)
            self.task_finite = np.where(finite, task_part, 0.0)
            cluster_part = cluster_part + np.where(finite, 0.0, task_part).sum(axis=1).reshape(cluster_part.shape)
        else:
            cluster_part = self.cluster_table * scale
        cluster_part[:, 0] = np.where(np.isfinite(cluster_part[:, 0]), cluster_part[:, 0], -np.inf)  # NaN utility
        self.cluster_part = cluster_part
        # one product gives the distances (less |e|^2), the benchmark logits and the ridge scores, offsets added
        offsets = [router.centroid_sq_]
        if self.w > 0:
            offsets.append(router.task_intercept_)
        if self.r > 0:
            offsets.append(router.ridge_intercept_)
        self.offset = np.concatenate(offsets).astype(np.float64)
        if self.r > 0:  # what the ridge adds to (u, acc, cost, n): per unit of its score, and out of distribution
            self.ridge_mix = np.array([[(1.0 - self.alpha) * self.r], [self.r], [0.0], [0.0]])
            self.far_ridge = np.zeros_like(self.cluster_part[0])
            self.far_ridge[:2] = self.ridge_mix[:2] * router.default_accuracy_

    def tables(self, router: "ClusterRouter", emb: np.ndarray) -> dict[str, Any]:
        if len(emb) == 1:
            x = self.one(router, emb[0])
            return {"cluster": np.array(x["cluster"]), "distance": np.array(x["dist"]), "ood": np.array(x["ood"]),
                    "row": np.array(x["row"]), "posterior": None if x["post"] is None else np.array(x["post"]),
                    "utility": np.array(x["u"]), "single": x["single"], "accuracy": np.array(x["acc"]),
                    "cost": np.array(x["cost"]), "n": np.array(x["n"])}
        k, w, r = self.k, self.w, self.r
        proj = emb @ self.proj
        partial = proj[:, :k] + router.centroid_sq_  # the squared distance less |e|^2, which ranks alike
        clusters = partial.argmin(axis=1)
        dist = np.sqrt(np.maximum(np.einsum("ij,ij->i", emb, emb) + partial[np.arange(len(emb)), clusters], 0.0))
        ood = dist > router.ood_threshold_
        rows = np.where(ood & (router.ood_fallback == "pooled"), router.n_clusters_, clusters)
        post = None
        with np.errstate(invalid="ignore"):  # -inf columns (unservable pairs) stay -inf
            mixed = self.cluster_table[rows]  # (n, 4, P)
            if w > 0:
                post = _softmax(proj[:, k:k + self.n_tasks] + router.task_intercept_)
                by_task = np.matmul(post[:, None, :], self.task_table[rows])[:, 0].reshape(mixed.shape)
                mixed = by_task if w == 1.0 else (1.0 - w) * mixed + w * by_task
            u, acc = mixed[:, 0], mixed[:, 1]
            if r > 0:
                learned = np.clip(proj[:, k + self.n_tasks:] + router.ridge_intercept_, 0.0, 1.0)
                far = rows == router.n_clusters_
                if far.any():  # out of distribution: no extrapolated success model
                    learned[far] = router.default_accuracy_
                u = u + (1 - self.alpha) * r * learned
                acc = (1 - r) * acc + r * learned
            else:
                u = u.copy()
        u[~np.isfinite(u)] = -np.inf
        return {"cluster": clusters, "distance": dist, "ood": ood, "row": rows, "posterior": post, "utility": u,
                "single": self.single, "accuracy": acc, "cost": mixed[:, 2], "n": mixed[:, 3]}

    def one(self, router: "ClusterRouter", e: np.ndarray) -> dict[str, Any]:
        """``tables`` for one embedding, as one row of plain lists (``_row_lists``' form): the same numbers
        (tested) in a few numpy calls, none of them under ``np.errstate``. Why: a single decision's time is
        the count of those calls and of the Python objects they make, not arithmetic."""
        k, w, r = self.k, self.w, self.r
        proj = np.dot(e, self.proj)  # (np.dot: a BLAS call without the matmul ufunc's set-up)
        proj += self.offset
        c = int(proj[:k].argmin())
        dist = math.sqrt(max(float(np.dot(e, e)) + float(proj[c]), 0.0))
        ood = dist > router.ood_threshold_
        row = router.n_clusters_ if ood and router.ood_fallback == "pooled" else c
        post = None
        mixed = self.cluster_part[row]
        if w > 0:
            z = proj[k:k + self.n_tasks]
            weights = np.exp(z - z.max())
            weights /= weights.sum()
            mixed = mixed + np.dot(weights, self.task_finite[row]).reshape(mixed.shape)
            weights = weights.tolist()
            post = [weights]
        far = row == router.n_clusters_
        if r > 0:  # out of distribution (far): no extrapolated success model, the pooled accuracy instead
            mixed = mixed + (self.far_ridge if far else self.ridge_mix * np.clip(proj[k + self.n_tasks:], 0.0, 1.0))
        u, acc, cost, n = mixed.tolist()
        if r > 0 and far:  # a pair with no pooled accuracy is never chosen
            u = [x if x == x else -math.inf for x in u]
        return {"u": [u], "acc": [acc], "cost": [cost], "n": [n], "pooled": [far], "dist": [dist], "cluster": [c],
                "ood": [ood], "row": [row], "post": post, "single": self.single}


# -- statistics per cell ----------------------------------------------------------------------------
class _Cells:
    """Sums per (cluster, benchmark) cell of a query table, NaN-aware; row K pools every query."""

    def __init__(self, table: QueryTable, filled: np.ndarray, labels: np.ndarray, task_rows: np.ndarray,
                 k: int, n_tasks: int) -> None:
        self.k, self.b = k, n_tasks
        cell = labels * n_tasks + task_rows
        n_cells = k * n_tasks
        one = np.zeros((len(labels), n_cells))
        one[np.arange(len(labels)), cell] = 1.0
        self.one = np.hstack([one, np.ones((len(labels), n_tasks)) / n_tasks])  # pooled row, split evenly
        self.one_task = np.zeros((len(labels), n_tasks))
        self.one_task[np.arange(len(labels)), task_rows] = 1.0
        self.table, self.filled = table, filled

    def _sum(self, one: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        have = ~np.isnan(x)
        return one.T @ np.where(have, x, 0.0), one.T @ have.astype(float)

    def shrunk(self, m: float, pooled_acc: np.ndarray, pooled_cost: np.ndarray):
        """(n, acc, cost) per cluster row (K+1, P) and per (row, benchmark) (K+1, B, P)."""
        k, b = self.k, self.b
        s, c = self.table.scores, self.table.costs
        ts, tn = self._sum(self.one_task, s)
        tc, tcn = self._sum(self.one_task, c)
        task_acc = np.where(tn + m > 0, (ts + m * pooled_acc) / np.maximum(tn + m, 1e-12), pooled_acc)
        task_cost = np.where(tcn + m > 0, (tc + m * pooled_cost) / np.maximum(tcn + m, 1e-12), pooled_cost)
        cs, cn = self._sum(self.one, s)
        cc, ccn = self._sum(self.one, c)
        cs, cn, cc, ccn = (x.reshape(k + 1, b, -1) for x in (cs, cn, cc, ccn))
        # per cluster: the sum over benchmarks (row K: over its 1/B-weighted columns, i.e. everything)
        s_c, n_c, c_c, cn_c = (x.sum(1) for x in (cs, cn, cc, ccn))
        for x, full in ((cs, s_c), (cn, n_c), (cc, c_c), (ccn, cn_c)):
            x[k] = full[k][None, :]
        mm = np.full((k + 1, 1), m)
        mm[k] = 0.0  # the pooled row is its own statistics
        acc_c = np.where(n_c + mm > 0, (s_c + mm * pooled_acc) / np.maximum(n_c + mm, 1e-12), pooled_acc)
        cost_c = np.where(cn_c + mm > 0, (c_c + mm * pooled_cost) / np.maximum(cn_c + mm, 1e-12), pooled_cost)
        mt = mm[:, :, None]
        acc_t = np.where(cn + mt > 0, (cs + mt * task_acc[None]) / np.maximum(cn + mt, 1e-12), task_acc[None])
        cost_t = np.where(ccn + mt > 0, (cc + mt * task_cost[None]) / np.maximum(ccn + mt, 1e-12), task_cost[None])
        acc_t[k], cost_t[k] = acc_c[k], cost_c[k]  # the pooled row ignores benchmarks
        self._n_c, self._s_c = n_c, s_c
        return n_c, acc_c, cost_c, cn, acc_t, cost_t

    def raw_cluster_accuracy(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self._n_c > 0, self._s_c / np.maximum(self._n_c, 1e-12), np.nan)

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Raw moments [[n, sum s], [sum s, sum s s']] of filled scores: per (row, benchmark) (K+1, B, P+1, P+1)
        and per row (K+1, P+1, P+1); row K pools every query."""
        x = np.hstack([np.ones((len(self.filled), 1)), self.filled])  # [1 | s]
        q = x.shape[1]
        outer = (x[:, :, None] * x[:, None, :]).reshape(len(x), -1)
        mom = (self.one.T @ outer).reshape(self.k + 1, self.b, q, q)
        per_row = mom.sum(1)
        mom[self.k] = per_row[self.k][None]
        return mom, per_row

    def tokens(self) -> np.ndarray:
        """Mean (input, output) tokens per record, per (row, benchmark); a cell without records: its row's."""
        out = np.zeros((self.k + 1, self.b, 2))
        for i, t in enumerate((self.table.input_tokens, self.table.output_tokens)):
            have = ~np.isnan(t)
            per_q_sum, per_q_n = np.where(have, t, 0.0).sum(1), have.sum(1).astype(float)
            s = (self.one.T @ per_q_sum).reshape(self.k + 1, self.b)
            n = (self.one.T @ per_q_n).reshape(self.k + 1, self.b)
            s[self.k], n[self.k] = s[self.k].sum(), n[self.k].sum()
            row = s.sum(1, keepdims=True) / np.maximum(n.sum(1, keepdims=True), 1e-12)
            out[..., i] = np.where(n > 0, s / np.maximum(n, 1e-12), row)
        return out


def _penalty(moments: np.ndarray, d: int, m: float, n_pairs: int) -> np.ndarray:
    """Standard error of the shrunk paired difference (s_p - s_d) per cell, from score moments.

    Shape of ``moments``: (..., P+1, P+1) with n in [0, 0], sums in row/column 0, cross sums in [1:, 1:].
    The cell's variance of the difference is shrunk towards the pooled one (the last row of ``moments``)
    with pseudo-count m, and divided by n + m. Pairs beyond the moments (new pairs) get no penalty.
    """
    def var(mom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = mom[..., 0, 0]
        nn = np.maximum(n, 1e-12)[..., None]
        mean = mom[..., 0, 1:] / nn
        second = mom[..., 1:, 1:] / nn[..., None]
        diag = np.diagonal(second, axis1=-2, axis2=-1)
        v = diag + diag[..., d : d + 1] - 2.0 * second[..., :, d] - (mean - mean[..., d : d + 1]) ** 2
        return n, np.maximum(v, 0.0)

    if d >= moments.shape[-1] - 1:  # the default is a new pair (no records): nothing to compare with
        return np.zeros(moments.shape[:-2] + (n_pairs,))
    n, v = var(moments)
    pooled = moments.reshape(-1, *moments.shape[-2:])[-1]
    _, v0 = var(pooled)
    v = (n[..., None] * v + m * v0) / np.maximum(n[..., None] + m, 1e-12)
    sd = np.sqrt(v / np.maximum(n[..., None] + m, 1.0))
    if sd.shape[-1] < n_pairs:
        sd = np.concatenate([sd, np.zeros(sd.shape[:-1] + (n_pairs - sd.shape[-1],))], axis=-1)
    return sd


class _FoldCells:
    """Cell statistics of one cross-validation fold (filled scores): accuracy and penalty vs pair b."""

    def __init__(self, scores: np.ndarray, labels: np.ndarray, task_rows: np.ndarray, k: int, n_tasks: int,
                 b: int) -> None:
        self.k, self.nt = k, n_tasks
        d = scores - scores[:, b : b + 1]
        self.pooled = scores.mean(0)
        self.v0 = d.var(0)
        one_t = np.zeros((len(scores), n_tasks))
        one_t[np.arange(len(scores)), task_rows] = 1.0
        self.n_t, self.s_t = one_t.sum(0), one_t.T @ scores
        cell = labels * n_tasks + task_rows
        one = np.zeros((len(scores), k * n_tasks))
        one[np.arange(len(scores)), cell] = 1.0
        self.n = one.sum(0).reshape(k, n_tasks)
        self.s = (one.T @ scores).reshape(k, n_tasks, -1)
        self.d1 = (one.T @ d).reshape(k, n_tasks, -1)
        self.d2 = (one.T @ d**2).reshape(k, n_tasks, -1)

    def shrunk(self, m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Accuracy and penalty per cluster (K, P) and per (cluster, benchmark) (K, B, P)."""
        task_acc = (self.s_t + m * self.pooled) / np.maximum(self.n_t[:, None] + m, 1e-12)
        task_acc = np.where(self.n_t[:, None] + m > 0, task_acc, self.pooled)

        def cells(n, s, d1, d2, parent):
            nn = n[..., None]
            acc = np.where(nn + m > 0, (s + m * parent) / np.maximum(nn + m, 1e-12), parent)
            with np.errstate(invalid="ignore", divide="ignore"):
                v = np.where(nn > 0, d2 / np.maximum(nn, 1e-12) - (d1 / np.maximum(nn, 1e-12)) ** 2, 0.0)
            v = (nn * np.maximum(v, 0.0) + m * self.v0) / np.maximum(nn + m, 1e-12)
            return acc, np.sqrt(v / np.maximum(nn + m, 1.0))

        acc_c, pen_c = cells(self.n.sum(1), self.s.sum(1), self.d1.sum(1), self.d2.sum(1), self.pooled)
        acc_t, pen_t = cells(self.n, self.s, self.d1, self.d2, task_acc[None])
        return acc_c, pen_c, acc_t, pen_t


# -- helpers ----------------------------------------------------------------------------------------
def _fill(scores: np.ndarray, pooled: np.ndarray) -> np.ndarray:
    """Scores with missing cells set to the pair's pooled accuracy (targets and CV evaluation)."""
    return np.where(np.isnan(scores), pooled[None, :], scores)


def _task_labels(benchmarks: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Benchmarks with at least two queries, and each query's index among them (-1: none or rare)."""
    labels = np.asarray(benchmarks, dtype=object).astype(str)
    names, counts = np.unique(labels[labels != ""], return_counts=True)
    names = [str(x) for x in names[counts >= 2]]
    index = {b: i for i, b in enumerate(names)}
    return names, np.array([index.get(b, -1) for b in labels], dtype=np.int64)


def _kmeans(x: np.ndarray, k: int, seed: int, n_init: int, max_iter: int
            ) -> tuple[np.ndarray, np.ndarray, float]:
    """(centroids, labels, inertia); K = 1 is the mean (no iterations needed)."""
    if k <= 1:
        c = x.mean(0, keepdims=True)
        return c, np.zeros(len(x), dtype=np.int64), float(((x - c) ** 2).sum())
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, init="k-means++", max_iter=max_iter, algorithm="elkan", n_init=n_init,
                random_state=seed).fit(x)
    return km.cluster_centers_.astype(np.float64), km.labels_.astype(np.int64), float(km.inertia_)


def _nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    d = (x**2).sum(1)[:, None] - 2.0 * x @ centroids.T + (centroids**2).sum(1)[None, :]
    return d.argmin(1)


def _ridge(x: np.ndarray, y: np.ndarray, lams: list[float]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Ridge regression of every column of y on x for each penalty (one SVD): [(coef (D, P), intercept)]."""
    mu, ym = x.mean(0), y.mean(0)
    u, s, vt = np.linalg.svd(x - mu, full_matrices=False)
    uy = u.T @ (y - ym)
    out = []
    for lam in lams:
        coef = vt.T @ ((s / (s**2 + lam))[:, None] * uy)
        out.append((coef, ym - mu @ coef))
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(1, keepdims=True)


def _lda_logit_params(x: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear discriminant logits ``x @ coef + intercept`` for classes 0..n_classes-1 (-inf: unseen)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    coef = np.zeros((x.shape[1], n_classes))
    intercept = np.full(n_classes, -np.inf)
    classes = np.unique(y)
    if len(classes) < 2:
        intercept[classes] = 0.0
        return coef, intercept
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(x, y)
    c, b = lda.coef_, lda.intercept_
    if len(lda.classes_) == 2:  # binary LDA keeps one discriminant: logits (0, d)
        c = np.vstack([np.zeros_like(c[0]), c[0]])
        b = np.array([0.0, b[0]])
    coef[:, lda.classes_] = c.T
    intercept[lda.classes_] = b
    return coef, intercept


def _fit_temperature(logits: np.ndarray, target: np.ndarray) -> float:
    """Temperature minimising the log loss of out-of-fold logits (LDA posteriors are overconfident)."""
    from scipy.optimize import minimize_scalar

    keep = target >= 0
    z0, t = logits[keep], target[keep]
    if len(t) == 0:
        return 1.0

    def nll(log_t: float) -> float:
        with np.errstate(invalid="ignore"):
            z = z0 / np.exp(log_t)
            z = z - z.max(1, keepdims=True)
            lse = np.log(np.exp(z).sum(1))
            picked = z[np.arange(len(t)), t]
        picked = np.where(np.isfinite(picked), picked, -50.0)
        return float((lse - picked).mean())

    return float(np.exp(minimize_scalar(nll, bounds=(np.log(0.1), np.log(100.0)), method="bounded").x))


def _lda_temperature(x: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> float:
    """Temperature from a stratified out-of-fold LDA (used when settings were not cross-validated)."""
    from sklearn.model_selection import StratifiedKFold

    folds = int(min(5, np.unique(y, return_counts=True)[1].min()))
    if folds < 2:
        return 1.0
    logits = np.full((len(y), n_classes), -np.inf)
    for train, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        coef, intercept = _lda_logit_params(x[train], y[train], n_classes)
        logits[held] = x[held] @ coef + intercept
    return _fit_temperature(logits, y)
