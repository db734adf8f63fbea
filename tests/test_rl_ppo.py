"""PPO arithmetic: GAE over sampled tokens only, clipped losses, KL, and the response mask everywhere."""

from __future__ import annotations

import pytest
import torch

from atlas_router.rl.ppo import (
    gae,
    group_advantages,
    kl_penalty,
    last_token_index,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)


def _textbook_gae(r: list[float], v: list[float], gamma: float, lam: float) -> list[float]:
    adv, running = [0.0] * len(r), 0.0
    for t in reversed(range(len(r))):
        nxt = v[t + 1] if t + 1 < len(r) else 0.0
        running = r[t] + gamma * nxt - v[t] + gamma * lam * running
        adv[t] = running
    return adv


def _random_case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    b, n = 4, 24
    mask = torch.ones(b, n)
    mask[:, 5:9] = 0      # an observation
    mask[1, 14:20] = 0    # another, in one row
    mask[2, 18:] = 0      # padding
    mask[3, 2:4] = 0
    return torch.randn(b, n, generator=g), torch.randn(b, n, generator=g), mask


@pytest.mark.parametrize("gamma, lam", [(1.0, 1.0), (0.9, 0.8)])
def test_gae_equals_textbook_gae_on_sampled_tokens_alone(gamma, lam):
    rewards, values, mask = _random_case()
    adv, ret = gae(rewards, values, mask, gamma, lam, whiten=False)
    for i in range(mask.shape[0]):
        idx = torch.nonzero(mask[i]).squeeze(-1)
        want = _textbook_gae(rewards[i, idx].tolist(), values[i, idx].tolist(), gamma, lam)
        assert torch.allclose(adv[i, idx], torch.tensor(want), atol=1e-5)
        assert torch.allclose(ret[i, idx], adv[i, idx] + values[i, idx], atol=1e-6)
        assert torch.all(adv[i][mask[i] == 0] == 0)


def test_gae_with_gamma_lambda_one_is_reward_to_go_minus_value_across_observations():
    rewards, values, mask = _random_case(1)
    adv, _ = gae(rewards, values, mask, 1.0, 1.0, whiten=False)
    for i in range(mask.shape[0]):
        idx = torch.nonzero(mask[i]).squeeze(-1)
        togo = torch.flip(torch.cumsum(torch.flip(rewards[i, idx], [0]), 0), [0])
        assert torch.allclose(adv[i, idx], togo - values[i, idx], atol=1e-5)


def test_observation_positions_neither_earn_nor_pass_on_anything():
    rewards, values, mask = _random_case(2)
    adv, ret = gae(rewards, values, mask, 1.0, 0.95)
    noisy_r, noisy_v = rewards.clone(), values.clone()
    noisy_r[mask == 0] = 1e3
    noisy_v[mask == 0] = -1e3
    adv2, ret2 = gae(noisy_r, noisy_v, mask, 1.0, 0.95)
    assert torch.allclose(adv, adv2) and torch.allclose(ret * mask, ret2 * mask)
    white = masked_whiten(adv, mask)
    sel = white[mask > 0]
    assert abs(float(sel.mean())) < 1e-5 and abs(float(sel.std()) - 1.0) < 1e-4


def test_kl_in_the_reward_and_the_score_on_the_last_sampled_token():
    logp = torch.tensor([[-1.0, -2.0, 0.0, -0.5, 0.0]])
    ref = torch.tensor([[-1.5, -2.0, 0.0, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0, 0.0]])  # token, token, observation, token, padding
    kl = kl_penalty(logp, ref, "k1") * mask
    assert torch.allclose(kl, torch.tensor([[0.5, 0.0, 0.0, 0.5, 0.0]]))
    r = token_rewards(torch.tensor([2.0]), kl, mask, kl_coef=0.001)
    assert int(last_token_index(mask)[0]) == 3
    assert torch.allclose(r, torch.tensor([[-0.0005, 0.0, 0.0, 2.0 - 0.0005, 0.0]]))
    assert float(kl_penalty(torch.tensor(0.0), torch.tensor(0.0), "k3")) == 0.0


