"""k nearest training queries by embedding (cosine); each pair's accuracy is its mean score among them.

The neighbours' mean score per pair is the predicted accuracy fed to the shared a-utility (a pair
no neighbour has a record for gets its pooled accuracy). Search is one matrix product over the
stored, unit-length training embeddings. k = 5 neighbours, cosine, uniform weights: the settings of
LLMRouter's KNN router (docs/routing.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from atlas_router.errors import AtlasError
from atlas_router.routers.base import Queries
from atlas_router.routers.baselines.common import ScoreRouter
from atlas_router.routers.table import QueryTable


class KNNRouter(ScoreRouter):
    name = "knn"

    def __init__(self, k: int = 5, alpha: float = 0.5, seed: int = 0) -> None:
        super().__init__(alpha=alpha, seed=seed)
        self.k = k

    def _fit(self, table: QueryTable) -> None:
        if int(self.k) < 1:
            raise AtlasError(f"k must be at least 1, got {self.k}")
        self.embeddings_ = self.embed_table(table)
        self.embedding_dim_ = self.embeddings_.shape[1]
        self.scores_ = table.scores.astype(np.float32)

    def predict_accuracy(self, queries: Queries) -> np.ndarray:
        emb = self.embed(queries)
        k = min(int(self.k), len(self.embeddings_))
        sim = emb @ self.embeddings_.T
        nn = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        neigh = self.scores_[nn]  # (n, k, P)
        have = ~np.isnan(neigh)
        total = np.where(have, neigh, 0.0).sum(1)
        count = have.sum(1)
        pooled = np.nan_to_num(self.pair_accuracy_, nan=0.0)[None, :]
        return np.where(count > 0, total / np.maximum(count, 1), pooled)

    def explain_extra(self, i: int) -> dict[str, Any]:
        return {"k": int(self.k)}
