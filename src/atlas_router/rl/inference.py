"""Answer one question with a trained routing policy, routing live through the pool.

The system prompt is generated from the pool passed in, not the one the policy was trained with, so a
grown pool is used without retraining.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from atlas_router.rl.env import DEFAULT_MAX_ROUTES, DEFAULT_OBS_TOKEN_CAP, LiveExecutor, RoutingEnv
from atlas_router.rl.policies import load_policy
from atlas_router.rl.protocol import PoolView
from atlas_router.rl.replay import Task
from atlas_router.rl.rewards import format_problems
from atlas_router.rl.rollout import SamplingConfig, Trajectory, rollout

_LOADED: dict[str, tuple[Any, Any, dict[str, Any]]] = {}
_LOCK = threading.Lock()


def cached_policy(policy_dir: str | os.PathLike[str]) -> tuple[Any, Any, dict[str, Any]]:
    """(tokenizer, actor, meta) of a saved policy, loaded once per process (the gateway, eval and ask share it)."""
    key = str(Path(policy_dir).expanduser().resolve())
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = load_policy(key)
        return _LOADED[key]


async def answer_with_policy(pool: Any, policy_dir: str | os.PathLike[str], question: str, *,
                             max_routes: int | None = None, max_turn_tokens: int | None = None,
                             max_response_tokens: int | None = None) -> Trajectory:
    """Run the policy in ``policy_dir`` on ``question``; routes run live on ``pool`` (a ``Pool``).

    Greedy decoding. The returned trajectory carries the transcript, each route's result and cost,
    the final answer (``trajectory.episode.answer``, None when the policy never answered) and, in
    ``trajectory.format_problems``, every way it broke the protocol.
    """
    tokenizer, actor, meta = cached_policy(policy_dir)
    env = RoutingEnv(PoolView.from_config(pool.config), LiveExecutor(pool),
                     max_routes=max_routes or int(meta.get("max_routes", DEFAULT_MAX_ROUTES)),
                     obs_token_cap=int(meta.get("obs_token_cap", DEFAULT_OBS_TOKEN_CAP)), tokenizer=tokenizer)
    sampling = SamplingConfig(
        temperature=0.0,
        max_turn_tokens=max_turn_tokens or int(meta.get("max_turn_tokens", 256)),
        max_response_tokens=max_response_tokens or int(meta.get("max_response_tokens", 1024)),
    )
    (traj,) = await rollout(actor, tokenizer, env, [Task(question=question)], sampling)
    traj.format_problems = format_problems(traj.episode, env.pool)
    return traj
