"""PPO pieces on padded token tensors: batching, log-probs, values, KL, GAE and the three losses.

Conventions (the same as veRL's, so the two can be compared number for number): response tensors are
``[batch, response_len]``; ``mask`` is 1 on tokens the policy sampled and 0 on observation and padding
tokens; every loss and statistic is a mask-weighted token mean; GAE walks only the sampled tokens, so an
observation between two turns neither earns nor passes on reward (its value is skipped, not zeroed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from atlas_router.rl.policies import ValueModel, backbone_of, head_index, lm_head_of


@dataclass
class TokenBatch:
    """Trajectories padded for one forward: sequences right-padded to a common length."""

    input_ids: torch.Tensor       # [B, T] prompt + response, right-padded
    attention_mask: torch.Tensor  # [B, T]
    prompt_lens: torch.Tensor     # [B]
    responses: torch.Tensor       # [B, R] response ids, right-padded
    mask: torch.Tensor            # [B, R] 1 = sampled by the policy

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def select(self, rows: Sequence[int] | torch.Tensor) -> "TokenBatch":
        idx = torch.as_tensor(rows, dtype=torch.long)
        return TokenBatch(self.input_ids[idx], self.attention_mask[idx], self.prompt_lens[idx],
                          self.responses[idx], self.mask[idx])

    def source_index(self) -> torch.Tensor:
        """[B, R]: the position whose output predicts each response token (the one just before it)."""
        r = self.responses.shape[1]
        idx = self.prompt_lens.unsqueeze(1) + torch.arange(r).unsqueeze(0) - 1
        return idx.clamp(0, self.input_ids.shape[1] - 1)


def collate(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
            masks: Sequence[Sequence[int]], pad_id: int) -> TokenBatch:
    """Pad prompt+response sequences on the right; response tensors keep their own alignment."""
    b = len(prompts)
    total = max(len(p) + len(r) for p, r in zip(prompts, responses))
    rlen = max(1, max(len(r) for r in responses))
    input_ids = torch.full((b, total), pad_id, dtype=torch.long)
    attention = torch.zeros((b, total), dtype=torch.long)
    resp = torch.full((b, rlen), pad_id, dtype=torch.long)
    mask = torch.zeros((b, rlen), dtype=torch.float32)
    for i, (p, r, m) in enumerate(zip(prompts, responses, masks)):
        seq = list(p) + list(r)
        input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[i, : len(seq)] = 1
        if r:
            resp[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
            mask[i, : len(m)] = torch.tensor(list(m), dtype=torch.float32)
    plens = torch.tensor([len(p) for p in prompts], dtype=torch.long)
    return TokenBatch(input_ids, attention, plens, resp, mask)


def shared_prefix_len(batch: TokenBatch) -> int:
    """Length of the prefix every row shares (the pool-generated system prompt), kept short of each
    row's last prompt token so that every response token is predicted from past the prefix."""
    ids = batch.input_ids
    if ids.shape[0] < 2:
        return 0
    limit = int(batch.prompt_lens.min()) - 1
    same = (ids[:, :limit] == ids[:1, :limit]).all(dim=0)
    differ = torch.nonzero(~same)
    return int(differ[0, 0]) if differ.numel() else max(limit, 0)


def body_hidden(body: Any, batch: TokenBatch) -> tuple[torch.Tensor, int]:
    """(hidden states from position ``offset`` on, offset): the shared prefix is computed once.

    Every trajectory of a batch starts with the same system prompt (it lists the whole pool), often
    most of the sequence; running it once for the batch and handing its KV cache to every row is
    exact, gradients included, and saves most of the compute on short trajectories.
    """
    p = shared_prefix_len(batch)
    if p < 8:
        return body(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state, 0
    from transformers import DynamicCache

    from atlas_router.rl.policies import cache_kwarg

    b, t = batch.input_ids.shape
    cache_kw = cache_kwarg(body)
    cache = DynamicCache()
    body(input_ids=batch.input_ids[:1, :p], attention_mask=batch.attention_mask[:1, :p], use_cache=True,
         **{cache_kw: cache})
    cache.batch_repeat_interleave(b)
    positions = torch.arange(p, t).unsqueeze(0).expand(b, -1)
    out = body(input_ids=batch.input_ids[:, p:], attention_mask=batch.attention_mask, position_ids=positions,
               use_cache=True, **{cache_kw: cache})
    return out.last_hidden_state, p


def _gather_rows(hidden: torch.Tensor, batch: TokenBatch, offset: int = 0) -> torch.Tensor:
    idx = batch.source_index() - offset
    return torch.gather(hidden, 1, idx.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))


