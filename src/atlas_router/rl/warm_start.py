"""The grammar-only warm start: imitation that teaches the protocol and nothing about which pair pays.

A demonstration routes the question to a pair drawn uniformly at random from the pool, reads the
replayed observation, and copies that pair's answer into ``<answer>`` — right or wrong. So after the
warm start the policy writes valid trajectories, copies what comes back, and chooses pairs at random;
which pair to choose for which question it can only learn from the reward (PPO). This is what makes the
learning measurable: nothing a policy imitated can explain an accuracy above the random-pair baseline.
Demonstrations are built by the same environment the policy trains in.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from atlas_router.rl.env import RoutingEnv
from atlas_router.rl.ppo import collate, sft_loss
from atlas_router.rl.protocol import ROUTE_SEP
from atlas_router.rl.replay import Task
from atlas_router.rl.rollout import prompt_ids

# The same reasoning for every question, ending with the question restated: it carries no hint of which
# pair suits which question, puts the question next to the routing decision, and gives the policy more
# copying to learn (a 2-layer policy copies observed answers far more reliably when trained this way).
GRAMMAR_THINK = "I route the question to one model and tool, then answer with what comes back. The question:"


@dataclass
class Demo:
    """One supervised example: prompt ids, response ids, and the mask of tokens to imitate."""

    prompt_ids: list[int]
    response_ids: list[int]
    mask: list[int]


def grammar_turns(pair: tuple[str, str], question: str, answer: str) -> tuple[str, str]:
    """(first turn, final turn) of a demonstration: route ``question`` to ``pair``, answer ``answer``.

    The answer follows a space, as it does in the observation ("Final answer: Colombo"), so that copying
    it means repeating the same tokens (" Col", "ombo") rather than respelling them ("Col", "ombo").
    """
    model, tool = pair
    first = f"<think>{GRAMMAR_THINK} {question}</think>\n<search>{model}{ROUTE_SEP}{tool}: {question}</search>"
    return first, f"<answer> {answer}</answer>"


async def grammar_demos(tokenizer: Any, env: RoutingEnv, tasks: Sequence[Task], *, pairs_per_task: int = 1,
                        seed: int = 0) -> list[Demo]:
    """Demonstrations routing each task to ``pairs_per_task`` distinct pairs drawn uniformly at random
    (seeded), the answer copied from the observation. Tasks whose drawn pair fails or answers nothing are
    skipped for that pair.

    Several pairs per question give the same question different answers, so the only rule that fits
    the demonstrations is to copy the observation; with one pair per question a small policy memorises
    question -> answer instead (on held-out questions it then writes an answer seen in training).
    """
    rng = random.Random(seed)
    pairs = env.pool.pairs()
    demos: list[Demo] = []
    eos = tokenizer.eos_token_id
    for task in tasks:
        for pair in rng.sample(pairs, min(pairs_per_task, len(pairs))):
            demo = await _demo(tokenizer, env, task, pair, eos)
            if demo is not None:
                demos.append(demo)
    return demos


async def _demo(tokenizer: Any, env: RoutingEnv, task: Task, pair: tuple[str, str], eos: int | None) -> Demo | None:
    episode = env.reset(task.question)
    first, _ = grammar_turns(pair, task.question, "")
    obs = await env.step(episode, first)
    outcome = episode.turns[-1].outcome
    if obs is None or outcome is None or outcome.error or not outcome.answer.strip():
        return None
    _, second = grammar_turns(pair, task.question, outcome.answer.strip())
    t1 = list(tokenizer.encode(first, add_special_tokens=False))
    o = list(tokenizer.encode(obs, add_special_tokens=False))
    t2 = list(tokenizer.encode(second, add_special_tokens=False)) + ([eos] if eos is not None else [])
    return Demo(prompt_ids(tokenizer, env, task.question), t1 + o + t2,
                [1] * len(t1) + [0] * len(o) + [1] * len(t2))


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
