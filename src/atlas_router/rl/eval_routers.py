"""The RL policy and the hybrid (cluster + policy) as routers of ``atlas eval`` (``rl``, ``hybrid``).

Replay evaluation scores every router the same way: each test query's decision is one (model, tool)
pair, read back from the test records. The policy's decision is the first pair it routes to (greedy,
one route, the prompt generated from the pool), so ``rl`` and ``hybrid`` sit in the same table as
every other router; the policy's own answers and multi-route episodes are measured by
``atlas train-rl``'s report. The policy is trained beforehand (``atlas train-rl``; ``--policy DIR``):
``fit`` only learns the pool's pairs from the train records, and for ``hybrid`` fits its cluster router.
A policy answer that names no pair of the records falls back to the best pooled pair (said in the
explanation). The policy ignores ``alpha`` (its cost preference was set by its reward).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from atlas_router.errors import AtlasError
from atlas_router.routers.base import Decision, Queries, Router, make_router
from atlas_router.routers.table import QueryTable

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from synchronous code, also when the caller is inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()


class _DecisionOnly:
    """Route executor of a routing decision: nothing runs, the episode only has to name its pair."""

    async def execute(self, route: Any, question: str) -> Any:
        from atlas_router.rl.env import RouteOutcome

        return RouteOutcome(raw=str(route), route=route, error="not executed (routing decision only)", source="replay")


class PolicyRouter(Router):
    """``rl``: the trained policy's first routed pair."""

    name = "rl"
    needs_text = True
    uses_encoder = False

    def __init__(self, policy: str | None = None, alpha: float = 0.5, seed: int = 0, batch_size: int = 32) -> None:
        super().__init__(alpha=alpha, seed=seed)
        self.policy = policy
        self.batch_size = batch_size

    def _fit(self, table: QueryTable) -> None:
        if not self.policy:
            raise AtlasError(f"router '{self.name}' needs --policy DIR (a policy written by 'atlas train-rl')")
        from atlas_router.rl.inference import cached_policy

        cached_policy(self.policy)  # a bad directory fails at fit time, in one line

    def _pool_view(self, meta: dict[str, Any]) -> Any:
        from atlas_router.config import load_pool_config
        from atlas_router.rl.protocol import Entry, PoolView

        source = meta.get("pool")
        if source and Path(str(source)).is_file():
            view = PoolView.from_config(load_pool_config(str(source)))
            pairs = set(view.pairs())
            if all(p in pairs for p in self.pairs_):
                return view
        models = list(dict.fromkeys(m for m, _ in self.pairs_))
        tools = list(dict.fromkeys(t for _, t in self.pairs_))
        return PoolView(tuple(Entry(m) for m in models), tuple(Entry(t) for t in tools))

    def _route(self, queries: Queries, alpha: float) -> list[Decision]:
        from atlas_router.rl.env import RoutingEnv
        from atlas_router.rl.inference import cached_policy
        from atlas_router.rl.replay import Task
        from atlas_router.rl.rollout import SamplingConfig, rollout

        tokenizer, actor, meta = cached_policy(self.policy or "")
        env = RoutingEnv(self._pool_view(meta), _DecisionOnly(), max_routes=1, tokenizer=tokenizer)  # type: ignore[arg-type]
        sampling = SamplingConfig(temperature=0.0, max_turn_tokens=int(meta.get("max_turn_tokens", 256)),
                                  max_response_tokens=int(meta.get("max_response_tokens", 1024)))
        tasks = [Task(question=str(q)) for q in queries]

        async def go() -> list[Any]:
            out = []
            for i in range(0, len(tasks), self.batch_size):
                out += await rollout(actor, tokenizer, env, tasks[i : i + self.batch_size], sampling)
            return out

        trajs = _run(go())
        fallback = self.pairs_[int(np.argmax(self.pair_accuracy_))]
        known = set(self.pairs_)
        decisions = []
        for tr in trajs:
            routes = [o.route for o in tr.episode.outcomes if o.route is not None]
            pair = (routes[0].model, routes[0].tool) if routes else None
            if pair in known:
                decisions.append(Decision(pair[0], pair[1], float("nan"), {"path": "rl", "policy_route": True}))
            else:
                why = f"the policy routed to {pair[0]}@@{pair[1]}, not a pair of the records" if pair else "the policy did not route"
                decisions.append(Decision(fallback[0], fallback[1], float("nan"),
                                          {"path": "rl", "policy_route": False, "fallback": why}))
        return decisions


class HybridPolicyRouter(Router):
    """``hybrid``: the cluster router where its priors hold, the policy elsewhere (``rl.hybrid.choose_path``)."""

    name = "hybrid"
    needs_text = True
    uses_encoder = True

    def __init__(self, policy: str | None = None, alpha: float = 0.5, seed: int = 0, k: int | None = None,
                 min_support: int = 5) -> None:
        super().__init__(alpha=alpha, seed=seed)
        self.policy = policy
        self.k = k
        self.min_support = min_support

    def _fit(self, table: QueryTable) -> None:
        params: dict[str, Any] = {"alpha": self.alpha, "seed": self.seed}
        if self.k is not None:
            params["k"] = self.k
        self.cluster_ = make_router("atlas-cluster", **params)
        self.cluster_.fit(self._records, self._encoder)
        self.rl_ = PolicyRouter(self.policy, alpha=self.alpha, seed=self.seed)
        self.rl_.fit(self._records)

    def fit(self, records: Any, encoder: Any = None) -> "HybridPolicyRouter":
        self._records = records
        return super().fit(records, encoder)  # type: ignore[return-value]

    def _route(self, queries: Queries, alpha: float) -> list[Decision]:
        from atlas_router.rl.hybrid import choose_path

        texts = [str(q) for q in queries]
        decisions = self.cluster_.route(texts, alpha=alpha)
        choices = [choose_path(d, self.min_support) for d in decisions]
        to_rl = [i for i, c in enumerate(choices) if c.path == "rl"]
        rl = self.rl_.route([texts[i] for i in to_rl], alpha=alpha) if to_rl else []
        out = list(decisions)
        for i, d in zip(to_rl, rl):
            out[i] = d
        for i, c in enumerate(choices):
            out[i].explanation = {**(out[i].explanation or {}), "path": c.path, "path_reason": c.reason}
        return out
