"""Shared routing step of baselines that predict a score per pair: the same a-utility as every router."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from atlas_router.routers.base import Decision, Queries, Router
from atlas_router.routers.utility import best_pairs, utility


class ScoreRouter(Router):
    """Predict each pair's accuracy for a query, then pick argmax of U = (1-a) Acc - a Cost/scale.

    Cost per pair is its pooled mean cost on the training records (what the router can know
    before the call); ties go to the cheaper pair.
    """

    estimates_accuracy = True

    top: int = 3

    @abstractmethod
    def predict_accuracy(self, queries: Queries) -> np.ndarray:
        """(n_queries, n_pairs) predicted success in [0, 1]."""

    def _route(self, queries: Queries, alpha: float) -> list[Decision]:
        return self.decide(self.predict_accuracy(queries), alpha)

    def decide(self, predicted: np.ndarray, alpha: float) -> list[Decision]:
        """Decisions from predicted accuracies (lets a sweep over alpha predict only once)."""
        acc = np.clip(np.asarray(predicted, dtype=np.float64), 0.0, 1.0)
        u = utility(acc, self.pair_cost_[None, :], alpha, self.cost_scale_)
        u[:, np.isnan(self.pair_accuracy_)] = -np.inf  # pairs never graded in training
        choice = best_pairs(u, self.pair_cost_)
        order = np.argsort(-u, axis=1, kind="stable")[:, : self.top]
        out = []
        for i, j in enumerate(choice):
            model, tool = self.pairs_[j]
            top = [
                {"model": self.pairs_[t][0], "tool": self.pairs_[t][1], "accuracy": round(float(acc[i, t]), 4),
                 "cost": float(self.pair_cost_[t]), "utility": round(float(u[i, t]), 4)}
                for t in order[i]
            ]
            expl: dict[str, Any] = {"router": self.name, "alpha": alpha, "top": top, **self.explain_extra(i)}
            out.append(Decision(model, tool, float(u[i, j]), expl, [self.pairs_[t] for t in order[i]]))
        return out

    def explain_extra(self, i: int) -> dict[str, Any]:
        """Router-specific explanation fields for query ``i`` of the last batch."""
        return {}


def fill_missing(scores: np.ndarray, pooled: np.ndarray) -> np.ndarray:
    """Scores with missing cells (no record for that pair) set to the pair's pooled mean."""
    pooled = np.nan_to_num(pooled, nan=0.0)
    return np.where(np.isnan(scores), pooled[None, :], scores)
