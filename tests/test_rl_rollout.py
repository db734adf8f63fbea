"""Token-level rollouts: sampled ids kept exactly, observations masked, every step saw a prefix."""

from __future__ import annotations

import pytest
import torch

from atlas_router.rl.env import RoutingEnv
from atlas_router.rl.policies import TinySpec, tiny_model, vocab_subset
from atlas_router.rl.ppo import collate, token_logprobs
from atlas_router.rl.replay import ReplayExecutor
from atlas_router.rl.rollout import SamplingConfig, rollout
from atlas_router.rl.setup import policy_texts
from support.rl import single_thread, smollm2_tokenizer, suite_parts

POOL, TABLE, RECORDS = suite_parts()


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield
TASKS = [t for t in TABLE.tasks(["train"])][:3]


def _spelled(tok, text: str) -> list[int]:
    """``text`` one character per token: the same string, not the tokenizer's ids for it."""
    return [i for ch in text for i in tok.encode(ch, add_special_tokens=False)]


def _script(turns_by_episode: dict[int, list[list[int]]]):
    """A forcer that emits each episode's scripted turns, then lets the model sample."""
    turn_no: dict[int, int] = {}

    def forcer(episode: int, turn: list[int]):
        script = turns_by_episode.get(episode)
        if script is None:
            return None
        if not turn:
            turn_no[episode] = turn_no.get(episode, -1) + 1
        k = turn_no[episode]
        if k >= len(script) or len(turn) >= len(script[k]):
            return None
        return script[k][len(turn)]

    return forcer


def _check_recomputed(model, trajs, tol=2e-4):
    batch = collate([t.prompt_ids for t in trajs], [t.response_ids for t in trajs], [t.response_mask for t in trajs],
                    pad_id=0)
    with torch.no_grad():
        logp, _ = token_logprobs(model, batch)
    for i, t in enumerate(trajs):
        n = len(t.response_ids)
        got = logp[i, :n]
        want = torch.tensor(t.sample_logprobs)
        m = torch.tensor(t.response_mask, dtype=torch.bool)
        assert torch.allclose(got[m], want[m], atol=tol), (got[m] - want[m]).abs().max()
        assert torch.all(got[~m] == 0)


def _check_layout(tok, t):
    spans = sorted([(a, b, 1) for a, b in t.turn_spans] + [(a, b, 0) for a, b in t.obs_spans])
    assert spans[0][0] == 0 and spans[-1][1] == len(t.response_ids)
    for (a, b, kind), (c, _, _) in zip(spans, spans[1:]):
        assert b == c  # contiguous: turn, observation, turn, ...
    for a, b, kind in spans:
        assert t.response_mask[a:b] == [kind] * (b - a)
    observations = [turn.observation for turn in t.episode.turns if turn.observation is not None]
    assert len(observations) == len(t.obs_spans)
    for (a, b), obs in zip(t.obs_spans, observations):
        assert t.response_ids[a:b] == tok.encode(obs, add_special_tokens=False)


async def test_sampled_ids_are_kept_exactly_and_observations_are_masked():
    tok = smollm2_tokenizer()
    model = tiny_model(tok, TinySpec(hidden=32, intermediate=64, heads=2), seed=1)
    env = RoutingEnv(POOL, ReplayExecutor(TABLE), tokenizer=tok)
    task = TASKS[0]
    route = f"<search>small-lm@@calculator: {task.question}</search>"
    turn1 = tok.encode("<think>arithmetic</think>", add_special_tokens=False) + _spelled(tok, route)
    turn2 = _spelled(tok, f"<answer>{task.reference}</answer>")
    assert tok.encode(tok.decode(turn1), add_special_tokens=False) != turn1  # re-encoding would change ids
    forcer = _script({0: [turn1, turn2]})
    cfg = SamplingConfig(temperature=1.0, max_turn_tokens=110, max_response_tokens=180)
    trajs = await rollout(model, tok, env, TASKS, cfg, generator=torch.Generator().manual_seed(0), forcer=forcer)
    t = trajs[0]
    (a, b), (c, d) = t.turn_spans
    assert t.response_ids[a:b] == turn1 and t.response_ids[c:d] == turn2
    assert t.episode.routes_used == 1 and t.episode.finish == "answer" and t.episode.answer == task.reference
    out = t.episode.outcomes[0]  # the route spelled letter by letter parses exactly as written
    assert out.error is None and (out.route.model, out.route.tool, out.route.input) == ("small-lm", "calculator", task.question)
    for tr in trajs:
        _check_layout(tok, tr)
        assert tr.prompt_ids == tok.encode(tok.apply_chat_template(env.messages(tr.task.question), tokenize=False,
                                                                    add_generation_prompt=True), add_special_tokens=False)
    # every token, sampled or forced, in any turn of any (ragged) episode, was scored on exactly its prefix
    _check_recomputed(model, trajs)


