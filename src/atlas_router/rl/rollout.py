"""Token-level rollouts: the policy's sampled token ids are kept exactly, observations join with mask 0.

Why tokens and not text: decoding the policy's output and encoding it again can give different ids
(``"</" "search" ">"`` and ``"</search>"`` decode alike), and PPO must score the ids that were actually
sampled. So a trajectory is ``prompt_ids`` + ``response_ids``, where ``response_ids`` interleaves the
policy's sampled ids (mask 1) with the tokenised ``<information>`` blocks of the environment (mask 0),
and every model call saw exactly a prefix of that sequence.

Generation is batched over episodes with one KV cache: each forward feeds every live episode its
pending tokens (one sampled token, or a whole observation), right-padded inside the chunk and masked
out, with explicit positions, so episodes that diverge in length still share a batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from atlas_router.rl.env import Episode, RoutingEnv
from atlas_router.rl.policies import backbone_of, cache_kwarg, head_index, lm_head_of, output_ids
from atlas_router.rl.protocol import STOP_STRINGS
from atlas_router.rl.replay import Task
from atlas_router.rl.rewards import RewardTerms

# (episode index in the batch, ids generated so far in this turn) -> token id to emit, or None to sample
TokenForcer = Callable[[int, list[int]], int | None]
_STOP_TAIL = 16  # tokens decoded to look for a stop string (enough for one spelled letter by letter)


@dataclass(frozen=True)
class SamplingConfig:
    """How the policy samples during a rollout; ``temperature=0`` is greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_turn_tokens: int = 256
    max_response_tokens: int = 1024


@dataclass
class Trajectory:
    """One episode at token level, with the text-level episode and, once scored, its rewards."""

    task: Task
    episode: Episode
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    response_mask: list[int] = field(default_factory=list)
    sample_logprobs: list[float] = field(default_factory=list)
    turn_spans: list[tuple[int, int]] = field(default_factory=list)
    obs_spans: list[tuple[int, int]] = field(default_factory=list)
    rewards: RewardTerms | None = None
    format_problems: list[str] | None = None

    @property
    def num_routes(self) -> int:
        return len(self.episode.outcomes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (the CLI prints it)."""
        return {
            "question": self.task.question,
            "transcript": self.episode.transcript(),
            "answer": self.episode.answer,
            "finish": self.episode.finish,
            "routes": [o.to_dict() for o in self.episode.outcomes],
            "cost": self.episode.cost,
            "rewards": self.rewards.to_dict() if self.rewards else None,
            "format_problems": self.rewards.format_problems if self.rewards else self.format_problems,
            "prompt_tokens": len(self.prompt_ids),
            "response_tokens": len(self.response_ids),
            "policy_tokens": int(sum(self.response_mask)),
        }


def prompt_ids(tokenizer: Any, env: RoutingEnv, question: str) -> list[int]:
    """The chat-templated prompt (system prompt from the live pool, then the question) as ids."""
    text = tokenizer.apply_chat_template(env.messages(question), add_generation_prompt=True, tokenize=False)
    return list(tokenizer.encode(text, add_special_tokens=False))


class RaggedBatch:
    """A KV-cached batch whose rows receive different numbers of new tokens per forward."""

    def __init__(self, model: Any, rows: int, pad_id: int) -> None:
        from transformers import DynamicCache

        self.body = backbone_of(model)
        self.head = lm_head_of(model)
        self.rows_to_ids = output_ids(model)
        self.cache_kw = cache_kwarg(self.body)
        self.cache = DynamicCache()
        self.mask = torch.zeros((rows, 0), dtype=torch.long)
        self.next_pos = torch.zeros(rows, dtype=torch.long)
        self.pad_id = pad_id

    def feed(self, chunks: Sequence[Sequence[int]]) -> torch.Tensor:
        """Append each row's chunk (at least one token per row); next-token logits of every row."""
        rows, width = len(chunks), max(len(c) for c in chunks)
        ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
        new_mask = torch.zeros((rows, width), dtype=torch.long)
        lengths = torch.tensor([len(c) for c in chunks], dtype=torch.long)
        for i, chunk in enumerate(chunks):
            ids[i, : len(chunk)] = torch.tensor(chunk, dtype=torch.long)
            new_mask[i, : len(chunk)] = 1
        offsets = torch.arange(width).unsqueeze(0)
        positions = self.next_pos.unsqueeze(1) + torch.minimum(offsets, (lengths - 1).unsqueeze(1))
        self.mask = torch.cat([self.mask, new_mask], dim=1)
        out = self.body(input_ids=ids, attention_mask=self.mask, position_ids=positions,
                        use_cache=True, **{self.cache_kw: self.cache})
        last = out.last_hidden_state[torch.arange(rows), lengths - 1]
        self.next_pos += lengths
        return self.head(last).float()

    def keep(self, rows: list[int]) -> None:
        """Drop every row not listed (finished episodes stop costing compute)."""
        index = torch.tensor(rows, dtype=torch.long)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        self.next_pos = self.next_pos[index]


def sample_row(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None) -> int:
    if cfg.temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / cfg.temperature, dim=-1)
    if cfg.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < cfg.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


