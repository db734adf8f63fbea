"""ATLAS training-free cluster routing: k-means over query embeddings, per-cluster pair statistics.

Fit
    1. Embed every training query (default encoder: all-MiniLM-L6-v2).
    2. KMeans(K=8, k-means++, elkan, max_iter=1000, n_init=10, random_state=seed) on the embeddings.
    3. Per cluster c and pair p: n (graded records), accuracy (mean score) and mean cost.
    4. Per-cluster statistics by benchmark. A cluster often mixes benchmarks whose best pairs differ
       (on the LLMRouter table, MATH and GPQA share a cluster; the best model differs). Records name
       their benchmark, so the statistics are kept per (cluster, benchmark, pair), and a query's
       table is the mix of its cluster's benchmark rows weighted by the posterior P(benchmark |
       query) of a Gaussian linear discriminant model of the embeddings (closed form: class means
       and a shared, Ledoit-Wolf shrunk covariance, so it stays sane with few queries per
       dimension; no iterative training), whose logits are divided by a temperature
       fitted on out-of-fold predictions (LDA posteriors are overconfident). On the LLMRouter table
       this is worth 1.5-2 points of routed accuracy at K=8. ``task_weight`` w in [0, 1] blends
       the two: ``Acc(q) = (1 - w) * Acc[c] + w * sum_b P(b|q) Acc[c, b]`` (default 1; 0 is plain
       per-cluster routing, as are records without benchmark names or with a single one).

Shrinkage (the fallback for thin support)
    Each cell is shrunk towards its parent with pseudo-count m (``shrinkage``), empirical Bayes with a
    prior of strength m centred on the parent mean: ``Acc[c,p] = (n * acc[c,p] + m * acc_pooled[p]) /
    (n + m)``, and the same for cost. Parents: (cluster, pair) -> pooled pair; (benchmark, pair) ->
    pooled pair; (cluster, benchmark, pair) -> (benchmark, pair). Cells with many records keep their
    own statistics, thin ones back off smoothly to broader ones, empty ones *are* their parent.

Utility
    ``U = (1 - a) * Acc - a * CostNorm`` with ``CostNorm = cost / cost_scale_`` where
    ``cost_scale_`` is the largest pooled mean cost of any pair on the training records (see
    ``routers.utility``). U is linear in Acc and Cost, so utility tables per (cluster, benchmark)
    are built once per ``a`` and cached; routing a batch is a distance matrix product, a posterior
    (one more product and a softmax) and a weighted sum of table rows, in numpy only.

Out of distribution
    ``ood_threshold_`` is the ``ood_quantile`` (0.99) quantile of the training queries' distances to
    their nearest centroid. A query beyond it is flagged ``ood: true`` in its explanation (the hook
    for the RL path) and, with ``ood_fallback="pooled"`` (default), routed on the pooled statistics
    of each pair instead of a cluster (and benchmark) it does not resemble; ``"nearest"`` keeps the
    nearest cluster.

Pool extension (pairs with no records)
    A pair of the pool (``pool=``) that has no record cannot be estimated. By default it is excluded
    (``new_pair="exclude"``). With ``new_pair="prior"`` it gets accuracy ``prior_accuracy`` in every
    cluster and benchmark and a price-based cost: the cell's mean input/output tokens (over all its
    records) times the model's price per million tokens. When a pool is given, pairs of the records that are
    not in the pool are never chosen (they cannot be served).
"""

from __future__ import annotations

import threading
from typing import Any, Literal

import numpy as np

from atlas_router.config import PoolConfig
from atlas_router.errors import AtlasError
from atlas_router.routers.base import Decision, Queries, Router
from atlas_router.routers.table import QueryTable
from atlas_router.routers.utility import best_pairs, utility


