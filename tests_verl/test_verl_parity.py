"""Our PPO arithmetic against veRL 0.9's own functions (GAE, the GRPO group advantage, policy loss,
value loss, KL) on random tensors.

Runs in the separate veRL environment (``.venv-verl``, made by ``scripts/setup_verl.sh``):
``.venv-verl/bin/python -m pytest tests_verl``. veRL's policy loss reads its clip settings from the
actor configuration, built here from veRL's composed trainer config like a real run builds it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from verl.trainer.ppo import core_algos
from verl.utils.config import omega_conf_to_dataclass

from atlas_router.rl.ppo import gae, group_advantages, kl_penalty, policy_loss, value_loss
from verl_config import composed


def _tensors(seed: int, b: int = 6, n: int = 40):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, n)
    for i in range(b):  # an observation gap and right padding per row, at random places
        start = int(torch.randint(3, n // 2, (1,), generator=g))
        mask[i, start : start + int(torch.randint(2, 8, (1,), generator=g))] = 0
        mask[i, n - int(torch.randint(0, 6, (1,), generator=g)) :] = 0
    rewards = torch.randn(b, n, generator=g) * mask
    values = torch.randn(b, n, generator=g)
    old = -torch.rand(b, n, generator=g) * 3
    new = old + torch.randn(b, n, generator=g) * 0.3
    adv = torch.randn(b, n, generator=g)
    return rewards, values, mask, old, new, adv


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("gamma, lam", [(1.0, 1.0), (0.99, 0.95)])
def test_gae_matches_verl(seed, gamma, lam):
    rewards, values, mask, *_ = _tensors(seed)
    theirs_adv, theirs_ret = core_algos.compute_gae_advantage_return(rewards, values, mask, gamma, lam)
    ours_adv, ours_ret = gae(rewards, values, mask, gamma, lam, whiten=True)
    sel = mask > 0
    assert torch.allclose(ours_adv[sel], theirs_adv[sel], atol=1e-5)
    assert torch.allclose(ours_ret[sel], theirs_ret[sel], atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_advantages_match_verl_grpo(seed):
    rewards, _, mask, *_ = _tensors(seed)
    groups = [0, 0, 1, 1, 1, 2]  # uneven groups, and a group of one (veRL: mean 0, std 1)
    theirs, _ = core_algos.compute_grpo_outcome_advantage(rewards, mask, np.array(groups), epsilon=1e-6,
                                                          norm_adv_by_std_in_grpo=True)
    ours = group_advantages(rewards, mask, groups)
    sel = mask > 0
    assert torch.allclose(ours[sel], theirs[sel], atol=1e-5)


@pytest.fixture(scope="module")
def actor_config():
    cfg = composed(["actor_rollout_ref.actor.clip_ratio=0.2", "actor_rollout_ref.actor.clip_ratio_c=3.0",
                    "actor_rollout_ref.actor.loss_agg_mode=token-mean", "actor_rollout_ref.rollout.n=1",
                    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4"])
    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_policy_loss_matches_verl(seed, actor_config):
    *_, mask, old, new, adv = _tensors(seed)
    loss, metrics = core_algos.compute_policy_loss_vanilla(old, new, adv, mask, loss_agg_mode="token-mean",
                                                           config=actor_config)
    ours = policy_loss(old, new, adv, mask, clip=0.2, dual_clip=3.0)
    assert float(ours.loss) == pytest.approx(float(loss), abs=1e-6)
    assert float(ours.clipfrac) == pytest.approx(metrics["actor/pg_clipfrac"], abs=1e-6)
    assert float(ours.approx_kl) == pytest.approx(metrics["actor/ppo_kl"], abs=1e-6)
    assert float(ours.clipfrac_lower) == pytest.approx(metrics["actor/pg_clipfrac_lower"], abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_value_loss_matches_verl(seed):
    rewards, values, mask, old, new, adv = _tensors(seed)
    returns = values + adv
    vpreds = values + torch.randn_like(values)
    theirs, clipfrac = core_algos.compute_value_loss(vpreds, returns, values, mask, 0.5, loss_agg_mode="token-mean")
    ours, ours_frac = value_loss(vpreds, returns, values, mask, clip=0.5)
    assert float(ours) == pytest.approx(float(theirs), abs=1e-6)
    assert float(ours_frac) == pytest.approx(float(clipfrac), abs=1e-6)


def test_k1_and_k3_kl_match_verl():
    *_, old, new, _ = _tensors(3)
    assert torch.allclose(kl_penalty(new, old, "k1"), core_algos.kl_penalty(new, old, "kl"))
    assert torch.allclose(kl_penalty(new, old, "k3"), core_algos.kl_penalty(new, old, "low_var_kl"))
