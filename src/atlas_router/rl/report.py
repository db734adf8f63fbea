"""The held-out report of a training run: every reward term with a 95% interval, beside scripted baselines.

Scripted baselines play the same protocol through the same environment and reward as the policy (one
route, the pair's answer copied), so their rows compare like with like:

- ``random_pair``: a uniformly random pair per query (what the grammar-only warm start imitated);
- ``best_single``: the one pair with the best training-split accuracy (ties: the cheaper), for every query;
- ``domain_best``: per domain, the pair with the best training-split accuracy (the query's domain label
  is given to it: the target a router that recognises domains can reach);
- ``oracle``: each query's optimal pair from its own records (an upper bound, not a router).

Intervals: Wilson's score interval for rates (accuracy, format-valid), the normal interval of the mean
for rewards.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from atlas_router.rl.env import RoutingEnv
from atlas_router.rl.replay import ReplayTable, Task
from atlas_router.rl.rewards import OutcomeJudge, RewardConfig, score_episode
from atlas_router.rl.rollout import Trajectory
from atlas_router.rl.warm_start import grammar_turns

Pair = tuple[str, str]
Z95 = 1.959964


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: Sequence[float], z: float = Z95) -> tuple[float, float]:
    if len(values) < 2:
        return (float("nan"), float("nan"))
    m, sd = statistics.fmean(values), statistics.stdev(values)
    half = z * sd / math.sqrt(len(values))
    return (m - half, m + half)


def row(trajs: Sequence[Trajectory]) -> dict[str, Any]:
    """Mean of every reward term and behaviour, with 95% intervals, over scored trajectories."""
    scored = [t for t in trajs if t.rewards is not None]
    n = len(scored)
    if not n:
        return {"n": 0}
    mean = statistics.fmean
    correct = sum(t.rewards.out for t in scored)
    valid = sum(1.0 for t in scored if t.rewards.format_valid)
    rewards = [t.rewards.total for t in scored]
    out = {
        "n": n,
        "reward": mean(rewards),
        "reward_ci95": list(mean_interval(rewards)),
        "reward_fmt": mean(t.rewards.fmt for t in scored),
        "reward_out": mean(t.rewards.out for t in scored),
        "reward_sel": mean(t.rewards.sel for t in scored),
        "format_valid": valid / n,
        "format_valid_ci95": list(wilson(valid, n)),
        "accuracy": correct / n,
        "accuracy_ci95": list(wilson(correct, n)),
        "routes_per_query": mean(t.num_routes for t in scored),
        "cost_per_query": mean(t.episode.cost for t in scored),
    }
    return {k: (round(v, 4) if isinstance(v, float) else [round(x, 4) for x in v] if isinstance(v, list) else v)
            for k, v in out.items()}


def first_pairs_by_domain(trajs: Sequence[Trajectory]) -> dict[str, dict[str, int]]:
    """How often each pair was the first route, per domain (what the policy learned to choose)."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for t in trajs:
        routes = [o.route for o in t.episode.outcomes if o.route is not None]
        counts[t.task.domain or "-"][f"{routes[0].model}@@{routes[0].tool}" if routes else "(no route)"] += 1
    return {d: dict(c.most_common()) for d, c in sorted(counts.items())}


def pair_accuracy(records: pd.DataFrame) -> pd.DataFrame:
    """Mean score and cost per (domain, model, tool) of graded records."""
    df = records.copy()
    df["tool"] = df["tool"].fillna("none").astype(str)
    df["domain"] = df.get("domain", pd.Series("", index=df.index)).fillna("").astype(str)
    df = df[pd.to_numeric(df["score"], errors="coerce").notna()]
    df["score"] = df["score"].astype(float)
    df["cost"] = pd.to_numeric(df.get("cost", 0.0), errors="coerce").fillna(0.0)
    return df


def _best(df: pd.DataFrame) -> Pair:
    stats = df.groupby(["model", "tool"]).agg(score=("score", "mean"), cost=("cost", "mean")).reset_index()
    top = stats.sort_values(["score", "cost", "model", "tool"], ascending=[False, True, True, True]).iloc[0]
    return (str(top["model"]), str(top["tool"]))


def best_single_pair(train_records: pd.DataFrame) -> Pair:
    """The pair with the best training accuracy (then the cheaper, then by name)."""
    return _best(pair_accuracy(train_records))


