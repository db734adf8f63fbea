"""One routing episode over any token generator: the loop that engines such as veRL drive.

The local trainer batches episodes itself (``rollout``); an external engine instead offers "generate
from these prompt ids" (veRL's generation servers). ``run_token_episode`` is the episode written against
that interface: it keeps the generated ids exactly, runs the environment after each turn, appends the
observation's ids with mask 0, and ends on a policy token, never an observation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from atlas_router.rl.env import Episode, RoutingEnv
from atlas_router.rl.protocol import STOP_STRINGS

# (context ids, max new tokens) -> (generated ids, their log-probs or None); generation stops at a
# stop string (``protocol.STOP_STRINGS``) or EOS
Generate = Callable[[list[int], int], Awaitable[tuple[list[int], list[float] | None]]]


@dataclass
class TokenEpisode:
    prompt_ids: list[int]
    episode: Episode
    response_ids: list[int] = field(default_factory=list)
    response_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turns: int = 0


async def run_token_episode(generate: Generate, tokenizer: Any, env: RoutingEnv, question: str, *,
                            max_turn_tokens: int, response_length: int) -> TokenEpisode:
    """Play one episode; the response never exceeds ``response_length`` tokens."""
    text_prompt = tokenizer.apply_chat_template(env.messages(question), add_generation_prompt=True, tokenize=False)
    out = TokenEpisode(prompt_ids=list(tokenizer.encode(text_prompt, add_special_tokens=False)),
                       episode=env.reset(question))
    while not out.episode.done:
        budget = response_length - len(out.response_ids)
        if budget <= 0:
            await env.step(out.episode, "", truncated=True)
            break
        limit = min(max_turn_tokens, budget)
        ids, lps = await generate(out.prompt_ids + out.response_ids, limit)
        out.turns += 1
        out.response_ids += ids
        out.response_mask += [1] * len(ids)
        out.logprobs += list(lps) if lps is not None else [0.0] * len(ids)
        text = tokenizer.decode(ids, skip_special_tokens=True)
        truncated = len(ids) >= limit and not any(s in text for s in STOP_STRINGS)
        obs = await env.step(out.episode, text, truncated=truncated)
        if obs is None:
            break
        obs_ids = list(tokenizer.encode(obs, add_special_tokens=False))
        if len(out.response_ids) + len(obs_ids) >= response_length:
            # the last token must be the policy's, or its reward could not reach earlier tokens
            out.episode.turns[-1].observation = None
            out.episode.done, out.episode.finish, out.episode.answer = True, "length", None
            break
        out.response_ids += obs_ids
        out.response_mask += [0] * len(obs_ids)
        out.logprobs += [0.0] * len(obs_ids)
    return out


def local_generate(model: Any, tokenizer: Any, *, temperature: float = 1.0,
                   generator: torch.Generator | None = None) -> Generate:
    """A ``Generate`` over an in-process causal LM (what a generation server does, one request at a time)."""
    from atlas_router.rl.rollout import RaggedBatch, SamplingConfig, sample_row

    eos = tokenizer.eos_token_id
    cfg = SamplingConfig(temperature=temperature)

    async def generate(context: list[int], max_tokens: int) -> tuple[list[int], list[float]]:
        batch = RaggedBatch(model, 1, tokenizer.pad_token_id or 0)
        ids: list[int] = []
        lps: list[float] = []
        pending = list(context)
        with torch.inference_mode():
            while len(ids) < max_tokens:
                logits = batch.feed([pending])[0]
                row = sample_row(logits, cfg, generator)
                token = row if batch.rows_to_ids is None else int(batch.rows_to_ids[row])
                ids.append(token)
                lps.append(float(torch.log_softmax(logits, dim=-1)[row]))
                pending = [token]
                tail = tokenizer.decode(ids[-16:], skip_special_tokens=False)
                if token == eos or any(s in tail for s in STOP_STRINGS):
                    break
        return ids, lps

    return generate
