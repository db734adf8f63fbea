"""The composite reward r = R_fmt + γ·R_out + ξ·R_sel, every term kept for logging.

- R_fmt ∈ {0, -1}: tags intact, every route ``model@@tool: input`` with pool names, at least one
  non-empty think, exactly one answer and it ends the trajectory, one information block per search.
- R_out ∈ {0, 1}: the benchmark's grader on the answer (0 without an answer).
- R_sel ∈ {0, penalty}: the penalty (default -0.15) when a routed pair is not the optimal one for the
  query — best recorded score, then lowest cost — or when nothing was routed. ``level="model"``
  compares only the model. Unknown optimum (no records for the query): 0, logged as such.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from atlas_router.errors import AtlasError
from atlas_router.rl.env import Episode
from atlas_router.rl.protocol import PoolView, RouteError, parse_route, scan_policy_text
from atlas_router.rl.replay import Task

OutcomeJudge = Callable[[Task, str], float]


@dataclass(frozen=True)
class RewardConfig:
    gamma: float = 1.0
    xi: float = 1.0
    selection_penalty: float = -0.15
    selection_level: Literal["pair", "model"] = "pair"


@dataclass
class RewardTerms:
    """The reward of one trajectory, term by term, with the reasons behind each."""

    fmt: float
    out: float
    sel: float
    total: float
    format_problems: list[str] = field(default_factory=list)
    routed: list[tuple[str, str]] = field(default_factory=list)
    optimal: list[tuple[str, str]] | None = None
    grade: float | None = None

    @property
    def format_valid(self) -> bool:
        return self.fmt == 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["format_valid"] = self.format_valid
        return d


def format_problems(episode: Episode, pool: PoolView) -> list[str]:
    """Every way the trajectory breaks the protocol; empty means R_fmt = 0."""
    problems: list[str] = []
    thinks = 0
    answers: list[tuple[int, int, int, bool, str]] = []  # (turn, block index, blocks in turn, closed, body)
    for i, turn in enumerate(episode.turns):
        scan = scan_policy_text(turn.text)
        problems += [f"turn {i + 1}: {p}" for p in scan.problems]
        searches = 0
        for j, block in enumerate(scan.blocks):
            if block.tag == "think" and block.body:
                thinks += 1
            elif block.tag == "answer":
                answers.append((i, j, len(scan.blocks), block.closed, block.body))
            elif block.tag == "search":
                searches += 1
                try:
                    parse_route(block.body, pool)
                except RouteError as err:
                    problems.append(f"turn {i + 1}: bad route: {err}")
        infos = 1 if turn.observation is not None else 0
        if searches != infos:
            problems.append(f"turn {i + 1}: {searches} search block(s) but {infos} information block(s)")
    if thinks == 0:
        problems.append("no non-empty <think> block")
    if len(answers) != 1:
        problems.append(f"{len(answers)} answer blocks; exactly one is needed")
    else:
        turn_i, block_j, n_blocks, closed, body = answers[0]
        if turn_i != len(episode.turns) - 1 or block_j != n_blocks - 1:
            problems.append("the answer is not at the end of the trajectory")
        if not closed:
            problems.append("the answer block is not closed")
        if not body:
            problems.append("the answer is empty")
    return problems


def selection_reward(episode: Episode, optimal: frozenset[tuple[str, str]] | None,
                     cfg: RewardConfig) -> float:
    if optimal is None:
        return 0.0
    routes = [o.route for o in episode.outcomes if o.route is not None]
    if not routes:
        return cfg.selection_penalty
    if cfg.selection_level == "model":
        best_models = {m for m, _ in optimal}
        ok = all(r.model in best_models for r in routes)
    else:
        ok = all((r.model, r.tool) in optimal for r in routes)
    return 0.0 if ok else cfg.selection_penalty


def _reference(text: str) -> Any:
    """Records keep non-string references JSON-encoded; graders want them decoded."""
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def grader_judge(task: Task, prediction: str) -> float:
    """The benchmark's own grader (``atlas_router.data.benchmarks.grade``) on the policy's answer; the
    built-in RL suite's queries use the suite's grader."""
    from atlas_router.data.benchmarks.base import Example
    from atlas_router.data.benchmarks import grade
    from atlas_router.rl.suite import SUITE_BENCHMARK, suite_judge

    if task.benchmark == SUITE_BENCHMARK:
        return suite_judge(task, prediction)

    if not task.benchmark:
        raise AtlasError(f"query {task.query_id or task.question[:40]!r} has no benchmark to grade it with")
    example = Example(id=task.query_id, question=task.question, reference=_reference(task.reference))
    return float(grade(task.benchmark, prediction, example))


def score_episode(episode: Episode, task: Task, pool: PoolView, judge: OutcomeJudge,
                  optimal: frozenset[tuple[str, str]] | None, cfg: RewardConfig = RewardConfig()) -> RewardTerms:
    """All reward terms of a finished episode."""
    problems = format_problems(episode, pool)
    fmt = 0.0 if not problems else -1.0
    grade: float | None = None
    if episode.answer:
        grade = float(judge(task, episode.answer))
    out = 1.0 if grade is not None and grade >= 0.5 else 0.0
    sel = selection_reward(episode, optimal, cfg)
    routed = [(o.route.model, o.route.tool) for o in episode.outcomes if o.route is not None]
    return RewardTerms(
        fmt=fmt, out=out, sel=sel, total=fmt + cfg.gamma * out + cfg.xi * sel, format_problems=problems,
        routed=routed, optimal=sorted(optimal) if optimal is not None else None, grade=grade,
    )
