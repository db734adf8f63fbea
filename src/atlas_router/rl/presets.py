"""Named training runs. ``tiny-replay``: the tiny policy, replay mode, the built-in suite, a few CPU minutes.

tiny-replay measures the policy on the suite's held-out test queries three times — as initialised
(``before``), after the supervised warm start (``warm_start``) and after PPO (``after``) — so the
report shows what imitation and what RL each contributed. Its learning rates are far above the
paper's (1e-6 is for a pretrained 3B model; a randomly initialised 2-layer model needs bigger steps),
and it runs single-threaded, which is the fastest setting on a shared 2-core machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from atlas_router.errors import AtlasError
from atlas_router.rl.config import TrainConfig, parse_train_config
from atlas_router.rl.setup import build_parts
from atlas_router.rl.trainer import PPOTrainer, evaluate

HEADLINE = ("reward", "format_valid", "accuracy")


def tiny_replay_config(out_dir: str) -> TrainConfig:
    return parse_train_config({
        "policy": {"kind": "tiny", "tiny": {"layers": 2, "hidden": 128, "heads": 4, "intermediate": 256}, "seed": 0},
        "data": {"suite": True, "max_eval_tasks": 60},
        "env": {"max_routes": 4, "max_turn_tokens": 64, "max_response_tokens": 256, "temperature": 1.0},
        "ppo": {"steps": 12, "batch_size": 32, "mini_batch_size": 16, "micro_batch_size": 16, "epochs": 1,
                "actor_lr": 1e-4, "critic_lr": 1e-3, "kl_coef": 0.001, "kl_type": "k1",
                "gae_gamma": 1.0, "gae_lambda": 1.0, "clip": 0.2, "value_clip": 0.5},
        "warm_start": {"steps": 120, "batch_size": 16, "lr": 3e-3},
        "output": {"dir": out_dir, "checkpoint_every": 6},
        "seed": 0,
        "threads": 1,
    }, "preset tiny-replay")


PRESETS: dict[str, Callable[[str], TrainConfig]] = {"tiny-replay": tiny_replay_config}


def preset_config(name: str, out_dir: str) -> TrainConfig:
    if name not in PRESETS:
        raise AtlasError(f"unknown preset '{name}'; presets: {', '.join(PRESETS)}")
    return PRESETS[name](out_dir)


def headline(summary: dict[str, float]) -> dict[str, float]:
    return {k: round(float(summary.get(k, float("nan"))), 4) for k in HEADLINE}


async def run_with_report(cfg: TrainConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train ``cfg`` and measure held-out queries before, after the warm start, and after PPO."""
    say = log or (lambda msg: None)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    parts = build_parts(cfg)
    if not parts.eval_tasks:
        raise AtlasError("no held-out queries to measure (data.eval_splits selects none)")
    bs = cfg.ppo.batch_size
    before, _ = await evaluate(parts, parts.actor, parts.eval_tasks, batch_size=bs)
    say(f"before: {headline(before)}")
    trainer = PPOTrainer(cfg, parts, log=say)
    await trainer.prepare()
    # the reference is the policy PPO starts from (warm-started), even when this run resumes later
    warm, _ = await evaluate(parts, trainer.ref, parts.eval_tasks, batch_size=bs)
    say(f"after warm start: {headline(warm)}")
    t_ppo = time.perf_counter()
    result = await trainer.train()
    ppo_s = time.perf_counter() - t_ppo
    after, _ = await evaluate(parts, parts.actor, parts.eval_tasks, batch_size=bs)
    say(f"after PPO: {headline(after)}")
    return {
        "before": headline(before),
        "after": headline(after),
        "warm_start": headline(warm),
        "details": {"before": before, "warm_start": warm, "after": after},
        "held_out_queries": len(parts.eval_tasks),
        "train_queries": len(parts.train_tasks),
        "ppo_steps": trainer.step,
        "ppo_seconds": round(ppo_s, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "run_dir": result["dir"],
        "policy_dir": result["policy"],
    }