def token_logprobs(model: Any, batch: TokenBatch, *, with_entropy: bool = False,
                   temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob (and entropy) of every sampled response token; zeros where ``mask`` is 0.

    Only the sampled positions go through the LM head: with a 49k vocabulary the head, not the
    transformer, is most of the cost, and observation tokens need no logits at all.
    """
    hidden, offset = body_hidden(backbone_of(model), batch)
    sel = batch.mask > 0
    picked = _gather_rows(hidden, batch, offset)[sel]
    logits = lm_head_of(model)(picked).float()
    if temperature != 1.0:
        logits = logits / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = torch.zeros_like(batch.mask)
    targets = head_index(model, batch.responses[sel])
    logp[sel] = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = None
    if with_entropy:
        entropy = torch.zeros_like(batch.mask)
        entropy[sel] = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def token_values(critic: ValueModel, batch: TokenBatch) -> torch.Tensor:
    """V(state before each response token); zeros where ``mask`` is 0."""
    hidden, offset = body_hidden(critic.backbone, batch)
    values = critic.head(hidden).squeeze(-1)
    picked = torch.gather(values, 1, batch.source_index() - offset)
    return picked * batch.mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero mean, unit (unbiased) variance over the masked entries."""
    n = mask.sum()
    mean = (x * mask).sum() / n.clamp(min=1.0)
    var = (((x - mean) * mask) ** 2).sum() / n.clamp(min=1.0)
    if n > 1:
        var = var * n / (n - 1)
    return (x - mean) * torch.rsqrt(var + eps)


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token KL estimate between the sampling policy and the reference (k1: the log-ratio)."""
    if kind in ("k1", "kl"):
        return logp - ref_logp
    if kind in ("k2", "mse"):
        return 0.5 * (logp - ref_logp) ** 2
    if kind in ("k3", "low_var_kl"):
        d = torch.clamp(ref_logp - logp, -20, 20)
        return torch.clamp(d.exp() - d - 1, -10, 10)
    if kind == "abs":
        return (logp - ref_logp).abs()
    raise ValueError(f"unknown KL estimator '{kind}' (k1, k2, k3, abs)")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """[B]: index of the last sampled token of each row (0 for a row without any)."""
    positions = torch.arange(mask.shape[1]).unsqueeze(0).expand_as(mask)
    return torch.where(mask > 0, positions, torch.zeros_like(positions)).max(dim=1).values


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """Per-token rewards: ``-kl_coef·KL`` on every sampled token, the episode score on the last one."""
    rewards = -kl_coef * kl * mask
    rows = torch.arange(mask.shape[0])
    rewards[rows, last_token_index(mask)] += scores
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 1.0, whiten: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns) by GAE over the sampled tokens of each row only.

    Each row's sampled tokens are pulled out in order, GAE runs on that compact sequence (the value
    after the last one is 0), and the results go back to their positions; observation and padding
    positions get 0. Advantages are then whitened over the mask.
    """
    advantages = torch.zeros_like(rewards)
    returns = torch.zeros_like(rewards)
    with torch.no_grad():
        for i in range(rewards.shape[0]):
            idx = torch.nonzero(mask[i] > 0).squeeze(-1)
            if idx.numel() == 0:
                continue
            r, v = rewards[i, idx], values[i, idx]
            next_v = torch.cat([v[1:], v.new_zeros(1)])
            delta = r + gamma * next_v - v
            adv = torch.zeros_like(delta)
            running = delta.new_zeros(())
            for t in range(delta.shape[0] - 1, -1, -1):
                running = delta[t] + gamma * lam * running
                adv[t] = running
            advantages[i, idx] = adv
            returns[i, idx] = adv + v
        if whiten:
            advantages = masked_whiten(advantages, mask) * mask
    return advantages, returns


def group_advantages(rewards: torch.Tensor, mask: torch.Tensor, groups: Sequence[int],
                     eps: float = 1e-6) -> torch.Tensor:
    """GRPO's outcome advantage: each row's summed token reward, minus the mean of the rows of its group
    (the same question), over their standard deviation, on every sampled token. A group whose episodes all
    score alike gets 0: it says nothing about which choice is better. A group of one keeps its score
    (veRL's convention: mean 0, std 1; the trainer never makes one)."""
    scores = (rewards * mask).sum(dim=1)
    ids = torch.tensor(list(groups))
    adv = torch.zeros_like(scores)
    with torch.no_grad():
        for g in ids.unique():
            rows = ids == g
            s = scores[rows]
            if s.numel() == 1:
                adv[rows] = s / (1.0 + eps)
            else:
                adv[rows] = (s - s.mean()) / (s.std() + eps)
    return adv.unsqueeze(1) * mask


@dataclass
class PolicyLoss:
    loss: torch.Tensor
    clipfrac: torch.Tensor
    approx_kl: torch.Tensor
    clipfrac_lower: torch.Tensor


def policy_loss(old_logp: torch.Tensor, logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip: float = 0.2, clip_high: float | None = None, dual_clip: float = 3.0,
                denominator: torch.Tensor | float | None = None) -> PolicyLoss:
    """Clipped PPO surrogate with dual clipping for negative advantages, token-mean over the mask.

    ``denominator`` (token count) lets micro-batches add up to the token mean of a whole mini-batch.
    """
    hi = clip if clip_high is None else clip_high
    log_ratio = torch.clamp(logp - old_logp, -20.0, 20.0)
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + hi)
    pessimistic = torch.maximum(unclipped, clipped)
    floor = -advantages * dual_clip
    dual = torch.minimum(floor, pessimistic)
    per_token = torch.where(advantages < 0, dual, pessimistic)
    denom = mask.sum().clamp(min=1.0) if denominator is None else denominator
    return PolicyLoss(
        loss=(per_token * mask).sum() / denom,
        clipfrac=masked_mean((clipped > unclipped).float(), mask),
        approx_kl=masked_mean(-log_ratio, mask),
        clipfrac_lower=masked_mean(((pessimistic > floor) & (advantages < 0)).float(), mask),
    )


def value_loss(vpreds: torch.Tensor, returns: torch.Tensor, old_values: torch.Tensor, mask: torch.Tensor,
               clip: float = 0.5, denominator: torch.Tensor | float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss ``0.5·max((v-R)², (clip(v, v_old±c)-R)²)``, token-mean over the mask."""
    clipped_v = old_values + torch.clamp(vpreds - old_values, -clip, clip)
    a = (vpreds - returns) ** 2
    b = (clipped_v - returns) ** 2
    denom = mask.sum().clamp(min=1.0) if denominator is None else denominator
    loss = 0.5 * (torch.maximum(a, b) * mask).sum() / denom
    return loss, masked_mean((b > a).float(), mask)


def sft_loss(model: Any, batch: TokenBatch) -> torch.Tensor:
    """Cross-entropy on the masked response tokens (the supervised warm start)."""
    hidden, offset = body_hidden(backbone_of(model), batch)
    sel = batch.mask > 0
    logits = lm_head_of(model)(_gather_rows(hidden, batch, offset)[sel]).float()
    return F.cross_entropy(logits, head_index(model, batch.responses[sel]))
