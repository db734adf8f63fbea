"""The oracle: per query, the pair that actually did best on it (by utility, then cost).

An upper bound, not a router one could deploy: it is fitted on the records of the very queries it will be
asked about (an evaluation fits it on the *test* records) and routes by query text, looking their outcomes
up. At a = 0 it is "best score, then cheapest".
"""

from __future__ import annotations

import numpy as np

from atlas_router.errors import AtlasError
from atlas_router.routers.base import Decision, Queries, Router
from atlas_router.routers.table import QueryTable
from atlas_router.routers.utility import best_pairs, utility


class OracleRouter(Router):
    name = "oracle"
    uses_encoder = False
    needs_text = True

    def _fit(self, table: QueryTable) -> None:
        self.table_ = table
        self.row_of_ = {q: i for i, q in enumerate(table.queries)}
        self.cost_fill_ = np.nan_to_num(table.pooled_cost(), nan=0.0)

    def _route(self, queries: Queries, alpha: float) -> list[Decision]:
        t = self.table_
        rows = []
        for q in queries:
            if q not in self.row_of_:
                raise AtlasError(f"the oracle has no records for query {q[:60]!r} (fit it on the records of the "
                                 "queries it is asked about)")
            rows.append(self.row_of_[q])
        idx = np.asarray(rows)
        scores, costs = t.scores[idx], np.where(np.isnan(t.costs[idx]), self.cost_fill_, t.costs[idx])
        u = utility(scores, costs, alpha, self.cost_scale_)
        choice = best_pairs(u, costs)
        return [
            Decision(*t.pairs[j], float(u[i, j]), {"router": self.name, "score": float(scores[i, j]),
                                                  "cost": float(costs[i, j])})
            for i, j in enumerate(choice)
        ]