class _Live:
    """Book-keeping of one episode while it is being generated."""

    def __init__(self, index: int, traj: Trajectory) -> None:
        self.index = index
        self.traj = traj
        self.pending: list[int] = list(traj.prompt_ids)
        self.turn: list[int] = []
        self.turn_start = 0


async def rollout(model: Any, tokenizer: Any, env: RoutingEnv, tasks: Sequence[Task],
                  cfg: SamplingConfig = SamplingConfig(), *, generator: torch.Generator | None = None,
                  forcer: TokenForcer | None = None) -> list[Trajectory]:
    """Run one episode per task, batched; returns token-level trajectories (not yet scored).

    ``forcer`` may dictate tokens (constrained decoding; tests use it to script a policy's output).
    """
    was_training = model.training
    model.eval()
    eos_ids = {i for i in (tokenizer.eos_token_id, getattr(model.config, "eos_token_id", None)) if isinstance(i, int)}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(eos_ids), 0)
    trajs = [Trajectory(task=t, episode=env.reset(t.question), prompt_ids=prompt_ids(tokenizer, env, t.question))
             for t in tasks]
    live = [_Live(i, tr) for i, tr in enumerate(trajs)]
    batch = RaggedBatch(model, len(live), pad_id)
    try:
        with torch.inference_mode():
            while live:
                logits = batch.feed([s.pending for s in live])
                ended: list[tuple[_Live, bool]] = []
                logprobs = torch.log_softmax(logits, dim=-1)
                for row, state in enumerate(live):
                    forced = forcer(state.index, state.turn) if forcer is not None else None
                    if forced is None:
                        head_row = sample_row(logits[row], cfg, generator)
                        token = head_row if batch.rows_to_ids is None else int(batch.rows_to_ids[head_row])
                    else:
                        token = int(forced)
                        head_row = int(head_index(model, torch.tensor([token]))[0])
                    tr = state.traj
                    tr.response_ids.append(token)
                    tr.response_mask.append(1)
                    tr.sample_logprobs.append(float(logprobs[row, head_row]))
                    state.turn.append(token)
                    state.pending = [token]
                    tail = tokenizer.decode(state.turn[-_STOP_TAIL:], skip_special_tokens=False)
                    out_of_budget = (len(state.turn) >= cfg.max_turn_tokens
                                     or len(tr.response_ids) >= cfg.max_response_tokens)
                    if token in eos_ids or any(s in tail for s in STOP_STRINGS):
                        ended.append((state, False))
                    elif out_of_budget:
                        ended.append((state, True))
                if not ended:
                    continue
                observations = await asyncio.gather(*(
                    env.step(s.traj.episode, tokenizer.decode(s.turn, skip_special_tokens=True), truncated=trunc)
                    for s, trunc in ended
                ))
                finished: set[int] = set()
                for (state, _), obs in zip(ended, observations):
                    tr = state.traj
                    tr.turn_spans.append((state.turn_start, len(tr.response_ids)))
                    state.turn = []
                    if obs is None:
                        finished.add(state.index)
                        continue
                    obs_ids = list(tokenizer.encode(obs, add_special_tokens=False))
                    if len(tr.response_ids) + len(obs_ids) >= cfg.max_response_tokens:
                        _drop_observation(tr.episode)
                        finished.add(state.index)
                        continue
                    start = len(tr.response_ids)
                    tr.response_ids += obs_ids
                    tr.response_mask += [0] * len(obs_ids)
                    tr.sample_logprobs += [0.0] * len(obs_ids)
                    tr.obs_spans.append((start, len(tr.response_ids)))
                    state.pending = state.pending + obs_ids
                    state.turn_start = len(tr.response_ids)
                if finished:
                    keep = [row for row, s in enumerate(live) if s.index not in finished]
                    live = [live[row] for row in keep]
                    if live:
                        batch.keep(keep)
    finally:
        model.train(was_training)
    return trajs


def _drop_observation(episode: Episode) -> None:
    """The observation did not fit in the response budget: the episode ends at the route."""
    episode.turns[-1].observation = None
    episode.done, episode.finish, episode.answer = True, "length", None