def test_policy_loss_clips_and_dual_clips_and_ignores_masked_tokens():
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    adv = torch.tensor([[1.0, 1.0, -1.0, 50.0]])
    old = torch.zeros(1, 4)
    same = policy_loss(old, old.clone(), adv, mask)
    assert float(same.loss) == pytest.approx(-(1 + 1 - 1) / 3) and float(same.clipfrac) == 0.0
    import math

    new = torch.tensor([[math.log(1.5), math.log(0.5), math.log(5.0), 9.0]])
    out = policy_loss(old, new, adv, mask, clip=0.2, dual_clip=3.0)
    # token 1: ratio 1.5, A=1 -> clipped to 1.2; token 2: ratio 0.5, A=1 -> 0.5 (pessimistic);
    # token 3: ratio 5, A=-1 -> max(5, 1.2) = 5, dual clip caps at 3; token 4 is masked out
    assert float(out.loss) == pytest.approx((-1.2 - 0.5 + 3.0) / 3, abs=1e-5)
    assert float(out.clipfrac) == pytest.approx(1 / 3)
    assert float(out.clipfrac_lower) == pytest.approx(1 / 3)
    moved = new.clone()
    moved[0, 3] = -30.0
    assert float(policy_loss(old, moved, adv, mask).loss) == pytest.approx(float(out.loss))


def test_value_loss_is_clipped_around_the_old_values_over_the_mask():
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    old = torch.tensor([[0.0, 0.0, 0.0]])
    returns = torch.tensor([[1.0, 0.2, 7.0]])
    vpred = torch.tensor([[2.0, 0.1, -9.0]])
    loss, clipfrac = value_loss(vpred, returns, old, mask, clip=0.5)
    # token 1: unclipped (2-1)^2 = 1, clipped (0.5-1)^2 = .25 -> 1; token 2: (0.1-0.2)^2 both -> .01
    assert float(loss) == pytest.approx(0.5 * (1.0 + 0.01) / 2)
    far = torch.tensor([[2.0, 3.0, -9.0]])  # token 2 beyond the clip: clipped (0.5-0.2)^2 < (3-0.2)^2
    loss2, frac2 = value_loss(far, returns, old, mask, clip=0.5)
    assert float(loss2) == pytest.approx(0.5 * (1.0 + 2.8**2) / 2) and float(frac2) == 0.0
    worse = torch.tensor([[0.0, -2.0, 0.0]])  # moving away: the clipped error is larger and wins
    _, frac3 = value_loss(worse, returns, torch.tensor([[0.0, -2.5, 0.0]]), mask, clip=0.3)
    assert float(frac3) == pytest.approx(0.5)


def test_group_advantages_compare_episodes_of_the_same_question_only():
    mask = torch.ones(6, 5)
    mask[0, 1:3] = 0  # an observation
    mask[4, 3:] = 0   # padding
    scores = [1.0, 0.0, 0.0, 0.8, 0.8, 0.8]  # question A: one right of three; question B: all alike
    rewards = token_rewards(torch.tensor(scores), torch.zeros(6, 5), mask, kl_coef=0.0)
    adv = group_advantages(rewards, mask, [0, 0, 0, 1, 1, 1])
    a = torch.tensor(scores[:3])
    expected = (a - a.mean()) / (a.std() + 1e-6)
    for row in range(3):
        assert torch.allclose(adv[row][mask[row] > 0], expected[row].expand(int(mask[row].sum())), atol=1e-5)
    assert adv[0, 0] > 0 > adv[1, 0] and float(adv[1, 0]) == pytest.approx(float(adv[2, 0]))
    assert torch.all(adv[3:] == 0), "a group whose episodes all score alike says nothing"
    assert torch.all(adv[mask == 0] == 0)


def test_group_advantages_ignore_the_same_score_on_another_question():
    """The same episode score counts for or against a choice only against its own question's other episodes."""
    mask = torch.ones(4, 3)
    rewards = token_rewards(torch.tensor([0.5, 0.0, 0.5, 1.0]), torch.zeros(4, 3), mask, kl_coef=0.0)
    adv = group_advantages(rewards, mask, [0, 0, 1, 1])
    assert adv[0, 0] > 0 > adv[2, 0]
