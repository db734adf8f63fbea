"""veRL scale-out: our routing episode as a veRL AgentLoop, registered as ``atlas_routing``.

veRL's generation servers (vLLM / SGLang) produce the policy's tokens; this loop keeps them exactly,
runs our environment between turns, appends observation tokens with mask 0, and returns the trajectory
with its reward (``reward_score``) and every reward term (``extra_fields["atlas_reward"]``). The
environment, rewards and records are ours; this is the only module of the package that imports veRL
(install the ``[verl]`` extra). ``verl_launch`` writes the data set, the agent-loop file and the
command line of a run.

Agent-loop keyword arguments (from the agent-loop YAML): ``pool`` (pool YAML; default pool when
absent), ``records`` (records store directory, for replay, optimal pairs and grading), ``replay``
(default true), ``max_routes`` (4), ``obs_token_cap`` (2048), ``max_turn_tokens`` (512),
``selection_penalty`` (-0.15), ``selection_level`` (pair), ``gamma`` and ``xi`` (1.0).
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput, register

from atlas_router.config import load_pool_config
from atlas_router.rl.agent_episode import run_token_episode
from atlas_router.rl.env import LiveExecutor, RoutingEnv
from atlas_router.rl.protocol import STOP_STRINGS, PoolView
from atlas_router.rl.replay import ReplayExecutor, ReplayTable, Task
from atlas_router.rl.rewards import RewardConfig, grader_judge, score_episode

AGENT_NAME = "atlas_routing"


def _token_ids(output: Any) -> tuple[list[int], list[float] | None]:
    """veRL versions return either a list of ids or a TokenOutput with ``token_ids`` / ``log_probs``."""
    if isinstance(output, list):
        return list(output), None
    ids = getattr(output, "token_ids", None)
    if ids is None:
        raise TypeError(f"unexpected generation output {type(output).__name__}")
    logprobs = getattr(output, "log_probs", None)
    return list(ids), list(logprobs) if logprobs is not None else None


@register(AGENT_NAME)
class AtlasRoutingAgentLoop(AgentLoopBase):
    """Think / route / read / answer episodes over the live pool, scored by our composite reward."""

    @classmethod
    def init_class(cls, config: Any, tokenizer: Any, processor: Any = None, **kwargs: Any) -> None:
        if cls._class_initialized:
            return
        cls._class_initialized = True
        pool_config = load_pool_config(kwargs.get("pool"))
        cls.pool_view = PoolView.from_config(pool_config)
        cls.table = None
        fallback = None
        if kwargs.get("records"):
            from atlas_router.records.store import RecordStore

            cls.table = ReplayTable(RecordStore(kwargs["records"]).load())
        if not kwargs.get("replay", True) or cls.table is None or kwargs.get("live_fallback", False):
            from atlas_router.pool.pool import Pool

            fallback = LiveExecutor(Pool(pool_config))
        executor = ReplayExecutor(cls.table, fallback) if cls.table is not None and kwargs.get("replay", True) else fallback
        cls.env = RoutingEnv(cls.pool_view, executor, max_routes=int(kwargs.get("max_routes", 4)),
                             obs_token_cap=int(kwargs.get("obs_token_cap", 2048)), tokenizer=tokenizer)
        cls.max_turn_tokens = int(kwargs.get("max_turn_tokens", 512))
        cls.reward_cfg = RewardConfig(gamma=float(kwargs.get("gamma", 1.0)), xi=float(kwargs.get("xi", 1.0)),
                                      selection_penalty=float(kwargs.get("selection_penalty", -0.15)),
                                      selection_level=kwargs.get("selection_level", "pair"))
        cls.response_length = int(config.actor_rollout_ref.rollout.response_length)

    def _task(self, kwargs: dict[str, Any]) -> Task:
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

        async def generate(context: list[int], max_tokens: int) -> tuple[list[int], list[float] | None]:
            params = {**sampling_params, "stop": list(STOP_STRINGS), "max_tokens": max_tokens}
            out = await self.server_manager.generate(request_id=request_id, prompt_ids=context, sampling_params=params)
            return _token_ids(out)

        ep = await run_token_episode(generate, self.tokenizer, self.env, task.question,
                                     max_turn_tokens=self.max_turn_tokens, response_length=self.response_length)
        optimal = self.table.optimal_pairs(task.question) if self.table is not None else None
        terms = score_episode(ep.episode, task, self.pool_view, grader_judge, optimal, self.reward_cfg)
        return AgentLoopOutput(
            prompt_ids=ep.prompt_ids,
            response_ids=ep.response_ids,
            response_mask=ep.response_mask,
            response_logprobs=ep.logprobs if sampling_params.get("logprobs") else None,
            reward_score=terms.total,
            num_turns=2 * ep.turns + 1,
            metrics={},
            extra_fields={"atlas_reward": terms.to_dict(), "atlas_routes": [o.to_dict() for o in ep.episode.outcomes],
                          "atlas_cost": ep.episode.cost, "atlas_finish": ep.episode.finish},
        )
