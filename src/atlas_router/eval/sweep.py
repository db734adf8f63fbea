"""Sensitivity of cluster routing to K and to the encoder (the ATLAS paper's Tables 12 and 13).

For every (encoder, K): fit the ClusterRouter on the train split, replay the held-out split at the
router's alpha (accuracy, cost, utility ``(1 - a) Acc - a Cost / cost_scale``), and measure the
clustering of the training queries: silhouette (higher is better; on a seeded sample of at most
``silhouette_sample`` points, since it is quadratic) and Davies-Bouldin (lower is better), both from
scikit-learn, in the space the router clusters in. Each encoder embeds every query once; all K
reuse those embeddings.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from atlas_router.errors import AtlasError
from atlas_router.eval.replay import Embedded, ReplayTable, evaluate_router
from atlas_router.eval.split import split_records
from atlas_router.routers.encoders import Encoder, build_encoder
from atlas_router.routers.table import query_table


class MemoEncoder(Encoder):
    """An encoder that remembers every embedding it made (same name and spec as the one it wraps)."""

    def __init__(self, inner: Encoder) -> None:
        super().__init__(None)
        self.inner = inner
        self.name = inner.name
        self.spec = inner.spec
        self._memo: dict[str, np.ndarray] = {}

    @property
    def dim(self) -> int:
        return self.inner.dim

    def _encode_batch(self, texts: list[str]) -> np.ndarray:  # not used: encode is overridden
        return self.inner.encode(texts)

    def encode(self, texts: list[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if missing:
            self._memo.update(zip(missing, self.inner.encode(missing)))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i] = self._memo[t]
        return out


def parse_ks(spec: str) -> list[int]:
    """``4,8,16`` -> [4, 8, 16]; each K >= 1."""
    try:
        ks = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise AtlasError(f"--k expects whole numbers separated by commas, got {spec!r}") from None
    if not ks or min(ks) < 1:
        raise AtlasError(f"--k expects numbers >= 1, got {spec!r}")
    return list(dict.fromkeys(ks))


def cluster_quality(z: np.ndarray, labels: np.ndarray, seed: int = 0, sample: int = 3000) -> dict[str, float | None]:
    """Silhouette and Davies-Bouldin of a clustering (None when it has fewer than two clusters)."""
    from sklearn.metrics import davies_bouldin_score, silhouette_score

    n_labels = len(np.unique(labels))
    if n_labels < 2 or n_labels >= len(labels):
        return {"silhouette": None, "davies_bouldin": None}
    size = min(int(sample), len(labels))
    sil = silhouette_score(z, labels, sample_size=size if size < len(labels) else None, random_state=seed)
    return {"silhouette": float(sil), "davies_bouldin": float(davies_bouldin_score(z, labels))}


def sweep(records: pd.DataFrame, ks: list[int], encoders: list[Encoder | str | None] | None = None, *,
          test_size: float = 0.3, seed: int = 0, alpha: float = 0.5,
          router_params: dict[str, Any] | None = None, silhouette_sample: int = 3000) -> dict[str, Any]:
    """One row per (encoder, K) with held-out accuracy/cost/utility and cluster quality; plus what it ran on."""
    from atlas_router.routers.cluster import ClusterRouter

    train, test = split_records(records, test_size, seed)
    replay = ReplayTable(test)
    train_queries = query_table(train).queries
    rows: list[dict[str, Any]] = []
    routers: dict[str, Any] = {}
    used: dict[str, Encoder] = {}
    for spec in encoders or [None]:
        enc = MemoEncoder(spec if isinstance(spec, Encoder) else build_encoder(spec))
        used[enc.name] = enc
        t0 = time.perf_counter()
        train_emb = enc.encode(train_queries)
        test_emb = Embedded(enc.name, enc.encode(replay.queries))
        embed_s = time.perf_counter() - t0
        for k in ks:
            t1 = time.perf_counter()
            router = ClusterRouter(k=k, alpha=alpha, seed=seed, **(router_params or {})).fit(train, enc)
            fit_s = time.perf_counter() - t1
            result = evaluate_router("atlas-cluster", router, replay, test_emb, alpha=alpha)
            o = result.overall
            space = router.transform(train_emb) if hasattr(router, "transform") else train_emb
            rows.append({
                "encoder": enc.name, "k": k, "n_clusters": int(router.n_clusters_),
                "accuracy": o.accuracy, "cost": o.cost, "calls": o.calls,
                "utility": (1 - alpha) * o.accuracy - alpha * o.cost / router.cost_scale_,
                **cluster_quality(space, router.labels_, seed, silhouette_sample),
                "inertia": float(getattr(router, "inertia_", float("nan"))),
                "fit_s": round(fit_s, 2), "embed_s": round(embed_s, 2),
            })
            routers[f"{enc.name}/k={k}"] = router
    return {"alpha": alpha, "test_queries": replay.table.n_queries, "rows": rows, "routers": routers,
            "encoders": used, "data": {"all": records, "train": train, "test": test}}
