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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)

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
        env = self.env
        episode = env.reset(task.question)
        prompt_ids = await self.loop.run_in_executor(
            None, lambda: list(self.tokenizer.apply_chat_template(env.messages(task.question), add_generation_prompt=True,
                                                                  tokenize=True)))
        response_ids: list[int] = []
        mask: list[int] = []
        logprobs: list[float] = []
        request_id = uuid4().hex
        turns = 0
        while True:
            budget = self.response_length - len(response_ids)
            if budget <= 0:
                break
            params = {**sampling_params, "stop": list(STOP_STRINGS), "max_tokens": min(self.max_turn_tokens, budget)}
            out = await self.server_manager.generate(request_id=request_id, prompt_ids=prompt_ids + response_ids,
                                                     sampling_params=params)
            ids, lps = _token_ids(out)
            turns += 1
            response_ids += ids
            mask += [1] * len(ids)
            logprobs += lps if lps is not None else [0.0] * len(ids)
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            truncated = len(ids) >= params["max_tokens"] and not any(s in text for s in STOP_STRINGS)
            obs = await env.step(episode, text, truncated=truncated)
            if obs is None:
                break
            obs_ids = self.tokenizer.encode(obs, add_special_tokens=False)
            if len(response_ids) + len(obs_ids) >= self.response_length:
                # the last token must be the policy's, or its reward cannot reach earlier tokens
                episode.turns[-1].observation = None
                episode.done, episode.finish, episode.answer = True, "length", None
                break
            response_ids += obs_ids
            mask += [0] * len(obs_ids)
            logprobs += [0.0] * len(obs_ids)
        optimal = self.table.optimal_pairs(task.question) if self.table is not None else None
        terms = score_episode(episode, task, self.pool_view, grader_judge, optimal, self.reward_cfg)
        n = self.response_length
        return AgentLoopOutput(
            prompt_ids=prompt_ids,
            response_ids=response_ids[:n],
            response_mask=mask[:n],
            response_logprobs=logprobs[:n] if sampling_params.get("logprobs") else None,
            reward_score=terms.total,
            num_turns=2 * turns,
            metrics={},
            extra_fields={"atlas_reward": terms.to_dict(), "atlas_routes": [o.to_dict() for o in episode.outcomes],
                          "atlas_cost": episode.cost, "atlas_finish": episode.finish},
        )