def domain_best_pairs(train_records: pd.DataFrame) -> dict[str, Pair]:
    """Per domain, the pair with the best training accuracy."""
    df = pair_accuracy(train_records)
    return {str(d): _best(g) for d, g in df.groupby("domain")}


async def scripted_run(env: RoutingEnv, table: ReplayTable, tasks: Sequence[Task], choose: Callable[[Task], Pair],
                       judge: OutcomeJudge, reward: RewardConfig) -> list[Trajectory]:
    """Each task played by a script: route once to ``choose(task)``, then answer with what came back."""
    trajs: list[Trajectory] = []
    for task in tasks:
        pair = choose(task)
        episode = env.reset(task.question)
        first, _ = grammar_turns(pair, task.question, "")
        await env.step(episode, first)
        outcome = episode.turns[-1].outcome
        answer = (outcome.answer.strip() if outcome and not outcome.error else "") or "unknown"
        await env.step(episode, grammar_turns(pair, task.question, answer)[1])
        tr = Trajectory(task=task, episode=episode, prompt_ids=[])
        tr.rewards = score_episode(episode, task, env.pool, judge, table.optimal_pairs(task.question), reward)
        trajs.append(tr)
    return trajs


async def baselines(env: RoutingEnv, table: ReplayTable, train_records: pd.DataFrame, tasks: Sequence[Task],
                    judge: OutcomeJudge, reward: RewardConfig, seed: int = 0) -> dict[str, dict[str, Any]]:
    """The scripted baseline rows on ``tasks`` (pairs chosen from ``train_records`` only)."""
    single = best_single_pair(train_records)
    per_domain = domain_best_pairs(train_records)
    rng = random.Random(seed)
    pairs = env.pool.pairs()
    scripts: dict[str, tuple[Callable[[Task], Pair], dict[str, Any]]] = {
        "random_pair": (lambda t: rng.choice(pairs), {}),
        "best_single": (lambda t: single, {"pair": "@@".join(single)}),
        "domain_best": (lambda t: per_domain.get(t.domain, single),
                        {"pairs": {d: "@@".join(p) for d, p in sorted(per_domain.items())}}),
        "oracle": (lambda t: sorted(table.optimal_pairs(t.question) or [single])[0], {}),
    }
    out: dict[str, dict[str, Any]] = {}
    for name, (choose, extra) in scripts.items():
        out[name] = {**row(await scripted_run(env, table, tasks, choose, judge, reward)), **extra}
    return out


def gap_closed(warm: float, after: float, target: float) -> float | None:
    """Share of the gap from the warm start to ``target`` that training closed (None without a gap)."""
    if target - warm <= 1e-12:
        return None
    return round((after - warm) / (target - warm), 4)


COLUMNS = ("reward", "reward_fmt", "reward_out", "reward_sel", "format_valid", "accuracy", "routes_per_query")


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table: policy rows, then the scripted baselines."""
    names = [n for n in ("before", "warm_start", "after", "random_pair", "best_single", "domain_best", "oracle")
             if n in report]
    head = (f"{'':>12} {'reward [95% CI]':>24} {'R_fmt':>6} {'R_out':>6} {'R_sel':>7} {'fmt-valid':>9} "
            f"{'accuracy [95% CI]':>24} {'routes/q':>8}")
    lines = [f"held-out queries: {report.get('held_out_queries')}", head]
    for name in names:
        r = report[name]
        if not r.get("n"):
            continue
        rc, ac = r["reward_ci95"], r["accuracy_ci95"]
        lines.append(
            f"{name:>12} {r['reward']:+7.3f} [{rc[0]:+.3f}, {rc[1]:+.3f}] {r['reward_fmt']:+6.2f} {r['reward_out']:6.3f} "
            f"{r['reward_sel']:+7.3f} {r['format_valid']:9.3f} {r['accuracy']:7.3f} [{ac[0]:.3f}, {ac[1]:.3f}] "
            f"{r['routes_per_query']:8.2f}")
    if report.get("held_out_by_step"):
        lines.append("held-out accuracy during PPO (step: accuracy): "
                     + ", ".join(f"{r['step']}: {r['accuracy']:.3f}" for r in report["held_out_by_step"]))
    if report.get("gap_closed") is not None:
        lines.append(f"gap from warm start to domain_best closed by PPO: {report['gap_closed']:.3f}")
    return "\n".join(lines)