async def test_subset_vocabulary_policy_speaks_tokenizer_ids_and_keeps_the_prefix_property():
    tok = smollm2_tokenizer()
    vocab = vocab_subset(tok, policy_texts(POOL, RECORDS, 4))
    model = tiny_model(tok, TinySpec(hidden=32, intermediate=64, heads=2), seed=2, vocab=vocab)
    assert len(vocab) < 1000 and model.output_ids.numel() == len(set(vocab) | {tok.unk_token_id})
    env = RoutingEnv(POOL, ReplayExecutor(TABLE), tokenizer=tok)
    trajs = await rollout(model, tok, env, TASKS * 2, SamplingConfig(max_turn_tokens=24, max_response_tokens=120),
                          generator=torch.Generator().manual_seed(3))
    allowed = set(vocab) | {tok.unk_token_id}
    for t in trajs:
        sampled = [i for i, m in zip(t.response_ids, t.response_mask) if m]
        assert sampled and set(sampled) <= allowed
        assert len(t.response_ids) <= 120
        _check_layout(tok, t)
    _check_recomputed(model, trajs)


async def test_an_observation_that_does_not_fit_ends_the_episode():
    tok = smollm2_tokenizer()
    model = tiny_model(tok, TinySpec(hidden=32, intermediate=64, heads=2), seed=1)
    env = RoutingEnv(POOL, ReplayExecutor(TABLE), tokenizer=tok)
    task = TASKS[0]
    turn1 = tok.encode(f"<think>a</think><search>small-lm@@calculator: {task.question}</search>", add_special_tokens=False)
    trajs = await rollout(model, tok, env, [task], SamplingConfig(max_response_tokens=len(turn1) + 5),
                          forcer=_script({0: [turn1]}))
    t = trajs[0]
    assert t.response_ids == turn1 and t.response_mask == [1] * len(turn1) and t.obs_spans == []
    assert t.episode.finish == "length" and t.episode.turns[-1].observation is None


async def test_engine_driven_episode_keeps_generated_ids_and_ends_on_a_policy_token():
    """The loop veRL drives (``run_token_episode``), fed by a real in-process model."""
    from atlas_router.rl.agent_episode import local_generate, run_token_episode

    tok = smollm2_tokenizer()
    vocab = vocab_subset(tok, policy_texts(POOL, RECORDS, 4))
    model = tiny_model(tok, TinySpec(hidden=32, intermediate=64, heads=2), seed=4, vocab=vocab)
    env = RoutingEnv(POOL, ReplayExecutor(TABLE), tokenizer=tok)
    calls: list[tuple[list[int], list[int]]] = []
    inner = local_generate(model, tok, generator=torch.Generator().manual_seed(5))

    async def generate(context, max_tokens):
        ids, lps = await inner(context, max_tokens)
        calls.append((list(context), ids))
        return ids, lps

    # a scripted first turn (forced route) makes sure an observation gets appended
    task = TASKS[0]
    first = tok.encode(f"<think>a</think><search>small-lm@@calculator: {task.question}</search>", add_special_tokens=False)

    async def scripted(context, max_tokens):
        if not calls:
            calls.append((list(context), first))
            return first, None
        return await generate(context, max_tokens)

    ep = await run_token_episode(scripted, tok, env, task.question, max_turn_tokens=20, response_length=120)
    assert len(ep.response_ids) <= 120 and ep.response_mask[-1] == 1
    assert ep.episode.routes_used == 1 and ep.response_ids[: len(first)] == first
    observations = [t.observation for t in ep.episode.turns if t.observation is not None]
    pos = 0
    for context, ids in calls:  # each call saw exactly the prefix so far, and its ids were kept as they came
        assert context == ep.prompt_ids + ep.response_ids[:pos]
        assert ep.response_ids[pos : pos + len(ids)] == ids and set(ep.response_mask[pos : pos + len(ids)]) == {1}
        pos += len(ids)
        if pos < len(ep.response_ids):  # an observation follows this turn
            obs_ids = tok.encode(observations.pop(0), add_special_tokens=False)
            assert ep.response_ids[pos : pos + len(obs_ids)] == obs_ids
            assert set(ep.response_mask[pos : pos + len(obs_ids)]) == {0}
            pos += len(obs_ids)
    assert pos == len(ep.response_ids)
