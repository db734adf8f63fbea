"""Expert trajectories from records and the supervised warm start that imitates them.

An expert trajectory routes the question once to its optimal pair (best recorded score, then lowest
cost), reads the replayed observation, and answers with what that pair answered. It is built by the
same environment the policy trains in, so the warm start teaches exactly the protocol PPO rewards.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from atlas_router.rl.env import RoutingEnv
from atlas_router.rl.ppo import collate, sft_loss
from atlas_router.rl.replay import ReplayTable, Task
from atlas_router.rl.rollout import prompt_ids


@dataclass
class Demo:
    """One supervised example: prompt ids, response ids, and the mask of tokens to imitate."""

    prompt_ids: list[int]
    response_ids: list[int]
    mask: list[int]


def expert_think(task: Task, model: str, tool: str) -> str:
    kind = task.domain.replace("_", " ") if task.domain else ""
    lead = f"This is a {kind} question" if kind else "For this question"
    return f"{lead}; {model} with {tool} is the best choice."


async def expert_demos(tokenizer: Any, env: RoutingEnv, table: ReplayTable, tasks: Sequence[Task]) -> list[Demo]:
    """One demonstration per task that has an optimal pair in the records."""
    demos: list[Demo] = []
    eos = tokenizer.eos_token_id
    for task in tasks:
        optimal = table.optimal_pairs(task.question)
        if not optimal:
            continue
        model, tool = sorted(optimal)[0]
        episode = env.reset(task.question)
        first = f"<think>{expert_think(task, model, tool)}</think>\n<search>{model}@@{tool}: {task.question}</search>"
        obs = await env.step(episode, first)
        if obs is None:
            continue
        outcome = episode.turns[-1].outcome
        answer = (outcome.answer if outcome else "") or task.reference
        second = f"<answer>{answer}</answer>"
        t1 = list(tokenizer.encode(first, add_special_tokens=False))
        o = list(tokenizer.encode(obs, add_special_tokens=False))
        t2 = list(tokenizer.encode(second, add_special_tokens=False)) + ([eos] if eos is not None else [])
        demos.append(Demo(prompt_ids(tokenizer, env, task.question), t1 + o + t2, [1] * len(t1) + [0] * len(o) + [1] * len(t2)))
    return demos


def warm_start(model: Any, demos: Sequence[Demo], *, steps: int, batch_size: int, lr: float, pad_id: int,
               seed: int = 0, log: Callable[[str], None] | None = None) -> list[float]:
    """Fine-tune on demonstrations (cross-entropy on masked tokens); returns the loss per step."""
    if not demos or steps <= 0:
        return []
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses: list[float] = []
    order: list[int] = []
    for step in range(steps):
        if len(order) < batch_size:
            extra = list(range(len(demos)))
            rng.shuffle(extra)
            order += extra
        picked, order = order[:batch_size], order[batch_size:]
        batch = collate([demos[i].prompt_ids for i in picked], [demos[i].response_ids for i in picked],
                        [demos[i].mask for i in picked], pad_id)
        loss = sft_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if log and (step + 1) % max(1, steps // 5) == 0:
            log(f"warm start {step + 1}/{steps}: loss {losses[-1]:.3f}")
    model.eval()
    return losses
