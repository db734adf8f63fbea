"""veRL scale-out: our routing episode as a veRL (>= 0.9, < 0.10) AgentLoop, registered as ``atlas_routing``.

veRL builds an agent loop per episode the hydra way: ``hydra.utils.instantiate(agent_loop_config,
trainer_config=..., server_manager=..., tokenizer=..., processor=..., dataset_cls=..., data_config=...,
...)``, where ``agent_loop_config`` is our entry of the agent-loop YAML (``verl_launch`` writes it) and its
keys arrive as keyword arguments. So all set-up happens in ``__init__``; what is costly (records, pool,
environment) is built once per process and shared by every instance. Generation is token in, token out
through ``server_manager.generate``: the policy's ids are kept exactly, our environment runs between
turns, observation ids join with mask 0, and the trajectory comes back as an ``AgentLoopOutput`` with its
reward (``reward_score``) and every reward term (``extra_fields["atlas_reward"]``). This is the only
module of the package that imports veRL (the ``[verl]`` extra). The loop is registered by the agent-loop
file alone (not by ``@register``, whose entry, written on import, would replace the file's and drop its
keys for every episode after the first).

Agent-loop keys: ``pool`` (pool YAML; default pool when absent), ``records`` (records store directory:
replay, optimal pairs, grading), ``replay`` (default true), ``live_fallback`` (false), ``max_routes`` (4),
``obs_token_cap`` (2048), ``max_turn_tokens`` (512), ``selection_penalty`` (-0.15), ``selection_level``
(pair), ``gamma`` and ``xi`` (1.0).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput

from atlas_router.config import load_pool_config
from atlas_router.rl.agent_episode import run_token_episode
from atlas_router.rl.env import RouteExecutor, RoutingEnv
from atlas_router.rl.protocol import STOP_STRINGS, PoolView
from atlas_router.rl.replay import ReplayExecutor, ReplayTable, Task
from atlas_router.rl.rewards import RewardConfig, grader_judge, score_episode

AGENT_NAME = "atlas_routing"


@dataclass
class _Shared:
    """What every episode of one process shares: the pool's view, the records and the executor."""

    pool_view: PoolView
    table: ReplayTable | None
    executor: RouteExecutor


_SHARED: dict[tuple[Any, ...], _Shared] = {}
_LOCK = threading.Lock()


def _shared(pool: str | None, records: str | None, replay: bool, live_fallback: bool) -> _Shared:
    key = (pool, records, replay, live_fallback)
    with _LOCK:
        if key not in _SHARED:
            from atlas_router.rl.env import LiveExecutor

            pool_config = load_pool_config(pool)
            table = None
            if records:
                from atlas_router.records.store import RecordStore

                table = ReplayTable(RecordStore(records).load())
            live = None
            if not replay or table is None or live_fallback:
                from atlas_router.pool.pool import Pool

                live = LiveExecutor(Pool(pool_config))
            executor = ReplayExecutor(table, live) if table is not None and replay else live
            assert executor is not None
            _SHARED[key] = _Shared(PoolView.from_config(pool_config), table, executor)
        return _SHARED[key]


def _token_ids(output: Any) -> tuple[list[int], list[float] | None]:
    """veRL's ``TokenOutput`` (``token_ids``, ``log_probs``) as plain lists."""
    ids = getattr(output, "token_ids", None)
    if ids is None:
        raise TypeError(f"unexpected generation output {type(output).__name__}")
    logprobs = getattr(output, "log_probs", None)
    return list(ids), list(logprobs) if logprobs else None


class AtlasRoutingAgentLoop(AgentLoopBase):
    """Think / route / read / answer episodes over the pool, scored by our composite reward."""

    def __init__(self, trainer_config: Any, server_manager: Any, tokenizer: Any, processor: Any, *,
                 pool: str | None = None, records: str | None = None, replay: bool = True,
                 live_fallback: bool = False, max_routes: int = 4, obs_token_cap: int = 2048,
                 max_turn_tokens: int = 512, selection_penalty: float = -0.15, selection_level: str = "pair",
                 gamma: float = 1.0, xi: float = 1.0, **kwargs: Any) -> None:
        super().__init__(trainer_config, server_manager, tokenizer, processor, **kwargs)
        shared = _shared(pool, records, bool(replay), bool(live_fallback))
        self.pool_view, self.table = shared.pool_view, shared.table
        self.env = RoutingEnv(shared.pool_view, shared.executor, max_routes=int(max_routes),
                              obs_token_cap=int(obs_token_cap), tokenizer=tokenizer)
        self.max_turn_tokens = int(max_turn_tokens)
        self.response_length = int(self.rollout_config.response_length)
        self.reward_cfg = RewardConfig(gamma=float(gamma), xi=float(xi), selection_penalty=float(selection_penalty),
                                       selection_level=selection_level)  # type: ignore[arg-type]

    @staticmethod
    def _task(kwargs: dict[str, Any]) -> Task:
        info = dict(kwargs.get("extra_info") or {})
        question = info.get("question")
        if not question:
            messages = kwargs.get("raw_prompt") or []
            question = next((m["content"] for m in reversed(list(messages)) if m.get("role") == "user"), "")
        return Task(question=str(question), benchmark=str(info.get("benchmark", "")),
                    reference=str(info.get("reference", "")), query_id=str(info.get("query_id", "")),
                    domain=str(info.get("domain", "")))

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        task = self._task(kwargs)
        request_id = uuid4().hex
        timing = {"generate": 0.0}

        async def generate(context: list[int], max_tokens: int) -> tuple[list[int], list[float] | None]:
            params = {**sampling_params, "stop": list(STOP_STRINGS), "max_tokens": max_tokens}
            t0 = time.perf_counter()
            out = await self.server_manager.generate(request_id, prompt_ids=context, sampling_params=params)
            timing["generate"] += time.perf_counter() - t0
            return _token_ids(out)

        t_start = time.perf_counter()
        ep = await run_token_episode(generate, self.tokenizer, self.env, task.question,
                                     max_turn_tokens=self.max_turn_tokens, response_length=self.response_length)
        optimal = self.table.optimal_pairs(task.question) if self.table is not None else None
        terms = score_episode(ep.episode, task, self.pool_view, grader_judge, optimal, self.reward_cfg)
        metrics = AgentLoopMetrics(generate_sequences=timing["generate"],
                                   tool_calls=time.perf_counter() - t_start - timing["generate"])
        return AgentLoopOutput(
            prompt_ids=ep.prompt_ids,
            response_ids=ep.response_ids,
            response_mask=ep.response_mask,
            response_logprobs=ep.logprobs if sampling_params.get("logprobs") else None,
            reward_score=terms.total,
            num_turns=2 * ep.turns + 1,
            metrics=metrics,
            extra_fields={"atlas_reward": terms.to_dict(), "atlas_routes": [o.to_dict() for o in ep.episode.outcomes],
                          "atlas_cost": ep.episode.cost, "atlas_finish": ep.episode.finish},
        )
