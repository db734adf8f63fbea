"""Seconds per PPO step and tokens per second on the CPU, against a plain forward pass in the same run.

One PPO step = a batched token-level rollout on the built-in suite (replay mode, no live calls), the
old/reference log-probs and values, GAE, and one critic and one actor update. The baseline is one plain
forward pass (no gradients, full logits) of the same policy over a batch of the same trajectories, so
the ratio says how many forward passes a PPO step costs.

    python bench/rl_step.py                      # SmolLM2-135M-Instruct, batch 4, 3 steps
    python bench/rl_step.py --policy tiny --batch 32 --steps 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

import torch

from atlas_router.rl.config import parse_train_config
from atlas_router.rl.ppo import collate
from atlas_router.rl.rollout import rollout
from atlas_router.rl.setup import build_parts
from atlas_router.rl.trainer import PPOTrainer


def _config(policy: str, batch: int, out_dir: str):
    return parse_train_config({
        "policy": {"kind": policy},
        "data": {"suite": True},
        "env": {"max_turn_tokens": 48, "max_response_tokens": 128},
        "ppo": {"steps": 1000, "batch_size": batch, "mini_batch_size": batch, "micro_batch_size": min(batch, 8)},
        "output": {"dir": out_dir},
    })


async def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(args.policy, args.batch, tmp)
        t0 = time.perf_counter()
        parts = build_parts(cfg)
        trainer = PPOTrainer(cfg, parts)
        await trainer.prepare()
        load_s = time.perf_counter() - t0
        rows = [await trainer.train_step() for _ in range(args.steps)]
        steady = rows[1:] if len(rows) > 1 else rows  # the first step also allocates optimiser state
        step_s = statistics.median(r["time_s"] for r in steady)
        step_tokens = statistics.median(r["tokens"] for r in steady)

        trajs = await rollout(parts.actor, parts.tokenizer, parts.env, parts.train_tasks[: args.batch], parts.sampling,
                              generator=torch.Generator().manual_seed(0))
        batch = collate([t.prompt_ids for t in trajs], [t.response_ids for t in trajs], [t.response_mask for t in trajs],
                        parts.tokenizer.pad_token_id or 0)
        fwd = []
        with torch.no_grad():
            for _ in range(3):
                t1 = time.perf_counter()
                parts.actor(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
                fwd.append(time.perf_counter() - t1)
        fwd_s = statistics.median(fwd)
        fwd_tokens = int(batch.attention_mask.sum())

    name = {"smollm2": "SmolLM2-135M-Instruct", "tiny": "tiny 2-layer (subset vocabulary)"}.get(args.policy, args.policy)
    print(f"policy: {name}; batch {args.batch}; {args.threads} thread(s); load {load_s:.1f} s")
    for r in rows:
        print(f"  step {r['step']}: {r['time_s']:.2f} s (rollout {r['rollout_s']:.2f} s, update {r['update_s']:.2f} s), "
              f"{r['tokens']} tokens")
    print(f"PPO step:      {step_s:.2f} s/step, {step_tokens / step_s:,.0f} tokens/s ({step_tokens:.0f} tokens/step)")
    print(f"plain forward: {fwd_s:.3f} s, {fwd_tokens / fwd_s:,.0f} tokens/s ({fwd_tokens} tokens)")
    print(f"ratio: one PPO step = {step_s / fwd_s:.1f} plain forward passes "
          f"(per token: {(step_s / step_tokens) / (fwd_s / fwd_tokens):.1f}x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=max(1, torch.get_num_threads()))
    asyncio.run(main(parser.parse_args()))
