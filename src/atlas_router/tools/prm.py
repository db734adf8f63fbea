"""The prm tool: best-of-n sampling of the pair's own model, choosing one answer.

The pair's model is sampled ``n`` times (``temperature`` default 0.8, seeds 0..n-1). With ``endpoint``
set, each candidate is scored by a process reward model served by vLLM's ``/pooling`` API (for example
``vllm serve Qwen/Qwen2.5-Math-PRM-7B --runner pooling``): the solution is split into steps at blank
lines, each step is followed by the ``<extra_0>`` marker, and the server returns one ``[p_bad, p_good]``
pair per marker. A candidate's score aggregates its step rewards (``aggregate``: min, last, mean, prod).
Without an endpoint (or when it fails) the tool falls back to self-consistency: a majority vote over
the final answers.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from atlas_router.config import secret
from atlas_router.core.answers import extract_answer
from atlas_router.core.http import async_client, send_with_retries
from atlas_router.models.base import Completion, SamplingParams
from atlas_router.tools.base import Tool, ToolContext, ToolResult
from atlas_router.tools.settings_check import reject_unknown

STEP_TAG = "<extra_0>"
DEFAULT_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
AGGREGATES = ("min", "last", "mean", "prod")


@dataclass
class BestOfN:
    """The sampled candidates, their scores, and which one was chosen (and how)."""

    chosen_index: int
    candidates: list[Completion]
    scores: list[float]
    method: str
    answers: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def chosen(self) -> Completion:
        return self.candidates[self.chosen_index]


class RewardModelError(Exception):
    """The reward endpoint failed or replied in an unexpected shape; the message is one line."""


def vote_key(answer: str) -> str:
    """Answers that mean the same vote together: case, spaces, $, thousands commas, 4 vs 4.0."""
    key = answer.strip().strip("$").strip().rstrip(".").lower()
    key = re.sub(r"\s+", "", key)
    plain = key.replace(",", "")
    try:
        number = float(plain)
    except ValueError:
        return key
    if math.isfinite(number) and number == int(number):
        return str(int(number))
    return repr(number)


def majority_vote(answers: list[str]) -> tuple[int, list[float]]:
    """Index of the first candidate with the most common answer, and each candidate's vote share."""
    keys = [vote_key(a) if a else "" for a in answers]
    counts = Counter(k for k in keys if k)
    if not counts:
        return 0, [0.0] * len(answers)
    total = len(answers)
    scores = [counts[k] / total if k else 0.0 for k in keys]
    best = max(scores)
    return scores.index(best), scores


def split_steps(text: str) -> list[str]:
    """Solution steps: paragraphs separated by blank lines (what Qwen's PRMs are trained on)."""
    steps = [s.strip() for s in re.split(r"\n\s*\n", text.strip())]
    return [s for s in steps if s] or [text.strip() or "(empty)"]


def prm_input(system: str, question: str, solution: str) -> str:
    """The ChatML conversation a Qwen2.5-Math PRM scores, with a step tag after every step."""
    answer = "".join(f"{step}{STEP_TAG}" for step in split_steps(solution))
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
            f"<|im_start|>assistant\n{answer}<|im_end|>\n")


def aggregate(step_rewards: list[float], how: str) -> float:
    if not step_rewards:
        return 0.0
    if how == "min":
        return min(step_rewards)
    if how == "last":
        return step_rewards[-1]
    if how == "mean":
        return sum(step_rewards) / len(step_rewards)
    return math.prod(step_rewards)


def _step_reward(item: Any) -> float:
    """One step's reward: the positive-class probability of a ``[p_bad, p_good]`` pair (or a bare number)."""
    if isinstance(item, (int, float)):
        return float(item)
    if isinstance(item, list) and len(item) >= 2 and all(isinstance(v, (int, float)) for v in item):
        return float(item[1])
    raise RewardModelError(f"unexpected step reward {item!r}; expected [p_bad, p_good]")


