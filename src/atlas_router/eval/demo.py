"""``atlas demo``: the whole ATLAS path 1 on the embedded default pool, offline, in a few minutes.

Steps: collect every pair on the built-in task suite (resumable, cached), split the records by query,
fit the cluster router and the baselines on the train side, evaluate them by replay on the test side,
sweep a for the accuracy-cost frontier, route a few sample questions with their explanations, and write
the router, the results (JSON) and the report (Markdown + HTML) into one directory.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from sklearn.decomposition import PCA
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from atlas_router.data.benchmarks.demo_suite import load_demo_suite
from atlas_router.eval.report import write_report
from atlas_router.eval.replay import Embedded, ReplayTable, evaluate_router, sweep_alpha
from atlas_router.eval.split import split_records
from atlas_router.pool.pool import Pool
from atlas_router.records import collect as collecting
from atlas_router.records.store import RecordStore
from atlas_router.routers.base import Router, make_router
from atlas_router.routers.encoders.factory import build_encoder

DEMO_ROUTERS = ["atlas-cluster", "random", "best-single", "oracle", "knn", "mlp", "bert", "routerdc", "zero-shot", "few-shot"]
ALPHAS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
SAMPLE_QUESTIONS = [
    "What is 7321 * 58?",
    "What is the capital of France?",
    "A pen costs 3 dollars. How much do 9 pens cost in dollars?",
    "How many legs does a dog have?",
]


def collect_suite(pool: Pool, store: RecordStore, console: Console, concurrency: int) -> int:
    """Run every pair of the pool on every demo question not yet in the store; returns rows added."""
    suite = load_demo_suite()
    plans = {name: (bench, collecting.plan(bench, examples, pool.pairs(), store)) for name, (bench, examples) in suite.items()}
    total = sum(p.total for _, p in plans.values())
    done = sum(p.done_before for _, p in plans.values())
    async def run_all(progress: Progress, task) -> int:
        n = 0
        for name, (bench, the_plan) in plans.items():
            progress.update(task, description=name)
            n += await collecting.collect_local(pool, bench, the_plan, store, "", concurrency,
                                                on_progress=lambda _r: progress.advance(task))
        return n

    with Progress(TextColumn("[bold]collect[/] {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("", total=total, completed=done)
        return asyncio.run(run_all(progress, task))


def build_router(name: str, pool: Pool, alpha: float) -> Router:
    """A demo router by registry name; LLM routers use the pool's first model."""
    if name in ("zero-shot", "few-shot"):
        return make_router(name, model=pool.model(pool.config.models[0].name), pool=pool.config, alpha=alpha)
    return make_router(name, alpha=alpha)


def run_demo(out_dir: str | Path = "atlas-demo", pool_path: str | None = None, alpha: float = 0.5,
             concurrency: int = 4, console: Console | None = None) -> dict[str, Any]:
    """Run the demo end to end; returns the results written to ``out_dir/results.json``."""
    console = console or Console(stderr=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    pool = Pool.load(pool_path)
    store = RecordStore(out / "records")
    console.rule("1. collect: every (model, tool) pair on the built-in task suite")
    added = collect_suite(pool, store, console, concurrency)
    records = store.load()
    console.print(f"{len(records)} records ({added} new) in {out / 'records'}")

    console.rule("2. fit on train queries, evaluate by replay on test queries")
    train, test = split_records(records, test_size=0.3, seed=0)
    encoder = build_encoder(None)
    replay = ReplayTable(test)
    embedded = Embedded(encoder.name, encoder.encode(replay.queries))
    results: dict[str, Any] = {}
    routers: dict[str, Router] = {}
    for name in DEMO_ROUTERS:
        t0 = time.perf_counter()
        router = build_router(name, pool, alpha)
        router.fit(train, encoder)
        if name == "oracle":
            router.attach(test)  # the upper bound reads the test records
        fit_s = time.perf_counter() - t0
        result = evaluate_router(name, router, replay, embedded)
        result.fit_s = fit_s
        results[name] = result.to_dict()
        routers[name] = router
        console.print(f"  {name:14s} accuracy {result.overall.accuracy:.3f}  cost/query {result.overall.cost:.2e}  "
                      f"calls {result.overall.calls:.2f}  (fit {fit_s:.1f}s)")
    cluster = routers["atlas-cluster"]
    if alpha != 0.0:  # the accuracy-first end of the frontier, beside the chosen a
        results["atlas-cluster (a=0)"] = evaluate_router("atlas-cluster (a=0)", cluster, replay, embedded, alpha=0.0).to_dict()
    frontier = sweep_alpha(cluster, replay, ALPHAS, embedded)

    console.rule("3. route sample questions")
    samples = []
    for question, decision in zip(SAMPLE_QUESTIONS, cluster.route(SAMPLE_QUESTIONS)):
        e = decision.explanation
        samples.append({"question": question, "pair": f"{decision.model}@@{decision.tool}", "explanation": e})
        console.print(f"  {question!r} -> [bold]{decision.model}@@{decision.tool}[/] (cluster {e.get('cluster')}, "
                      f"distance {e.get('distance', 0):.3f}{', out of distribution' if e.get('ood') else ''})")

    router_path = cluster.save(out / "router.atlas")
    train_queries = train.drop_duplicates("query_id")["query"].tolist()
    train_emb = encoder.encode(train_queries)
    labels, _ = cluster.assign(train_emb)
    points = PCA(n_components=2, random_state=0).fit_transform(train_emb)
    payload = {
        "routers": results, "frontier": frontier, "samples": samples, "alpha": alpha,
        "records": {"rows": int(len(records)), "train_queries": int(train["query_id"].nunique()),
                    "test_queries": int(test["query_id"].nunique())},
        "router_file": str(router_path), "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2, default=str))
    md, page = write_report(payload, out, title="atlas demo: cluster routing on the embedded default pool",
                            cluster_points=(points, labels))
    console.rule("4. report")
    console.print(f"router: {router_path}\nresults: {out / 'results.json'}\nreport: {md} and {page}")
    return payload
