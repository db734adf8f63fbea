"""Collection runs: every pair of a pool on every query of a benchmark, written to a record store.

Resumable by construction: the store already knows which (query, model, tool) keys it holds, so a rerun
after a kill (even SIGKILL) only runs the missing ones. Records are flushed in small batches, each batch
one atomic part file, so a kill loses at most the batch in flight and never leaves a partial or duplicate
row. With ``ray_address`` the same jobs run as Ray tasks on a cluster; the driver still owns the store.

Grading: by default each reply is graded against the benchmark's gold answer as it arrives. With a
label-free grader (an LLM judge, a reward model, a reference pair; ``data.graders.judge``) a query's
replies are graded together once every pair has answered, and its rows are written together, so a kill
never leaves a query half graded; replies already stored give a pairwise judge or a reference pair its
context on resume. Every row says who graded it (``grader``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from atlas_router.config import PoolConfig
from atlas_router.data.benchmarks.base import Benchmark, Example
from atlas_router.data.graders.judge import Grade, LabelFreeGrader
from atlas_router.execution.record import PairRecord
from atlas_router.execution.runner import PairJob, run_pairs
from atlas_router.pool.pool import Pool
from atlas_router.records.schema import SCHEMA_VERSION, query_key
from atlas_router.records.store import RecordStore

FLUSH_EVERY = 16
FLUSH_SECONDS = 2.0


@dataclass
class CollectPlan:
    """What a run will do: the jobs still missing from the store, and how many were there already."""

    jobs: list[PairJob]
    done_before: int
    total: int


@dataclass
class CollectSummary:
    added: int = 0
    skipped: int = 0
    errors: int = 0
    seconds: float = 0.0
    per_pair: list[dict[str, Any]] = field(default_factory=list)


def plan(benchmark: Benchmark, examples: Sequence[Example], pairs: Sequence[tuple[str, str]], store: RecordStore) -> CollectPlan:
    """The (example, pair) jobs whose records the store does not hold yet."""
    have = store.keys()
    jobs = []
    for ex in examples:
        qid = query_key(benchmark.name, benchmark.format_prompt(ex))
        for model, tool in pairs:
            if (qid, model, tool) not in have:
                jobs.append(PairJob(model, tool, benchmark.format_prompt(ex), key=ex,
                                    images=tuple(ex.meta.get("images") or ())))  # image benchmarks
    total = len(examples) * len(pairs)
    return CollectPlan(jobs=jobs, done_before=total - len(jobs), total=total)


def to_row(benchmark: Benchmark, example: Example, record: PairRecord, split: str,
           grade: Grade | None = None) -> dict[str, Any]:
    """A store row from a pair record, graded by ``grade`` or else by the gold answer; a failed run scores 0
    and keeps its error."""
    if grade is not None:
        score, grader = (0.0 if record.error else grade.score), grade.grader
    else:
        score = 0.0 if record.error else float(benchmark.grade(record.response, example))
        grader = f"gold:{benchmark.grader}"
    reference = example.reference if isinstance(example.reference, str) else json.dumps(example.reference, ensure_ascii=False, default=str)
    return {
        "query_id": query_key(benchmark.name, record.question),
        "benchmark": benchmark.name,
        "split": split,
        "domain": benchmark.domain,
        "query": record.question,
        "reference": reference,
        "model": record.model,
        "tool": record.tool,
        "answer": record.answer,
        "response": record.response,
        "score": score,
        "cost": record.cost,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "latency_s": record.latency_s,
        "calls": record.calls,
        "error": record.error or "",
        "source": "collect",
        "grader": grader,
        "schema_version": SCHEMA_VERSION,
    }


class _Flusher:
    """Buffers graded rows and appends them to the store in small atomic batches."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store
        self.rows: list[dict[str, Any]] = []
        self.last = time.monotonic()
        self.added = 0

    def add(self, *rows: dict[str, Any]) -> None:
        """Rows given together land in the same part file."""
        self.rows.extend(rows)
        if len(self.rows) >= FLUSH_EVERY or time.monotonic() - self.last > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.added += self.store.append(self.rows)
            self.rows = []
        self.last = time.monotonic()


async def collect_local(pool: Pool, benchmark: Benchmark, the_plan: CollectPlan, store: RecordStore, split: str,
                        concurrency: int, on_progress: Callable[[PairRecord], None] | None = None) -> int:
    """Run the plan in this process; returns rows added."""
    flusher = _Flusher(store)

    def done(job: PairJob, record: PairRecord) -> None:
        flusher.add(to_row(benchmark, job.key, record, split))
        if on_progress:
            on_progress(record)

    try:
        await run_pairs(pool, the_plan.jobs, concurrency=concurrency, on_done=done)
    finally:
        flusher.flush()
    return flusher.added


