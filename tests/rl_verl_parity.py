"""Our PPO arithmetic against veRL's (GAE, policy loss, value loss, KL) on random tensors.

NOT part of the default run: veRL is heavy and not installed in CI. The file name does not match
``test_*.py``, so ``pytest`` never collects it by itself; run it explicitly where veRL imports:

    pip install 'atlas-router[verl]'
    pytest tests/rl_verl_parity.py -m verl
"""

from __future__ import annotations

import inspect

import pytest
import torch
from verl.trainer.ppo import core_algos

from atlas_router.rl.ppo import gae, kl_penalty, policy_loss, value_loss

pytestmark = pytest.mark.verl


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


def _verl_policy_loss(old, new, adv, mask):
    fn = getattr(core_algos, "compute_policy_loss_vanilla", None) or getattr(core_algos, "compute_policy_loss")
    params = inspect.signature(fn).parameters
    if "config" in params:  # newer veRL: (old, new, adv, mask, loss_agg_mode, config, ...)
        from omegaconf import OmegaConf

        cfg = OmegaConf.create({"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.2,
                                "clip_ratio_c": 3.0, "loss_agg_mode": "token-mean"})
        out = fn(old, new, adv, mask, loss_agg_mode="token-mean", config=cfg)
    else:  # older veRL: explicit clip ranges
        kwargs = {"cliprange": 0.2}
        if "cliprange_low" in params:
            kwargs.update(cliprange_low=0.2, cliprange_high=0.2)
        if "clip_ratio_c" in params:
            kwargs["clip_ratio_c"] = 3.0
        if "loss_agg_mode" in params:
            kwargs["loss_agg_mode"] = "token-mean"
        out = fn(old, new, adv, mask, **kwargs)
    return out[0], out[1], out[2]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_policy_loss_matches_verl(seed):
    *_, mask, old, new, adv = _tensors(seed)
    loss, clipfrac, kl = _verl_policy_loss(old, new, adv, mask)
    ours = policy_loss(old, new, adv, mask, clip=0.2, dual_clip=3.0)
    assert float(ours.loss) == pytest.approx(float(loss), abs=1e-6)
    assert float(ours.clipfrac) == pytest.approx(float(clipfrac), abs=1e-6)
    assert float(ours.approx_kl) == pytest.approx(float(kl), abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_value_loss_matches_verl(seed):
    rewards, values, mask, old, new, adv = _tensors(seed)
    returns = values + adv
    vpreds = values + torch.randn_like(values)
    params = inspect.signature(core_algos.compute_value_loss).parameters
    extra = {"loss_agg_mode": "token-mean"} if "loss_agg_mode" in params else {}
    theirs, clipfrac = core_algos.compute_value_loss(vpreds, returns, values, mask, 0.5, **extra)
    ours, ours_frac = value_loss(vpreds, returns, values, mask, clip=0.5)
    assert float(ours) == pytest.approx(float(theirs), abs=1e-6)
    assert float(ours_frac) == pytest.approx(float(clipfrac), abs=1e-6)


def test_k1_kl_matches_verl():
    *_, old, new, _ = _tensors(3)
    assert torch.allclose(kl_penalty(new, old, "k1"), core_algos.kl_penalty(new, old, "kl"))
    assert torch.allclose(kl_penalty(new, old, "k3"), core_algos.kl_penalty(new, old, "low_var_kl"))
