"""A multi-layer perceptron on query embeddings predicting each pair's success (scikit-learn).

One multi-label ``MLPClassifier``: output j is the probability that pair j answers the query
(score >= 0.5). Queries with no record for a pair take that pair's pooled success as label, so
every output trains on every query.

Settings from LLMRouter's shipped ``configs/model_config_train/mlprouter.yaml``: hidden layers
(128, 64), ReLU, Adam with learning rate 1e-3, 100 epochs, batch size 32, L2 penalty 1e-4.
"""

from __future__ import annotations

import warnings

import numpy as np

from atlas_router.routers.base import Queries
from atlas_router.routers.baselines.common import ScoreRouter, fill_missing
from atlas_router.routers.table import QueryTable


class MLPRouter(ScoreRouter):
    name = "mlp"

    def __init__(self, hidden: tuple[int, ...] = (128, 64), alpha: float = 0.5, seed: int = 0,
                 max_iter: int = 100, l2: float = 1e-4, batch_size: int = 32, lr: float = 1e-3) -> None:
        super().__init__(alpha=alpha, seed=seed)
        self.hidden = tuple(hidden)
        self.max_iter = max_iter
        self.l2 = l2
        self.batch_size = batch_size
        self.lr = lr

    def _fit(self, table: QueryTable) -> None:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        emb = self.embed_table(table)
        self.embedding_dim_ = emb.shape[1]
        pooled = (np.nan_to_num(self.pair_accuracy_, nan=0.0) >= 0.5).astype(float)
        labels = fill_missing((table.scores >= 0.5).astype(float) * np.where(np.isnan(table.scores), np.nan, 1.0),
                              pooled).astype(int)
        self.constant_ = None
        varying = labels.min(0) != labels.max(0)
        self.varying_ = varying
        self.constant_ = labels[0].astype(float)
        if not varying.any():
            self.model_ = None
            return
        model = MLPClassifier(hidden_layer_sizes=self.hidden, activation="relu", alpha=self.l2,
                              max_iter=self.max_iter, batch_size=min(int(self.batch_size), len(emb)),
                              learning_rate_init=self.lr, random_state=self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            y = labels[:, varying]
            self.model_ = model.fit(emb, y if y.shape[1] > 1 else y.ravel())

    def predict_accuracy(self, queries: Queries) -> np.ndarray:
        emb = self.embed(queries)
        out = np.tile(self.constant_, (len(emb), 1))
        if self.model_ is not None:
            proba = self.model_.predict_proba(emb)
            out[:, self.varying_] = proba if self.varying_.sum() > 1 else proba[:, 1:2]
        return out
