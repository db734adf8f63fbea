"""Records as an environment: replayed routes, the optimal pair per query, and the training tasks.

Why replay: PPO needs thousands of routes; the records table already holds the outcome of every
(query, model, tool) triple, so training runs without a single live call. Replay stands in for a pair
honestly: a route to (model, tool) is answered with that pair's recorded answer to the episode's
question (and its recorded cost) whatever input the policy wrote, because the record is what that pair
did with the question. The policy is therefore rewarded for choosing pairs, never for how it phrased the
call; live mode (``LiveExecutor``) runs the real pair on the real input. A pair without a record of the
question goes to the fallback executor (live), or comes back as an error when there is none.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from atlas_router.errors import AtlasError
from atlas_router.rl.env import RouteExecutor, RouteOutcome
from atlas_router.rl.protocol import Route

_SPACES = re.compile(r"\s+")


def question_key(text: str) -> str:
    """Questions match when they differ only in case and whitespace."""
    return _SPACES.sub(" ", text).strip().casefold()


@dataclass(frozen=True)
class Task:
    """One training or evaluation query with what its grader needs."""

    question: str
    benchmark: str = ""
    reference: str = ""
    query_id: str = ""
    domain: str = ""
    split: str = ""

    def example(self) -> dict[str, Any]:
        """The row a benchmark grader receives."""
        return {"query": self.question, "reference": self.reference, "benchmark": self.benchmark,
                "query_id": self.query_id, "domain": self.domain}


def _num(value: Any, default: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return default
    return default if math.isnan(v) else v


class ReplayTable:
    """Records indexed by (question, model, tool), with the optimal pairs of every question."""

    def __init__(self, records: pd.DataFrame) -> None:
        needed = {"query", "model", "tool", "score"}
        missing = needed - set(records.columns)
        if missing:
            raise AtlasError(f"records lack column(s) {', '.join(sorted(missing))} needed for RL replay")
        self._rows: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._tasks: dict[str, Task] = {}
        for row in records.to_dict("records"):
            key = question_key(str(row["query"]))
            self._rows.setdefault((key, str(row["model"]), str(row.get("tool") or "none")), row)
            if key not in self._tasks:
                self._tasks[key] = Task(
                    question=str(row["query"]), benchmark=str(row.get("benchmark") or ""),
                    reference=str(row.get("reference") or ""), query_id=str(row.get("query_id") or ""),
                    domain=str(row.get("domain") or ""), split=str(row.get("split") or ""),
                )
        self._optimal: dict[str, frozenset[tuple[str, str]]] = {}
        by_question: dict[str, list[dict[str, Any]]] = {}
        for (key, _, _), row in self._rows.items():
            by_question.setdefault(key, []).append(row)
        for key, rows in by_question.items():
            ok = [r for r in rows if not r.get("error") and not math.isnan(_num(r.get("score"), math.nan))]
            if not ok:
                continue
            best = max(_num(r["score"], 0.0) for r in ok)
            top = [r for r in ok if _num(r["score"], 0.0) >= best - 1e-9]
            cheapest = min(_num(r.get("cost"), math.inf) for r in top)
            self._optimal[key] = frozenset(
                (str(r["model"]), str(r.get("tool") or "none")) for r in top
                if _num(r.get("cost"), math.inf) <= cheapest + 1e-12
            )

    def __len__(self) -> int:
        return len(self._rows)

    def lookup(self, question: str, model: str, tool: str) -> dict[str, Any] | None:
        return self._rows.get((question_key(question), model, tool))

    def optimal_pairs(self, question: str) -> frozenset[tuple[str, str]] | None:
        """Best score, then lowest cost (ties all count); None when the question has no graded record."""
        return self._optimal.get(question_key(question))

    def tasks(self, splits: Iterable[str] | None = None) -> list[Task]:
        """The distinct questions, optionally only those of the given splits, in record order."""
        wanted = set(splits) if splits is not None else None
        return [t for t in self._tasks.values() if wanted is None or t.split in wanted]


class ReplayExecutor(RouteExecutor):
    """Answers a route to (model, tool) with that pair's record of the episode's question.

    The route's input is ignored on purpose (see the module docstring): replay measures the choice of
    pair, and a record cannot say what the pair would have done with other text.
    """

    def __init__(self, table: ReplayTable, fallback: RouteExecutor | None = None) -> None:
        self.table = table
        self.fallback = fallback

    async def execute(self, route: Route, question: str) -> RouteOutcome:
        row = self.table.lookup(question, route.model, route.tool)
        if row is not None:
            return RouteOutcome(
                raw=str(route), route=route, text=str(row.get("response") or ""),
                answer=str(row.get("answer") or ""), cost=_num(row.get("cost"), 0.0),
                error=str(row["error"]) if row.get("error") else None, source="replay",
            )
        if self.fallback is not None:
            return await self.fallback.execute(route, question)
        return RouteOutcome(raw=str(route), route=route, source="replay",
                            error=f"no record of {route.model}@@{route.tool} on this question")
