"""A pair's measured latency in the gateway's decision: a per-request latency budget.

Why here and not in the fitted utility: latency depends on the serving host and its load, not on the
records a router was fitted on, so the gateway measures it where it is paid. ``LatencyBook`` keeps, per
pair, an exponentially weighted mean of the seconds its successful attempts took (to the whole answer,
or to the first token of a stream); weight 0.2 (the last ~5 answers dominate). A request with
``atlas.max_latency_s`` (or ``x-atlas-max-latency-s``) drops the pairs whose measured mean is over it;
pairs never measured stay (nothing says they are slow). The explanation's ``latency`` object says the
budget, each candidate's measured seconds and which pairs the budget dropped.
"""

from __future__ import annotations

import threading
from typing import Any

Pair = tuple[str, str]


class LatencyBook:
    """Exponentially weighted mean latency per pair (thread-safe)."""

    def __init__(self, weight: float = 0.2) -> None:
        self.weight = float(weight)
        self._mean: dict[Pair, float] = {}
        self._lock = threading.Lock()

    def observe(self, pair: Pair, seconds: float) -> None:
        with self._lock:
            old = self._mean.get(pair)
            self._mean[pair] = float(seconds) if old is None else old + self.weight * (float(seconds) - old)

    def get(self, pair: Pair) -> float | None:
        return self._mean.get(pair)


def within_budget(ranking: list[Pair], book: LatencyBook, budget_s: float) -> tuple[list[Pair], dict[str, Any]]:
    """(the pairs of ``ranking`` whose measured latency fits ``budget_s``, in order; the explanation)."""
    measured = {p: book.get(p) for p in ranking}
    kept = [p for p in ranking if measured[p] is None or measured[p] <= budget_s]
    note = {"max_latency_s": budget_s,
            "measured_s": {f"{m}@@{t}": round(s, 4) for (m, t), s in measured.items() if s is not None},
            "over_budget": [f"{m}@@{t}" for (m, t) in ranking if (m, t) not in kept]}
    return kept, note