class ClusterRouter(Router):
    """Route each query to the best pair of its cluster under U = (1-a) Acc - a CostNorm."""

    name = "atlas-cluster"

    def __init__(
        self,
        k: int = 8,
        alpha: float = 0.5,
        seed: int = 0,
        n_init: int = 10,
        max_iter: int = 1000,
        shrinkage: float = 10.0,
        task_weight: float = 1.0,
        ood_quantile: float = 0.99,
        ood_fallback: Literal["pooled", "nearest"] = "pooled",
        new_pair: Literal["exclude", "prior"] = "exclude",
        prior_accuracy: float = 0.5,
        pool: PoolConfig | None = None,
        top: int = 3,
    ) -> None:
        super().__init__(alpha=alpha, seed=seed)
        self.k = k
        self.n_init = n_init
        self.max_iter = max_iter
        self.shrinkage = shrinkage
        self.task_weight = task_weight
        self.ood_quantile = ood_quantile
        self.ood_fallback = ood_fallback
        self.new_pair = new_pair
        self.prior_accuracy = prior_accuracy
        self.pool = pool
        self.top = top

    # -- fitting ----------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if int(self.k) < 1:
            raise AtlasError(f"k must be at least 1, got {self.k}")
        if self.shrinkage < 0:
            raise AtlasError(f"shrinkage must be >= 0, got {self.shrinkage}")
        if not 0 < self.ood_quantile <= 1:
            raise AtlasError(f"ood_quantile must lie in (0, 1], got {self.ood_quantile}")
        if self.ood_fallback not in ("pooled", "nearest"):
            raise AtlasError(f"ood_fallback must be 'pooled' or 'nearest', got {self.ood_fallback!r}")
        if self.new_pair not in ("exclude", "prior"):
            raise AtlasError(f"new_pair must be 'exclude' or 'prior', got {self.new_pair!r}")
        if not 0 <= self.prior_accuracy <= 1:
            raise AtlasError(f"prior_accuracy must lie in [0, 1], got {self.prior_accuracy}")
        if not 0 <= self.task_weight <= 1:
            raise AtlasError(f"task_weight must lie in [0, 1], got {self.task_weight}")

    def _fit(self, table: QueryTable) -> None:
        from sklearn.cluster import KMeans

        self._check_params()
        emb = self.embed_table(table).astype(np.float64)
        self.embedding_dim_ = emb.shape[1]
        n_distinct = len(np.unique(emb.round(6), axis=0))
        self.n_clusters_ = int(min(int(self.k), n_distinct))
        km = KMeans(
            n_clusters=self.n_clusters_, init="k-means++", max_iter=self.max_iter,
            algorithm="elkan" if self.n_clusters_ > 1 else "lloyd",  # elkan needs two clusters
            n_init=self.n_init, random_state=self.seed,
        ).fit(emb)
        self.centroids_ = km.cluster_centers_.astype(np.float64)
        self.centroid_sq_ = (self.centroids_**2).sum(1)
        self.labels_ = km.labels_.astype(np.int64)
        self.inertia_ = float(km.inertia_)
        dist = np.sqrt(self._sq_distances(emb)[np.arange(len(emb)), self.labels_])
        self.train_distances_ = dist.astype(np.float32)
        self.ood_threshold_ = float(np.quantile(dist, self.ood_quantile))
        self.cluster_sizes_ = np.bincount(self.labels_, minlength=self.n_clusters_)
        task_rows = self._fit_tasks(emb, table.benchmarks)
        self._fit_stats(table, task_rows)

    def _fit_tasks(self, emb: np.ndarray, benchmarks: np.ndarray) -> np.ndarray:
        """Gaussian LDA posterior over benchmarks; returns each training query's benchmark index."""
        labels = np.asarray(benchmarks, dtype=object).astype(str)
        names, counts = np.unique(labels[labels != ""], return_counts=True)
        names = names[counts >= 2]
        self.tasks_ = ["*"]
        self.task_coef_ = None
        self.task_intercept_ = None
        self.task_temperature_ = 1.0
        if self.task_weight <= 0 or len(names) < 2:
            return np.zeros(len(emb), dtype=np.int64)
        keep = np.isin(labels, names)
        x, y = emb[keep], labels[keep]
        coef, intercept = _lda_logit_params(x, y)
        self.tasks_ = [str(c) for c in names]
        self.task_temperature_ = self._calibrate_temperature(x, y, names)
        self.task_coef_ = coef / self.task_temperature_  # (D, B): posterior = softmax(emb @ coef + b)
        self.task_intercept_ = intercept / self.task_temperature_
        # queries of rare or unnamed benchmarks count through their most likely benchmark
        rows = self.task_posterior(emb).argmax(1)
        rows[keep] = np.searchsorted(names, y)
        return rows

    def _calibrate_temperature(self, x: np.ndarray, y: np.ndarray, names: np.ndarray) -> float:
        """Temperature of the LDA logits minimising out-of-fold log loss (LDA is overconfident)."""
        from scipy.optimize import minimize_scalar
        from sklearn.model_selection import StratifiedKFold

        folds = int(min(5, np.unique(y, return_counts=True)[1].min()))
        if folds < 2:
            return 1.0
        logits = np.full((len(y), len(names)), -np.inf)
        for train, held in StratifiedKFold(folds, shuffle=True, random_state=self.seed).split(x, y):
            coef, intercept = _lda_logit_params(x[train], y[train])
            cols = np.searchsorted(names, np.unique(y[train]))
            logits[np.ix_(held, cols)] = x[held] @ coef + intercept
        target = np.searchsorted(names, y)

        def nll(log_t: float) -> float:
            z = logits / np.exp(log_t)
            z = z - z.max(1, keepdims=True)
            lse = np.log(np.exp(z).sum(1))
            return float((lse - z[np.arange(len(y)), target]).mean())

        return float(np.exp(minimize_scalar(nll, bounds=(np.log(0.1), np.log(100.0)), method="bounded").x))

    def task_posterior(self, emb: np.ndarray) -> np.ndarray:
        """P(benchmark | query) per row (a single column of ones without benchmark names)."""
        if self.task_coef_ is None:
            return np.ones((len(emb), 1))
        logits = np.asarray(emb, dtype=np.float64) @ self.task_coef_ + self.task_intercept_
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)

    def _sq_distances(self, emb: np.ndarray) -> np.ndarray:
        emb = np.asarray(emb, dtype=np.float64)
        d = (emb**2).sum(1)[:, None] - 2.0 * emb @ self.centroids_.T + self.centroid_sq_[None, :]
        return np.maximum(d, 0.0)

    def _fit_stats(self, table: QueryTable, task_rows: np.ndarray) -> None:
        """Counts, accuracy and cost per (cluster, benchmark, pair), shrunk towards their parents."""
        k, n_tasks, m = self.n_clusters_, len(self.tasks_), float(self.shrinkage)
        pairs = list(table.pairs)
        pooled_acc = np.nan_to_num(self.pair_accuracy_, nan=0.0)
        pooled_cost = self.pair_cost_
        allowed = np.ones(len(pairs), dtype=bool)
        prior_pairs: list[tuple[str, str]] = []
        if self.pool is not None:
            pool_pairs = self.pool.pairs()
            allowed = np.array([p in set(pool_pairs) for p in pairs], dtype=bool)
            if self.new_pair == "prior":
                prior_pairs = [p for p in pool_pairs if p not in set(pairs)]

        def cell(rows: np.ndarray, parent_acc: np.ndarray, parent_cost: np.ndarray, w: float):
            s, co = table.scores[rows], table.costs[rows]
            n = (~np.isnan(s)).sum(0).astype(float)
            cn = (~np.isnan(co)).sum(0).astype(float)
            acc = (np.nansum(s, 0) + w * parent_acc) / np.maximum(n + w, 1e-12)
            cost = (np.nansum(co, 0) + w * parent_cost) / np.maximum(cn + w, 1e-12)
            acc = np.where(n + w > 0, acc, parent_acc)
            cost = np.where(cn + w > 0, cost, parent_cost)
            tokens = [_mean(t[rows]) for t in (table.input_tokens, table.output_tokens)]
            return n, acc, cost, np.array(tokens)

        everything = np.ones(table.n_queries, dtype=bool)
        # (benchmark, pair) -> pooled pair
        task_acc, task_cost = np.zeros((n_tasks, len(pairs))), np.zeros((n_tasks, len(pairs)))
        for b in range(n_tasks):
            _, task_acc[b], task_cost[b], _ = cell(task_rows == b, pooled_acc, pooled_cost, m)
        # rows 0..K-1: clusters, row K: everything (the pooled fallback)
        shape = (k + 1, n_tasks, len(pairs) + len(prior_pairs))
        n_all, acc, cost = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        n_c, acc_c, cost_c = (np.zeros((k + 1, shape[2])) for _ in range(3))
        tokens = np.zeros((k + 1, n_tasks, 2))
        for c in range(k + 1):
            in_c = self.labels_ == c if c < k else everything
            w = m if c < k else 0.0
            n_c[c, : len(pairs)], acc_c[c, : len(pairs)], cost_c[c, : len(pairs)], tok_c = cell(
                in_c, pooled_acc, pooled_cost, w)
            for b in range(n_tasks):
                if c == k:  # the pooled row ignores benchmarks: it is the fallback for the unfamiliar
                    n_all[c, b, : len(pairs)], acc[c, b, : len(pairs)], cost[c, b, : len(pairs)] = \
                        n_c[c, : len(pairs)], acc_c[c, : len(pairs)], cost_c[c, : len(pairs)]
                    tokens[c, b] = tok_c
                    continue
                rows = in_c & (task_rows == b)
                n_all[c, b, : len(pairs)], acc[c, b, : len(pairs)], cost[c, b, : len(pairs)], tokens[c, b] = cell(
                    rows, task_acc[b], task_cost[b], m)
                if not rows.any():
                    tokens[c, b] = tok_c
        for j, (model, _tool) in enumerate(prior_pairs, start=len(pairs)):
            price = self.pool.model(model).price
            acc[:, :, j] = self.prior_accuracy
            acc_c[:, j] = self.prior_accuracy
            cost[:, :, j] = (tokens[..., 0] * price.input + tokens[..., 1] * price.output) / 1e6
            cost_c[:, j] = cost[:, :, j].mean(1)
        never_graded = np.isnan(self.pair_accuracy_)
        self.pairs_ = pairs + prior_pairs
        self.prior_pairs_ = prior_pairs
        self.available_ = np.concatenate([allowed & ~never_graded, np.ones(len(prior_pairs), dtype=bool)])
        if not self.available_.any():
            raise AtlasError("no pair can be routed to: none of the pool's pairs has graded records")
        self.counts_, self.accuracy_, self.cost_ = n_c, acc_c, cost_c  # (K+1, P): per cluster
        self.task_counts_, self.task_accuracy_, self.task_cost_ = n_all, acc, cost  # (K+1, B, P)

    # -- routing ----------------------------------------------------------------------------------
    def utility_table(self, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """U per (row, pair) on cluster tables and per (row, benchmark, pair); row K is the pooled
        fallback. Cached per alpha."""
        cache = self.__dict__.setdefault("_tables", {})
        hit = cache.get(alpha)
        if hit is None:
            u_c = utility(self.accuracy_, self.cost_, alpha, self.cost_scale_)
            u_t = utility(self.task_accuracy_, self.task_cost_, alpha, self.cost_scale_)
            u_c[:, ~self.available_] = -np.inf
            u_t[..., ~self.available_] = -np.inf
            hit = (u_c, u_t)
            if len(cache) > 64:
                cache.clear()
            cache[alpha] = hit
        return hit

    def assign(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest cluster and the distance to its centroid, per embedding row."""
        d2 = self._sq_distances(emb)
        idx = d2.argmin(axis=1)
        return idx, np.sqrt(d2[np.arange(len(idx)), idx])

    def query_tables(self, emb: np.ndarray, alpha: float) -> dict[str, np.ndarray]:
        """Per query: cluster, distance, ood, table row, task posterior, mixed accuracy/cost/n/utility."""
        clusters, dist = self.assign(emb)
        ood = dist > self.ood_threshold_
        rows = np.where(ood & (self.ood_fallback == "pooled"), self.n_clusters_, clusters)
        post = self.task_posterior(emb)
        u_c, u_t = self.utility_table(alpha)
        w = float(self.task_weight) if self.task_coef_ is not None else 0.0

        def mix(cluster_table: np.ndarray, task_table: np.ndarray) -> np.ndarray:
            by_task = np.einsum("nb,nbp->np", post, task_table[rows])
            return by_task if w == 1.0 else (1.0 - w) * cluster_table[rows] + w * by_task

        with np.errstate(invalid="ignore"):  # -inf columns (unservable pairs) stay -inf
            u = mix(u_c, u_t)
        u[:, ~self.available_] = -np.inf
        return {"cluster": clusters, "distance": dist, "ood": ood, "row": rows, "posterior": post, "utility": u,
                "accuracy": mix(self.accuracy_, self.task_accuracy_), "cost": mix(self.cost_, self.task_cost_),
                "n": mix(self.counts_, self.task_counts_)}

    def _route(self, queries: Queries, alpha: float) -> list[Decision]:
        t = self.query_tables(self.embed(queries), alpha)
        choice = best_pairs(t["utility"], t["cost"])
        return [self._decision(i, int(j), t, alpha) for i, j in enumerate(choice)]

    def _decision(self, i: int, j: int, t: dict[str, np.ndarray], alpha: float) -> Decision:
        model, tool = self.pairs_[j]
        u, acc, cost, n = t["utility"][i], t["accuracy"][i], t["cost"][i], t["n"][i]
        ood = bool(t["ood"][i])
        pooled = int(t["row"][i]) == self.n_clusters_
        if pooled:
            fallback = "out of distribution: routed on pooled statistics"
        elif self.pairs_[j] in self.prior_pairs_:
            fallback = f"pair has no records: prior accuracy {self.prior_accuracy:g} and price-based cost"
        elif n[j] < self.shrinkage:
            fallback = f"few records (n={n[j]:.0f} < m={self.shrinkage:g}): shrunk towards broader statistics"
        else:
            fallback = None
        order = np.argsort(-u, kind="stable")[: max(int(self.top), 1)]
        top = [{"model": self.pairs_[p][0], "tool": self.pairs_[p][1], "accuracy": round(float(acc[p]), 4),
                "cost": float(cost[p]), "n": int(round(float(n[p]))), "utility": round(float(u[p]), 4)}
               for p in order if np.isfinite(u[p])]
        explanation: dict[str, Any] = {
            "router": self.name, "cluster": int(t["cluster"][i]), "distance": round(float(t["distance"][i]), 4),
            "ood": ood, "ood_threshold": round(self.ood_threshold_, 4),
            "stats": "pooled" if pooled else "cluster", "fallback": fallback, "alpha": alpha, "top": top,
        }
        if self.task_coef_ is not None:
            post = t["posterior"][i]
            explanation["benchmark"] = {self.tasks_[b]: round(float(post[b]), 3)
                                        for b in np.argsort(-post)[:3] if post[b] >= 0.01}
        return Decision(model, tool, float(u[j]), explanation)

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


def _lda_logit_params(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear discriminant logits ``x @ coef + intercept`` per class (sorted class order)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(x, y)
    coef, intercept = lda.coef_, lda.intercept_
    if len(lda.classes_) == 2:  # binary LDA keeps one discriminant: logits (0, d)
        coef = np.vstack([np.zeros_like(coef[0]), coef[0]])
        intercept = np.array([0.0, intercept[0]])
    return coef.T.astype(np.float64), np.asarray(intercept, dtype=np.float64)


def _mean(x: np.ndarray) -> float:
    """Mean of the non-NaN entries (0 when there are none)."""
    have = ~np.isnan(x)
    return float(x[have].mean()) if have.any() else 0.0
