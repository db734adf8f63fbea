"""Pool extension after training: add a pair that is better on one domain; does the unchanged policy use it?

The policy's prompt is generated from the live pool, so a model added after training is listed to it
without retraining. This check adds ``math-lm`` (described as exact at arithmetic, cheap) to the built-in
suite's pool, with records where ``math-lm`` with any tool is right on the arithmetic family at a fraction
of small-lm's cost (and wrong elsewhere), replays the held-out queries with the unchanged policy, and
counts how many queries of each domain it routes to the new model, and its accuracy there.

    python -m atlas_router.rl.extension --policy runs/rl-cpu-replay/policy
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from typing import Any

import pandas as pd

from atlas_router.rl.env import RoutingEnv
from atlas_router.rl.protocol import Entry, PoolView
from atlas_router.rl.replay import ReplayExecutor, ReplayTable
from atlas_router.rl.rewards import RewardConfig, grader_judge, score_episode

NEW_MODEL = Entry("math-lm", "small, very cheap math specialist; exact at arithmetic, weak at everything else.")
NEW_DOMAIN = "arithmetic"


def extended_records(records: pd.DataFrame, new_model: str = NEW_MODEL.name, domain: str = NEW_DOMAIN) -> pd.DataFrame:
    """``records`` plus one row per (query, tool) for ``new_model``: right on ``domain`` at a tenth of
    small-lm's cost, wrong elsewhere."""
    base = records[records["model"] == "small-lm"].copy()
    right = base["domain"].astype(str) == domain
    base["model"] = new_model
    base["score"] = right.astype(float)
    base["answer"] = base["reference"].where(right, "0")
    base["response"] = "Final answer: " + base["answer"].astype(str)
    base["cost"] = base["cost"].astype(float) / 10
    return pd.concat([records, base], ignore_index=True)


async def extension_check(policy_dir: str, *, splits: tuple[str, ...] = ("test",)) -> dict[str, Any]:
    """Routes of the unchanged policy on the held-out queries once ``math-lm`` joins the pool."""
    from atlas_router.rl.inference import cached_policy
    from atlas_router.rl.rollout import SamplingConfig, rollout
    from atlas_router.rl.suite import suite_pool, suite_records

    tokenizer, actor, meta = cached_policy(policy_dir)
    base = PoolView.from_config(suite_pool())
    pool = PoolView(base.models + (NEW_MODEL,), base.tools)
    table = ReplayTable(extended_records(suite_records()))
    env = RoutingEnv(pool, ReplayExecutor(table), max_routes=int(meta.get("max_routes", 4)), tokenizer=tokenizer)
    sampling = SamplingConfig(temperature=0.0, max_turn_tokens=int(meta.get("max_turn_tokens", 96)),
                              max_response_tokens=int(meta.get("max_response_tokens", 256)))
    tasks = table.tasks(list(splits))
    trajs = []
    for i in range(0, len(tasks), 32):
        trajs += await rollout(actor, tokenizer, env, tasks[i : i + 32], sampling)
    to_new: Counter[str] = Counter()
    per_domain: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    for tr in trajs:
        d = tr.task.domain
        per_domain[d] += 1
        if any(o.route is not None and o.route.model == NEW_MODEL.name for o in tr.episode.outcomes):
            to_new[d] += 1
        terms = score_episode(tr.episode, tr.task, pool, grader_judge, table.optimal_pairs(tr.task.question),
                              RewardConfig())
        correct[d] += int(terms.out)
    return {
        "new_model": NEW_MODEL.name, "better_on": NEW_DOMAIN, "queries": len(trajs),
        "routed_to_new_model": {d: to_new[d] for d in sorted(per_domain)},
        "queries_per_domain": dict(sorted(per_domain.items())),
        "accuracy_per_domain": {d: round(correct[d] / per_domain[d], 4) for d in sorted(per_domain)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Pool-extension check of a trained routing policy.")
    parser.add_argument("--policy", required=True, help="policy directory written by atlas train-rl")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(extension_check(args.policy)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
