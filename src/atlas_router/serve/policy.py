"""The RL paths of the gateway: ``atlas-rl`` (the trained multi-step policy answers) and ``atlas-hybrid``
(the cluster router where its statistics hold, the policy elsewhere; ``atlas_router.rl.hybrid`` decides).

A policy writes its turns token by token on the CPU; run in the gateway's event loop it would stall
every other request. So each policy lives on a thread of its own with its own event loop and its own
pool instance (HTTP clients belong to one loop), built from the gateway's current pool config and rebuilt
when a reload changes it. The gateway awaits episodes across threads.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atlas_router.config import PoolConfig
from atlas_router.errors import AtlasError
from atlas_router.pool.pool import Pool
from atlas_router.rl.hybrid import choose_path
from atlas_router.routers.base import Decision, Router

POLICY_META = "atlas_policy.json"


@dataclass
class PolicyResult:
    """What one policy episode gave: its final answer (None when it never answered) and what it cost."""

    answer: str | None
    cost: float
    finish: str | None
    routes: list[dict[str, Any]] = field(default_factory=list)
    format_problems: list[str] = field(default_factory=list)


class PolicyWorker:
    """A thread running one event loop where the policy's episodes run, one at a time."""

    def __init__(self, policy_dir: str | Path) -> None:
        self.policy_dir = str(policy_dir)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="atlas-policy", daemon=True)
        self._thread.start()
        self._pool: Pool | None = None
        self._lock: asyncio.Lock | None = None

    async def run(self, question: str, config: PoolConfig) -> PolicyResult:
        """One greedy episode on ``question``, routing live through a pool built from ``config``."""
        future = asyncio.run_coroutine_threadsafe(self._episode(question, config), self._loop)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise

    async def _episode(self, question: str, config: PoolConfig) -> PolicyResult:
        from atlas_router.rl.inference import answer_with_policy

        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._pool is None or self._pool.config is not config:
                if self._pool is not None:
                    await self._pool.aclose()
                self._pool = Pool(config)
            traj = await answer_with_policy(self._pool, self.policy_dir, question)
        episode = traj.episode
        return PolicyResult(episode.answer, float(episode.cost), episode.finish,
                            [o.to_dict() for o in episode.outcomes], list(traj.format_problems or []))

    def warm(self) -> None:
        """Load the policy's weights now (on the worker thread), not on the first request."""
        from atlas_router.rl.inference import cached_policy  # the cache answer_with_policy reads from

        asyncio.run_coroutine_threadsafe(asyncio.to_thread(cached_policy, self.policy_dir), self._loop).result()

    def close(self, wait_s: float = 120.0) -> None:
        """Stop the thread once the episode under way (if any) has finished, waiting at most ``wait_s``."""
        async def shutdown() -> None:
            if self._lock is not None:
                await self._lock.acquire()  # queued behind the running episode; never released: closing
            if self._pool is not None:
                await self._pool.aclose()

        if self._loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=wait_s)
            except TimeoutError:
                pass
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=10)


def check_policy_dir(policy_dir: str | Path) -> Path:
    path = Path(policy_dir).expanduser()
    if not (path / POLICY_META).is_file():
        raise AtlasError(f"{path}: not an RL policy directory (no {POLICY_META}); train one with 'atlas train-rl'")
    return path


class PolicyPath:
    """A gateway router that may answer a query with its policy instead of a pair: ``rl_reason`` says for
    which queries (given the ranker's decision), ``ranker`` ranks the pairs the gateway falls back along
    (None: the default rule)."""

    name: str = ""
    ranker: Any = None
    policy: "PolicyRouter"

    def rl_reason(self, routed: Any) -> str | None:
        """Why this query (its RouteResult) should go to the policy; None keeps it on the pair path."""
        raise NotImplementedError


class PolicyRouter(PolicyPath):
    """``atlas-rl``: every query goes to the policy. ``ranker`` is None: when the policy gives no answer
    the gateway falls back to its default pair ranking."""

    name = "atlas-rl"

    def __init__(self, policy_dir: str | Path) -> None:
        self.policy_dir = check_policy_dir(policy_dir)
        self.worker = PolicyWorker(self.policy_dir)

    @property
    def policy(self) -> "PolicyRouter":
        return self

    def rl_reason(self, routed: Any) -> str | None:
        return "atlas-rl: the policy answers every query"

    async def answer(self, question: str, config: PoolConfig) -> PolicyResult:
        return await self.worker.run(question, config)

    def warm(self) -> None:
        self.worker.warm()

    def close(self) -> None:
        self.worker.close()


class HybridPathRouter(PolicyPath):
    """``atlas-hybrid``: the cluster router ranks the pairs; queries its statistics do not cover go to
    the policy first (the rule is ``atlas_router.rl.hybrid.choose_path``)."""

    name = "atlas-hybrid"

    def __init__(self, cluster_router: Router, policy: PolicyRouter, min_support: int = 5) -> None:
        self.ranker = cluster_router
        self.policy = policy
        self.min_support = min_support

    def rl_reason(self, routed: Any) -> str | None:
        """Why the cluster router's decision (a RouteResult) should go to the policy, or None for the
        cluster path."""
        if not routed.ranking:
            return "the cluster router gave no decision"
        model, tool = routed.ranking[0]
        decision = Decision(model, tool, routed.utility or 0.0, routed.explanation)
        choice = choose_path(decision, self.min_support)
        return choice.reason if choice.path == "rl" else None

    def warm(self) -> None:
        self.policy.warm()

    def close(self) -> None:
        self.policy.close()
