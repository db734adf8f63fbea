"""``atlas demo``: the whole ATLAS path 1 on the embedded default pool, offline, in a few minutes.

Steps: take the records of every (model, tool) pair on the built-in suite (the shipped ones, or
collected live with ``--collect``), fit the cluster router and the baselines on the train templates,
evaluate them by replay on the test templates (disjoint wording), trace the accuracy-cost frontier,
answer a few fresh questions live through the routed pair (the real model and tools), and write the
router, the results (JSON) and the report (Markdown + HTML + plots) into one directory.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from atlas_router.data.benchmarks import get_benchmark
from atlas_router.data.benchmarks.base import Example
from atlas_router.data.benchmarks.demo_suite import SPLITS, load_demo_suite
from atlas_router.errors import AtlasError
from atlas_router.eval.replay import Embedded, ReplayTable, evaluate_router, sweep_alpha
from atlas_router.eval.report import write_report
from atlas_router.eval.run import run_evaluation
from atlas_router.eval.split import split_records
from atlas_router.pool.pool import Pool
from atlas_router.records import collect as collecting
from atlas_router.records.store import RecordStore
from atlas_router.routers.persist import save_router
from atlas_router.routers.base import Router
from atlas_router.routers.embedded import EMBEDDED_DIR, MANIFEST_FILE, RECORDS_FILE, ROUTER_FILE, shipped_records_path
from atlas_router.routers.encoders.factory import build_encoder
from atlas_router.routers.operating_point import DEFAULT_TOLERANCE, OperatingPoint, route_at

DEMO_ROUTERS = ["atlas-cluster", "random", "best-single", "oracle", "knn", "mlp", "bert", "routerdc"]
LLM_ROUTERS = ["zero-shot", "few-shot"]
ALPHAS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
TOLERANCES = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 1.0]
# Fresh questions (in no file of the suite) answered live through the routed pair: (question, benchmark, answer).
LIVE_QUESTIONS = [
    ("What is 7321 * 58?", "suite-arithmetic", "424618"),
    ("What is the capital of Kenya?", "suite-facts", ["Nairobi"]),
    ("How many legs does an insect have?", "suite-common-sense", "6"),
    ("Reverse the string 'pencil'.", "suite-code", "licnep"),
]
COLLECT_COMMAND = "atlas demo --collect --refit"


# -- records ----------------------------------------------------------------------------------------

def collect_suite(pool: Pool, store: RecordStore, console: Console, concurrency: int = 1) -> int:
    """Run every pair of the pool on every suite question not yet in the store; returns rows added.

    Pair-major (one pair over the whole suite, then the next) so llama.cpp reuses the prompt prefix of
    consecutive calls; each row keeps its template's split."""
    suite = {split: load_demo_suite(split) for split in SPLITS}
    plans = [(split, bench, pair, collecting.plan(bench, examples, [pair], store))
             for pair in pool.pairs() for split in SPLITS for bench, examples in suite[split].values()]
    total = sum(p.total for *_, p in plans)
    done = sum(p.done_before for *_, p in plans)

    async def run_all(progress: Progress, task: Any) -> int:
        added = 0
        for split, bench, pair, the_plan in plans:
            if the_plan.jobs:
                progress.update(task, description=f"{pair[0]}@@{pair[1]} {bench.name} ({split})")
                added += await collecting.collect_local(pool, bench, the_plan, store, split, concurrency,
                                                        on_progress=lambda _r: progress.advance(task))
        return added

    with Progress(TextColumn("[bold]collect[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task("", total=total, completed=done)

        async def go() -> int:
            try:
                return await run_all(progress, task)
            finally:
                await pool.aclose()

        return asyncio.run(go())


def write_store(path: Path, records: pd.DataFrame) -> None:
    """Replace the record store at ``path`` with ``records`` (only a record store is ever removed)."""
    if path.exists():
        if not (path / "meta.json").is_file():
            raise AtlasError(f"{path}: exists and is not a record store; choose another --out")
        shutil.rmtree(path)
    RecordStore(path).append(records.to_dict("records"))


def read_records(paths: str | Path | list[str | Path]) -> pd.DataFrame:
    """Records from store directories or Parquet files; for a (query, model, tool) key the first source wins."""
    frames = []
    for path in paths if isinstance(paths, list) else [paths]:
        p = Path(path).expanduser()
        if p.is_dir():
            frames.append(RecordStore(p).load())
        elif p.suffix == ".parquet" and p.is_file():
            frames.append(pd.read_parquet(p))
        else:
            raise AtlasError(f"{p}: not a record store directory or a .parquet file")
    return pd.concat(frames, ignore_index=True).drop_duplicates(["query_id", "model", "tool"]).reset_index(drop=True)


def complete_queries(records: pd.DataFrame) -> pd.DataFrame:
    """Only the queries every pair answered (a replay needs every pair's outcome on every test query)."""
    pairs = records[["model", "tool"]].drop_duplicates()
    per_query = records.groupby("query_id")[["model", "tool"]].apply(lambda g: len(g.drop_duplicates()))
    full = per_query[per_query == len(pairs)].index
    return records[records["query_id"].isin(full)].reset_index(drop=True)


def train_test(records: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The suite's own split (disjoint templates) when each side holds at least a fifth of the queries;
    otherwise (records of other benchmarks, or a partial collection) a seeded split by query, 30% test."""
    split = records.get("split", pd.Series([""] * len(records), index=records.index)).astype(str)
    n = records["query_id"].nunique()
    sides = {s: records.loc[split == s, "query_id"].nunique() for s in ("train", "test")}
    if min(sides.values()) >= 0.2 * n:
        return (records[split == "train"].reset_index(drop=True), records[split == "test"].reset_index(drop=True),
                "templates")
    train, test = split_records(records, test_size=0.3, seed=0)
    return train, test, "queries"


# -- routers ----------------------------------------------------------------------------------------

def write_shipped(records: pd.DataFrame, router: Router, pool_path: str | None, out_dir: Path = EMBEDDED_DIR) -> None:
    """Ship records (one compact Parquet file), the router and a manifest saying how they were made."""
    out_dir.mkdir(parents=True, exist_ok=True)
    keep = [c for c in ("query_id", "benchmark", "split", "domain", "query", "reference", "model", "tool", "answer",
                        "response", "score", "cost", "input_tokens", "output_tokens", "latency_s", "calls", "error",
                        "source", "schema_version") if c in records.columns]
    table = records[keep].sort_values(["benchmark", "query_id", "model", "tool"]).reset_index(drop=True)
    table.to_parquet(out_dir / RECORDS_FILE, compression="zstd", index=False)
    save_router(router, out_dir / ROUTER_FILE)
    manifest = {
        "what": "records of the embedded default pool on the built-in suite, and atlas-cluster fitted on its train split",
        "collect": ["scripts/collect_embedded.sh STORE  (or: atlas demo --collect --out DIR)"],
        "refit": "atlas demo --refit --records STORE [--records STORE2 ...]  (the first holding a key wins)",
        "pool": pool_path or "embedded default pool (src/atlas_router/resources/default_pool.yaml)",
        "decoding": "greedy (temperature 0) for every pair; prm samples at its own temperature with seeds 0..n-1",
        "rows": int(len(table)), "queries": int(table["query_id"].nunique()),
        "train_queries": int(table.loc[table["split"] == "train", "query_id"].nunique()),
        "test_queries": int(table.loc[table["split"] == "test", "query_id"].nunique()),
        "pairs": sorted(f"{m}@@{t}" for m, t in table[["model", "tool"]].drop_duplicates().itertuples(index=False)),
        "router": router.manifest() if hasattr(router, "manifest") else {},
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str))


# -- live questions ---------------------------------------------------------------------------------

def answer_live(pool: Pool, router: Router, point: OperatingPoint, console: Console) -> list[dict[str, Any]]:
    """Route each fresh question and let the chosen pair answer it for real; graded by the suite's grader."""
    from atlas_router.execution.runner import run_pair

    questions = [q for q, _, _ in LIVE_QUESTIONS]
    decisions = route_at(router, questions, point)

    async def go() -> list[Any]:
        try:
            return [await run_pair(pool, d.model, d.tool, q) for q, d in zip(questions, decisions)]
        finally:
            await pool.aclose()

    records = asyncio.run(go())
    out = []
    for (question, bench_name, answer), d, rec in zip(LIVE_QUESTIONS, decisions, records):
        bench = get_benchmark(bench_name)
        example = Example(id="live", question=question, reference=answer)
        score = 0.0 if rec.error else float(bench.grade(rec.response, example))
        e = d.explanation
        out.append({"question": question, "pair": f"{d.model}@@{d.tool}", "answer": rec.answer,
                    "reference": answer, "score": score, "seconds": round(rec.latency_s, 2), "explanation": e})
        console.print(f"  {question!r} -> [bold]{d.model}@@{d.tool}[/] answered {rec.answer!r} "
                      f"({'right' if score >= 1 else 'wrong'}; cluster {e.get('cluster')}"
                      f"{', out of distribution' if e.get('ood') else ''})")
    return out


# -- the demo ---------------------------------------------------------------------------------------

def run_demo(out_dir: str | Path = "atlas-demo", pool_path: str | None = None, *, records: list[str] | None = None,
             collect: bool = False, refit: bool = False, point: OperatingPoint | None = None,
             llm_routers: bool = False, live: bool = True, concurrency: int = 1,
             console: Console | None = None) -> dict[str, Any]:
    """Run the demo end to end; returns the results written to ``out_dir/results.json``."""
    console = console or Console(stderr=True)
    point = point or OperatingPoint(tolerance=DEFAULT_TOLERANCE)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    pool = Pool.load(pool_path) if (collect or live or llm_routers) else None

    if collect:
        console.rule("1. collect: every (model, tool) pair on the built-in suite (resumable)")
        store = RecordStore(out / "records")
        added = collect_suite(pool, store, console, concurrency)
        source = str(out / "records")
        all_records = store.load()
        console.print(f"{len(all_records)} records ({added} new) in {source}")
    else:
        sources = list(records or [str(shipped_records_path())])
        source = ", ".join(map(str, sources))
        console.rule(f"1. records: {source}")
        all_records = read_records(sources)
    table = complete_queries(all_records)
    if table.empty:
        raise AtlasError(f"{source}: no query has records of every pair")
    train, test, split_by = train_test(table)
    console.print(f"{len(table)} records: {train['query_id'].nunique()} train and {test['query_id'].nunique()} test "
                  f"queries x {len(table[['model', 'tool']].drop_duplicates())} pairs (split by {split_by})")
    for name, part in (("train", train), ("test", test)):  # record stores the other commands read
        write_store(out / name, part)

    console.rule("2. fit on train templates, evaluate by replay on test templates")
    encoder = build_encoder(None)
    names = DEMO_ROUTERS + (LLM_ROUTERS if llm_routers else [])
    chat_model = pool.model(pool.config.models[0].name) if llm_routers and pool is not None else None
    ev = run_evaluation(train, test, names, encoder=encoder, alphas=[], chat_model=chat_model,
                        pool_config=pool.config if chat_model is not None else None)  # what `atlas eval` runs
    replay, embedded, routers = ReplayTable(test), ev.embedded, ev.routers
    assert embedded is not None
    results: dict[str, Any] = {}
    for name, result in ev.results.items():
        if name == "atlas-cluster":  # the shipped operating point, and a = 0 beside it
            decisions = route_at(routers[name], embedded.vectors, point)
            results[name] = {**replay.summarise(name, decisions, routers[name]).to_dict(),
                             "operating_point": point.label(), "fit_s": round(result.fit_s or 0.0, 3)}
            results["atlas-cluster (a=0)"] = evaluate_router("atlas-cluster (a=0)", routers[name], replay, embedded,
                                                             alpha=0.0).to_dict()
        else:
            results[name] = result.to_dict()
        r = results[name]
        console.print(f"  {name:14s} accuracy {r['accuracy']:.3f}  cost/query {r['cost']:.2e}  "
                      f"calls {r['calls']:.2f}  (fit {result.fit_s or 0.0:.1f}s)")
    cluster = routers["atlas-cluster"]
    frontier = sweep_alpha(cluster, replay, ALPHAS, embedded)
    tolerance_curve = []
    for tol in TOLERANCES:
        o = replay.summarise("atlas-cluster", route_at(cluster, embedded.vectors, OperatingPoint(tolerance=tol)),
                             cluster).overall
        tolerance_curve.append({"tolerance": tol, "accuracy": o.accuracy, "cost": o.cost, "calls": o.calls})

    samples: list[dict[str, Any]] = []
    if live:
        console.rule("3. fresh questions, routed and answered live by the real model and tools")
        samples = answer_live(pool, cluster, point, console)

    if refit:
        write_shipped(table, cluster, pool_path)
        console.print(f"shipped records, router and manifest written to {EMBEDDED_DIR}")
    router_path = save_router(cluster, out / "router.atlas")
    train_queries = train.drop_duplicates("query_id")["query"].tolist()
    train_emb = encoder.encode(train_queries)
    labels, _ = cluster.assign(train_emb)
    from sklearn.decomposition import PCA

    points = PCA(n_components=2, random_state=0).fit_transform(train_emb)
    payload = {
        "routers": results, "frontier": frontier, "tolerance_frontier": tolerance_curve, "samples": samples,
        "operating_point": point.label(), **({"alpha": point.alpha} if point.alpha is not None else {}),
        "records": {"source": source, "split_by": split_by, "rows": int(len(table)), "train_queries": int(train["query_id"].nunique()),
                    "test_queries": int(test["query_id"].nunique())},
        "router_file": str(router_path), "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2, default=str))
    md, page = write_report(payload, out, title="atlas demo: routing on the embedded default pool",
                            cluster_points=(points, labels))
    console.rule("4. report")
    console.print(f"router: {router_path}\nresults: {out / 'results.json'}\nreport: {md} and {page}")
    return payload
