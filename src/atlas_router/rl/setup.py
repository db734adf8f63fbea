"""Turn a TrainConfig into the parts a run needs: pool, records, tasks, grader, policy, environment."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from atlas_router.config import PoolConfig, load_pool_config
from atlas_router.errors import AtlasError
from atlas_router.rl.config import TrainConfig
from atlas_router.rl.env import ROUTE_LIMIT_NOTE, LiveExecutor, RoutingEnv
from atlas_router.rl.policies import TinySpec, load_policy, load_smollm2, smollm2_tokenizer, tiny_model, vocab_subset
from atlas_router.rl.protocol import ROUTE_SEP, PoolView, information_block, system_prompt
from atlas_router.rl.replay import ReplayExecutor, ReplayTable, Task
from atlas_router.rl.rewards import OutcomeJudge, RewardConfig, grader_judge
from atlas_router.rl.rollout import SamplingConfig
from atlas_router.rl.suite import suite_pool, suite_records
from atlas_router.rl.warm_start import grammar_turns


@dataclass
class RunParts:
    """Everything a training or evaluation run works with."""

    pool_config: PoolConfig
    pool: PoolView
    records: pd.DataFrame
    table: ReplayTable
    train_tasks: list[Task]
    eval_tasks: list[Task]
    judge: OutcomeJudge
    tokenizer: Any
    actor: Any
    env: RoutingEnv
    reward: RewardConfig
    sampling: SamplingConfig
    eval_sampling: SamplingConfig


def load_records(cfg: TrainConfig) -> pd.DataFrame:
    if cfg.data.suite:
        return suite_records()
    from atlas_router.records.store import RecordStore

    df = RecordStore(cfg.data.records or "").load()
    if df.empty:
        raise AtlasError(f"{cfg.data.records}: the records store is empty; collect records first")
    return df


def policy_texts(pool: PoolView, records: pd.DataFrame, max_routes: int) -> list[str]:
    """Every text a policy must write or read, in context, from the TRAINING records and the pool only.

    BPE merges depend on the neighbouring characters (``".</"`` is not ``"</"``), so whole turns are
    listed: the warm start's routes to every recorded pair, information blocks and answers. Held-out
    queries never shape the vocabulary; single printable characters are always in it, so any name a
    grown pool brings can still be spelled.
    """
    texts = [system_prompt(pool, max_routes), ROUTE_LIMIT_NOTE, ROUTE_SEP]
    texts += [m.name for m in pool.models] + [t.name for t in pool.tools]
    texts += [chr(c) for c in range(32, 127)]
    for row in records.to_dict("records"):
        question = str(row.get("query") or "")
        model, tool = str(row.get("model")), str(row.get("tool") or "none")
        answer = str(row.get("answer") or "")
        texts += list(grammar_turns((model, tool), question, answer))
        texts.append(information_block(f"{model}{ROUTE_SEP}{tool}: {row.get('response') or answer}"))
    return texts


def training_records(records: pd.DataFrame, splits: Sequence[str]) -> pd.DataFrame:
    """The rows of the training split(s): all a policy may learn from, its vocabulary included."""
    if "split" not in records.columns:
        return records
    return records[records["split"].astype(str).isin(list(splits))]


def build_policy(cfg: TrainConfig, pool: PoolView, records: pd.DataFrame) -> tuple[Any, Any]:
    p = cfg.policy
    if p.kind == "smollm2":
        return load_smollm2()
    if p.kind == "path":
        tokenizer, actor, _ = load_policy(p.path or "")
        return tokenizer, actor
    tokenizer = smollm2_tokenizer()
    spec = TinySpec(layers=p.tiny.layers, hidden=p.tiny.hidden, heads=p.tiny.heads, intermediate=p.tiny.intermediate)
    train = training_records(records, cfg.data.train_splits)
    vocab = vocab_subset(tokenizer, policy_texts(pool, train, cfg.env.max_routes)) if p.tiny.subset_vocab else None
    return tokenizer, tiny_model(tokenizer, spec, seed=p.seed, vocab=vocab)


def _take(tasks: Sequence[Task], limit: int | None) -> list[Task]:
    return list(tasks[:limit]) if limit else list(tasks)


def build_parts(cfg: TrainConfig, *, tokenizer: Any = None, actor: Any = None) -> RunParts:
    pool_config = load_pool_config(cfg.data.pool) if cfg.data.pool else (suite_pool() if cfg.data.suite else load_pool_config())
    pool = PoolView.from_config(pool_config)
    records = load_records(cfg)
    table = ReplayTable(records)
    train = _take(table.tasks(cfg.data.train_splits), cfg.data.max_train_tasks)
    evals = _take(table.tasks(cfg.data.eval_splits), cfg.data.max_eval_tasks)
    if not train:
        raise AtlasError(f"no training queries in split(s) {', '.join(cfg.data.train_splits)} of the records")
    if tokenizer is None or actor is None:
        tokenizer, actor = build_policy(cfg, pool, records)
    fallback = None
    if not cfg.data.replay or cfg.data.live_fallback:
        from atlas_router.pool.pool import Pool

        fallback = LiveExecutor(Pool(pool_config))
    executor = ReplayExecutor(table, fallback=fallback) if cfg.data.replay else fallback
    assert executor is not None
    env = RoutingEnv(pool, executor, max_routes=cfg.env.max_routes, obs_token_cap=cfg.env.obs_token_cap,
                     tokenizer=tokenizer)
    sampling = SamplingConfig(temperature=cfg.env.temperature, top_p=cfg.env.top_p,
                              max_turn_tokens=cfg.env.max_turn_tokens, max_response_tokens=cfg.env.max_response_tokens)
    eval_sampling = SamplingConfig(temperature=0.0, top_p=1.0, max_turn_tokens=cfg.env.max_turn_tokens,
                                   max_response_tokens=cfg.env.max_response_tokens)
    reward = RewardConfig(gamma=cfg.reward.gamma, xi=cfg.reward.xi, selection_penalty=cfg.reward.selection_penalty,
                          selection_level=cfg.reward.selection_level)
    return RunParts(pool_config, pool, records, table, train, evals, grader_judge,
                    tokenizer, actor, env, reward, sampling, eval_sampling)
