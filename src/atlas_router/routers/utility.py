"""The accuracy-cost utility every router shares: U = (1 - a) * Acc - a * CostNorm.

``a`` (alpha) in [0, 1] trades accuracy for cost: a = 0 is "most accurate", a = 1 "cheapest".
CostNorm is a pair's mean cost divided by ``cost_scale``: the largest pooled mean cost of any pair on
the training records, so a pair's average cost maps into [0, 1] and both terms share one scale.
(A cluster's cell may slightly exceed 1 when its queries are longer than average; that is intended:
they do cost more.) Ties in utility go to the cheaper pair.
"""

from __future__ import annotations

import numpy as np

from atlas_router.errors import AtlasError


def check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not 0.0 <= a <= 1.0:  # NaN fails the comparison too
        raise AtlasError(f"alpha must lie in [0, 1], got {alpha}")
    return a


def cost_scale(pooled_cost: np.ndarray) -> float:
    """Normaliser of costs: the largest pooled mean pair cost (1.0 when every pair is free)."""
    finite = pooled_cost[np.isfinite(pooled_cost)]
    top = float(finite.max()) if finite.size else 0.0
    return top if top > 0 else 1.0


def utility(acc: np.ndarray, cost: np.ndarray, alpha: float, scale: float) -> np.ndarray:
    """U = (1 - a) * acc - a * cost / scale, elementwise (NaN accuracy -> -inf: never chosen)."""
    u = (1.0 - alpha) * acc - alpha * (cost / scale)
    return np.where(np.isnan(u), -np.inf, u)


def best_pairs(u: np.ndarray, cost: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """Row-wise argmax of utility; among (near-)ties the cheapest pair. ``cost`` broadcasts to ``u``."""
    u = np.atleast_2d(u)
    return np.where(u >= u.max(axis=1, keepdims=True) - tol, cost, np.inf).argmin(axis=1)
