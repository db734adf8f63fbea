"""Reference points without learning: a seeded random pair and the single best pair."""

from __future__ import annotations

import hashlib

import numpy as np

from atlas_router.routers.base import Decision, Queries, Router
from atlas_router.routers.table import QueryTable
from atlas_router.routers.utility import best_pairs, utility


class RandomRouter(Router):
    """A uniformly random pair per query. The draw hashes (seed, query) so it is reproducible and
    independent of batch order; the lower bound any learned router must beat."""

    name = "random"
    uses_encoder = False

    def _fit(self, table: QueryTable) -> None:
        self.candidates_ = np.flatnonzero(~np.isnan(self.pair_accuracy_))

    def _route(self, queries: Queries, alpha: float) -> list[Decision]:
        out = []
        for q in queries:
            blob = q.tobytes() if isinstance(q, np.ndarray) else str(q).encode("utf-8", "surrogatepass")
            h = int.from_bytes(hashlib.sha256(str(self.seed).encode() + b"\x1f" + blob).digest()[:8], "big")
            j = int(self.candidates_[h % len(self.candidates_)])
            u = utility(self.pair_accuracy_[j], self.pair_cost_[j], alpha, self.cost_scale_)
            out.append(Decision(*self.pairs_[j], float(u), {"router": self.name, "seed": self.seed}))
        return out


class BestSingleRouter(Router):
    """Always the pair with the best mean score on the training records (ties: the cheaper one).

    It ignores alpha on purpose: it is the fixed "best model" reference the routed frontier is
    compared with.
    """

    name = "best-single"
    uses_encoder = False

    def _fit(self, table: QueryTable) -> None:
        acc = np.where(np.isnan(self.pair_accuracy_), -np.inf, self.pair_accuracy_)
        self.best_ = int(best_pairs(acc[None, :], self.pair_cost_)[0])

    def _route(self, queries: Queries, alpha: float) -> list[Decision]:
        j = self.best_
        u = float(utility(self.pair_accuracy_[j], self.pair_cost_[j], alpha, self.cost_scale_))
        expl = {"router": self.name, "accuracy": float(self.pair_accuracy_[j]), "cost": float(self.pair_cost_[j])}
        return [Decision(*self.pairs_[j], u, dict(expl)) for _ in range(len(queries))]