@dataclass
class GradingFailures:
    """Queries whose replies could not be graded (not written: a rerun runs and grades them again)."""

    queries: int = 0
    first_error: str = ""


def stored_responses(store: RecordStore, query_ids: set[str]) -> dict[str, dict[tuple[str, str], str]]:
    """Replies the store already holds for these queries, by pair ("" for failed runs)."""
    if not query_ids or not len(store):
        return {}
    df = store.load(["query_id", "model", "tool", "response", "error"])
    df = df[df["query_id"].isin(query_ids)]
    out: dict[str, dict[tuple[str, str], str]] = {}
    for qid, model, tool, response, error in df.itertuples(index=False):
        out.setdefault(str(qid), {})[(str(model), str(tool))] = "" if error else str(response)
    return out


async def collect_graded(pool: Pool, benchmark: Benchmark, the_plan: CollectPlan, store: RecordStore, split: str,
                         concurrency: int, grader: LabelFreeGrader,
                         on_progress: Callable[[PairRecord], None] | None = None) -> tuple[int, GradingFailures]:
    """Run the plan, grading each query's replies together with ``grader``; returns (rows added, failures)."""
    flusher = _Flusher(store)
    failures = GradingFailures()
    qid_of = {id(j): query_key(benchmark.name, j.question) for j in the_plan.jobs}
    expected: dict[str, int] = {}
    for j in the_plan.jobs:
        expected[qid_of[id(j)]] = expected.get(qid_of[id(j)], 0) + 1
    context = stored_responses(store, set(expected))
    finished: dict[str, list[tuple[PairJob, PairRecord]]] = {}
    grading: list[asyncio.Task[None]] = []

    async def grade_query(qid: str) -> None:
        done = finished.pop(qid)
        replies = {(r.model, r.tool): ("" if r.error else r.response) for _, r in done}
        try:
            grades = await grader.grade(done[0][1].question, {**context.get(qid, {}), **replies})
        except Exception as err:  # a judge that fails leaves the query unwritten, to be retried on rerun
            failures.queries += 1
            failures.first_error = failures.first_error or f"{type(err).__name__}: {err}"
            return
        flusher.add(*(to_row(benchmark, job.key, r, split, grades[(r.model, r.tool)]) for job, r in done))

    def done(job: PairJob, record: PairRecord) -> None:
        qid = qid_of[id(job)]
        finished.setdefault(qid, []).append((job, record))
        if len(finished[qid]) == expected[qid]:
            grading.append(asyncio.ensure_future(grade_query(qid)))
        if on_progress:
            on_progress(record)

    try:
        await run_pairs(pool, the_plan.jobs, concurrency=concurrency, on_done=done)
        await asyncio.gather(*grading)
    finally:
        flusher.flush()
        await grader.aclose()
    return flusher.added, failures


def _ray_worker(config: dict[str, Any], jobs: list[tuple[int, str, str, str, tuple[Any, ...]]]
                ) -> list[tuple[int, dict[str, Any]]]:
    """Runs on a Ray worker: rebuild the pool from its config and run a chunk of jobs (index, model, tool,
    question, images); returns each job's index with its record."""
    from atlas_router.config import parse_pool_config

    pool = Pool(parse_pool_config(config, "<ray>"))

    async def go() -> list[PairRecord]:
        try:
            return await run_pairs(pool, [PairJob(m, t, q, images=tuple(imgs)) for _, m, t, q, imgs in jobs],
                                   concurrency=8)
        finally:
            await pool.aclose()

    return [(job[0], r.to_dict()) for job, r in zip(jobs, asyncio.run(go()))]


def collect_ray(config: PoolConfig, benchmark: Benchmark, the_plan: CollectPlan, store: RecordStore, split: str,
                address: str, chunk: int = 16, on_progress: Callable[[PairRecord], None] | None = None) -> int:
    """Run the plan as Ray tasks (``address``: "local" for an in-process cluster, or ray://host:port). Jobs
    travel with their images and come back by index (questions of image benchmarks repeat)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, ignore_reinit_error=True,
                 include_dashboard=False, log_to_driver=False, **({"num_cpus": 2} if address == "local" else {}))
    remote = ray.remote(_ray_worker)
    payload = config.model_dump(mode="json")
    jobs = [(i, j.model, j.tool, j.question, tuple(j.images)) for i, j in enumerate(the_plan.jobs)]
    pending = [remote.remote(payload, jobs[i : i + chunk]) for i in range(0, len(jobs), chunk)]
    flusher = _Flusher(store)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for index, data in ray.get(ready[0]):
                record = PairRecord(**data)
                flusher.add(to_row(benchmark, the_plan.jobs[index].key, record, split))
                if on_progress:
                    on_progress(record)
    finally:
        flusher.flush()
    return flusher.added
