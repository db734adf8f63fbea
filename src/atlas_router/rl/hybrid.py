"""ATLAS's dual path: the cluster router where its priors hold, the RL policy where they do not.

A query goes the cluster way when the cluster router's decision says it is in distribution
(``explanation["ood"]`` false), was routed on its own cluster's statistics (not the pooled fallback),
and the chosen pair has at least ``min_support`` records in that cluster. Anything else — an unfamiliar
query, a thin cluster, a pair known only from priors — goes to the multi-step policy, which explores.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from atlas_router.routers.base import Decision


@dataclass(frozen=True)
class PathChoice:
    """Which path a query takes and why."""

    path: str  # "cluster" or "rl"
    reason: str
    support: int


def choose_path(decision: Decision, min_support: int = 5) -> PathChoice:
    """Read a cluster decision's explanation and pick the path."""
    exp = decision.explanation or {}
    support = 0
    for entry in exp.get("top", []):
        if (entry.get("model"), entry.get("tool")) == decision.pair:
            support = int(entry.get("n", 0))
            break
    if exp.get("ood"):
        return PathChoice("rl", f"out of distribution (distance {exp.get('distance')} > {exp.get('ood_threshold')})", support)
    if exp.get("stats") == "pooled":
        return PathChoice("rl", "routed on pooled statistics, not a cluster of its own", support)
    if support < min_support:
        return PathChoice("rl", f"cluster poorly supported: {support} record(s) of the chosen pair < {min_support}", support)
    return PathChoice("cluster", f"in distribution, cluster {exp.get('cluster')} with {support} records of the pair", support)


@dataclass
class HybridAnswer:
    """What the hybrid router did for one query."""

    question: str
    path: str
    reason: str
    answer: str | None
    cost: float
    decision: dict[str, Any]
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class HybridRouter:
    """A fitted cluster router plus a trained policy, over one pool."""

    def __init__(self, cluster_router: Any, pool: Any, policy_dir: str | os.PathLike[str], *, min_support: int = 5) -> None:
        self.cluster_router = cluster_router
        self.pool = pool
        self.policy_dir = policy_dir
        self.min_support = min_support

    def decide(self, question: str) -> tuple[Decision, PathChoice]:
        (decision,) = self.cluster_router.route([question])
        return decision, choose_path(decision, self.min_support)

    async def answer(self, question: str) -> HybridAnswer:
        decision, choice = self.decide(question)
        if choice.path == "cluster":
            from atlas_router.execution.runner import run_pair

            record = await run_pair(self.pool, decision.model, decision.tool, question)
            return HybridAnswer(question, "cluster", choice.reason, record.answer if not record.error else None,
                                record.cost, decision.to_dict(), record.to_dict())
        from atlas_router.rl.inference import answer_with_policy

        traj = await answer_with_policy(self.pool, self.policy_dir, question)
        return HybridAnswer(question, "rl", choice.reason, traj.episode.answer, traj.episode.cost,
                            decision.to_dict(), traj.to_dict())
