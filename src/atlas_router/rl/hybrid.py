"""ATLAS's dual path: the cluster router where its priors hold, the RL policy where they do not.

A query goes the cluster way when the cluster router's decision says it is in distribution
(``explanation["ood"]`` false), was routed on its own cluster's statistics (not the pooled fallback),
and the chosen pair has at least ``min_support`` records in that cluster. Anything else — an unfamiliar
query, a thin cluster, a pair known only from priors — goes to the multi-step policy, which explores.

This is the rule only. The gateway's ``atlas-hybrid`` (``serve.policy.HybridPathRouter``) answers by it,
and ``atlas eval``'s ``hybrid`` (``rl.eval_routers.HybridPolicyRouter``) scores it by replay.
"""

from __future__ import annotations

from dataclasses import dataclass

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
