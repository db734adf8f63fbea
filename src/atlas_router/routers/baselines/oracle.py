"""The oracle: per test query, the pair that actually did best on it (by utility, then cost).

An upper bound, not a router: it reads the *test* records. Fit it on train as usual, then give it
the records of the queries it will be asked about with ``attach(records)``; it routes by query text.
At a = 0 it is "best score, then cheapest".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from atlas_router.errors import AtlasError
from atlas_router.routers.base import Decision, Queries, Router
from atlas_router.routers.table import QueryTable, query_table
from atlas_router.routers.utility import best_pairs, utility


class OracleRouter(Router):
    name = "oracle"
    uses_encoder = False
    needs_text = True

    def _fit(self, table: QueryTable) -> None:
        self.attached_ = None

    def attach(self, records: pd.DataFrame) -> "OracleRouter":
        """The records the oracle looks answers up in (the evaluation's test records)."""
        self.attached_ = query_table(records)
        self.row_of_ = {q: i for i, q in enumerate(self.attached_.queries)}
        self.cost_fill_ = np.nan_to_num(self.attached_.pooled_cost(), nan=0.0)
        return self

    def _route(self, queries: Queries, alpha: float) -> list[Decision]:
        if self.attached_ is None:
            raise AtlasError("the oracle needs the test records: call attach(records) before route()")
        t = self.attached_
        rows = []
        for q in queries:
            if q not in self.row_of_:
                raise AtlasError(f"the oracle has no records for query {q[:60]!r}")
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