class PoolingRewardClient:
    """Scores solutions with a PRM behind vLLM's ``POST /pooling`` (batched: one request for all)."""

    def __init__(self, endpoint: str, model: str, *, api_key_env: str | None = None, timeout_s: float = 60.0,
                 system: str = DEFAULT_SYSTEM) -> None:
        base = endpoint.rstrip("/")
        self.url = (base[: -len("/v1")] if base.endswith("/v1") else base) + "/pooling"
        self.model, self.api_key_env, self.timeout_s, self.system = model, api_key_env, timeout_s, system

    def _headers(self) -> dict[str, str]:
        if not self.api_key_env:
            return {}
        key = secret(self.api_key_env)
        if not key:
            raise RewardModelError(f"environment variable {self.api_key_env} (api_key_env) is not set")
        return {"Authorization": f"Bearer {key}"}

    async def step_rewards(self, question: str, solutions: list[str]) -> list[list[float]]:
        """Per-step rewards for each solution, in order."""
        payload = {"model": self.model, "input": [prm_input(self.system, question, s) for s in solutions]}
        try:
            headers = self._headers()
            async with async_client(self.timeout_s) as client:
                response = await send_with_retries(lambda: client.post(self.url, json=payload, headers=headers))
        except httpx.HTTPError as err:
            raise RewardModelError(f"reward model request failed: {type(err).__name__}: {err}") from None
        if response.status_code != 200:
            raise RewardModelError(f"reward model returned HTTP {response.status_code}: {response.text[:200]}")
        try:
            items = response.json()["data"]
        except (ValueError, KeyError, TypeError):
            raise RewardModelError("reward model reply has no 'data' list") from None
        if not isinstance(items, list) or len(items) != len(solutions):
            raise RewardModelError(f"reward model returned {len(items) if isinstance(items, list) else 0} "
                                   f"results for {len(solutions)} solutions")
        ordered = sorted(items, key=lambda it: it.get("index", 0) if isinstance(it, dict) else 0)
        rewards = []
        for item in ordered:
            steps = item.get("data") if isinstance(item, dict) else None
            if not isinstance(steps, list):
                raise RewardModelError("reward model result has no per-step 'data'")
            rewards.append([_step_reward(s) for s in steps])
        return rewards


def _question(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return message["content"]
    return ""


class PRMTool(Tool):
    """Best-of-n over the pair's model (settings: n, temperature, max_tokens; endpoint, reward_model,
    api_key_env, aggregate, timeout_s, system for the reward model)."""

    kind = "prm"
    mode = "best_of_n"
    sample_input = "What is 12 * 12?"

    def __init__(self, spec) -> None:
        super().__init__(spec)
        s = self.settings
        reject_unknown(s, ("n", "temperature", "max_tokens", "endpoint", "reward_model", "api_key_env", "aggregate",
                           "timeout_s", "system"))
        self.n = int(s.get("n", 5))
        self.temperature = 0.8 if s.get("temperature") is None else float(s["temperature"])
        self.max_tokens = int(s["max_tokens"]) if s.get("max_tokens") else None
        self.aggregate = str(s.get("aggregate", "min"))
        if not 1 <= self.n <= 64:
            raise ValueError(f"n must be between 1 and 64, got {self.n}")
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {', '.join(AGGREGATES)}, got '{self.aggregate}'")
        self.reward: PoolingRewardClient | None = None
        if s.get("endpoint"):
            if not s.get("reward_model"):
                raise ValueError("'endpoint' needs 'reward_model' (the served PRM's model id)")
            self.reward = PoolingRewardClient(str(s["endpoint"]), str(s["reward_model"]),
                                              api_key_env=s.get("api_key_env"),
                                              timeout_s=float(s.get("timeout_s", 60.0)),
                                              system=str(s.get("system", DEFAULT_SYSTEM)))

    async def _sample(self, messages: list[dict[str, Any]], context: ToolContext) -> list[Completion]:
        assert context.model is not None
        calls = [context.model.chat(messages, SamplingParams(temperature=self.temperature, seed=i,
                                                             max_tokens=self.max_tokens))
                 for i in range(self.n)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        candidates = [r for r in results if isinstance(r, Completion)]
        if not candidates:
            first = next(r for r in results if isinstance(r, BaseException))
            raise first
        return candidates

    async def best_of_n(self, messages: list[dict[str, Any]], context: ToolContext) -> BestOfN:
        """Sample n candidates and choose one by reward model, else by majority vote."""
        if context.model is None:
            raise ValueError("the prm tool samples the pair's model; run it as part of a (model, tool) pair")
        candidates = await self._sample(messages, context)
        answers = [extract_answer(c.text) for c in candidates]
        error = None
        if self.reward is not None:
            question = context.question or _question(messages)
            try:
                steps = await self.reward.step_rewards(question, [c.text for c in candidates])
                scores = [aggregate(r, self.aggregate) for r in steps]
                chosen = scores.index(max(scores))
                return BestOfN(chosen, candidates, scores, f"prm_{self.aggregate}", answers)
            except RewardModelError as err:
                error = str(err)
        chosen, scores = majority_vote(answers)
        return BestOfN(chosen, candidates, scores, "majority_vote", answers, error)

    async def _run(self, tool_input: str, context: ToolContext) -> ToolResult:
        if context.model is None:
            return ToolResult(ok=False, output="", error="the prm tool samples the pair's model; run it as part "
                                                         "of a (model, tool) pair, e.g. atlas ask --tool prm")
        ctx = ToolContext(question=tool_input, model=context.model, messages=[{"role": "user", "content": tool_input}])
        best = await self.best_of_n(ctx.messages, ctx)
        data = {"method": best.method, "scores": best.scores, "chosen": best.chosen_index, "answers": best.answers,
                "candidates": [c.text for c in best.candidates]}
        if best.error:
            data["reward_error"] = best.error
        return ToolResult(ok=True, output=best.chosen.text, data=data)
