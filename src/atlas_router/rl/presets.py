"""Named training runs on the built-in records, measured on held-out queries against scripted baselines.

``cpu-replay``: the tiny policy (2-layer Llama, vocabulary from the training split and the pool's
names), replay mode, the built-in records (640 queries, 192 held out). The warm start is grammar only
(every training question routed to each of the pool's 8 pairs, answers copied), so whatever accuracy
PPO adds over it was found from the reward alone. ``cpu-replay-small``: the same run cut to CI size
(40 PPO steps; a quarter of the held-out set); the same warm start.

PPO here compares episodes of the same question (8 per question, the group-relative advantage of
veRL's ``grpo`` estimator) rather than against the critic: with the critic, the 2-layer policy sent every
family to the pair that pays on three of four (docs/rl.md says why). The report measures the policy as
initialised (``before``), after the warm start (``warm_start``) and after PPO (``after``), beside the
scripted baselines of ``report.baselines``; ``cpu-replay`` also measures the held-out queries every 20
PPO steps (``held_out_by_step``). Learning rates are far above the paper's (1e-6 is for a pretrained 3B
model; a randomly initialised 2-layer model needs bigger steps), and the run is single-threaded, the
fastest setting on a shared 2-core machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from atlas_router.errors import AtlasError
from atlas_router.rl.config import TrainConfig, parse_train_config
from atlas_router.rl.plots import read_metrics
from atlas_router.rl.report import baselines, first_pairs_by_domain, gap_closed, row
from atlas_router.rl.setup import build_parts, training_records
from atlas_router.rl.trainer import PPOTrainer, evaluate


def _cpu_replay(out_dir: str, *, name: str, ppo_steps: int, actor_lr: float, max_eval: int | None,
                eval_every: int = 0) -> TrainConfig:
    return parse_train_config({
        "policy": {"kind": "tiny", "tiny": {"layers": 2, "hidden": 128, "heads": 4, "intermediate": 256}, "seed": 0},
        "data": {"suite": True, "max_eval_tasks": max_eval},
        "env": {"max_routes": 4, "max_turn_tokens": 160, "max_response_tokens": 320, "temperature": 1.0},
        "ppo": {"steps": ppo_steps, "batch_size": 32, "mini_batch_size": 16, "micro_batch_size": 16, "epochs": 1,
                "actor_lr": actor_lr, "critic_lr": 1e-3, "kl_coef": 0.001, "kl_type": "k1",
                "gae_gamma": 1.0, "gae_lambda": 1.0, "clip": 0.2, "value_clip": 0.5,
                "group_size": 8, "advantage": "grpo"},
        "warm_start": {"steps": 2400, "batch_size": 16, "lr": 3e-3, "pairs_per_task": 8},
        "output": {"dir": out_dir, "checkpoint_every": 10, "eval_every": eval_every},
        "seed": 0,
        "threads": 1,
    }, f"preset {name}")


PRESETS: dict[str, Callable[[str], TrainConfig]] = {
    "cpu-replay": lambda d: _cpu_replay(d, name="cpu-replay", ppo_steps=300, actor_lr=3e-4, max_eval=None,
                                        eval_every=20),
    "cpu-replay-small": lambda d: _cpu_replay(d, name="cpu-replay-small", ppo_steps=40, actor_lr=3e-4, max_eval=48),
}


def preset_config(name: str, out_dir: str) -> TrainConfig:
    if name not in PRESETS:
        raise AtlasError(f"unknown preset '{name}'; presets: {', '.join(PRESETS)}")
    return PRESETS[name](out_dir)


async def run_with_report(cfg: TrainConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train ``cfg``; measure held-out queries before, after the warm start and after PPO, and the
    scripted baselines on the same queries."""
    say = log or (lambda msg: None)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    parts = build_parts(cfg)
    if not parts.eval_tasks:
        raise AtlasError("no held-out queries to measure (data.eval_splits selects none)")
    train_records = training_records(parts.records, cfg.data.train_splits)
    scripted = await baselines(parts.env, parts.table, train_records, parts.eval_tasks, parts.judge, parts.reward,
                               seed=cfg.seed)
    bs = cfg.ppo.batch_size
    _, before = await evaluate(parts, parts.actor, parts.eval_tasks, batch_size=bs)
    say(f"before: accuracy {row(before)['accuracy']:.3f}, format-valid {row(before)['format_valid']:.3f}")
    trainer = PPOTrainer(cfg, parts, log=say)
    await trainer.prepare()
    # the reference is the policy PPO starts from (warm-started), even when this run resumes later
    _, warm = await evaluate(parts, trainer.ref, parts.eval_tasks, batch_size=bs)
    say(f"after warm start: accuracy {row(warm)['accuracy']:.3f}, format-valid {row(warm)['format_valid']:.3f}")
    t_ppo = time.perf_counter()
    result = await trainer.train()
    ppo_s = time.perf_counter() - t_ppo
    _, after = await evaluate(parts, parts.actor, parts.eval_tasks, batch_size=bs)
    rows = {"before": row(before), "warm_start": row(warm), "after": row(after)}
    say(f"after PPO: accuracy {rows['after']['accuracy']:.3f}, format-valid {rows['after']['format_valid']:.3f}")
    return {
        **rows,
        **scripted,
        "gap_closed": gap_closed(rows["warm_start"]["accuracy"], rows["after"]["accuracy"],
                                 scripted["domain_best"]["accuracy"]),
        "held_out_by_step": [{"step": r["step"], "accuracy": r["accuracy"], "format_valid": r["format_valid"]}
                             for r in read_metrics(trainer.metrics_path) if r.get("kind") == "eval"],
        "first_route_by_domain": {"warm_start": first_pairs_by_domain(warm), "after": first_pairs_by_domain(after)},
        "held_out_queries": len(parts.eval_tasks),
        "train_queries": len(parts.train_tasks),
        "ppo_steps": trainer.step,
        "warm_start_steps": cfg.warm_start.steps,
        "ppo_seconds": round(ppo_s, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "run_dir": result["dir"],
        "policy_dir": result["policy"],
    }
