"""What ships for the embedded pool: records of every pair on the whole suite, reproducible by re-collection,
and the router fitted on them; ``atlas ask`` routes with it by default."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pandas as pd

from atlas_router.data.benchmarks import get_benchmark, load_benchmark
from atlas_router.execution.runner import run_pair
from atlas_router.pool.pool import Pool
from atlas_router.routers.persist import load_router
from atlas_router.routers.embedded import EMBEDDED_DIR, default_router_path, shipped_manifest, shipped_records_path


def _shipped() -> pd.DataFrame:
    return pd.read_parquet(shipped_records_path())


def test_shipped_records_cover_the_suite_splits_and_pairs():
    df = _shipped()
    pool = Pool.load(None)
    pairs = {f"{m}@@{t}" for m, t in pool.pairs()}
    assert {f"{m}@@{t}" for m, t in df[["model", "tool"]].drop_duplicates().itertuples(index=False)} == pairs
    per_query = df.groupby("query_id").size()
    assert (per_query == len(pairs)).all()  # every shipped query has every pair
    # the whole built-in suite: six domains, train and test from disjoint templates, >= 180 test queries
    assert df["query_id"].nunique() == len(df) // len(pairs) >= 600 and df["benchmark"].nunique() >= 6
    per_split = df.drop_duplicates("query_id")["split"].value_counts()
    assert per_split["test"] >= 180 and per_split["train"] >= 300
    assert shipped_records_path().stat().st_size < 2 * 1024 * 1024
    manifest = shipped_manifest()
    assert manifest["rows"] == len(df) and "atlas demo" in manifest["refit"]
    # every shipped question is a suite question of the split it says
    suite = {(b, e.question): e.meta["split"] for b in df["benchmark"].unique() for e in load_benchmark(b)}
    for row in df.drop_duplicates("query_id").itertuples():
        assert suite[(row.benchmark, row.query)] == row.split


def test_recollecting_a_sample_reproduces_the_shipped_rows():
    """Same engine, greedy decoding (prm: seeded samples): >= 95% of answers and grades match."""
    df = _shipped()
    queries = df.drop_duplicates("query_id").sort_values("query_id")
    picked = queries.groupby("benchmark").head(2).head(10)
    pool = Pool(Pool.load(None).config, use_cache=False)  # really run the model, not the response cache

    async def go():
        try:
            return [await run_pair(pool, m, t, q.query)
                    for q in picked.itertuples() for m, t in pool.pairs()]
        finally:
            await pool.aclose()

    records = asyncio.run(go())
    same_answer = same_grade = 0
    for rec in records:
        row = df[(df["query"] == rec.question) & (df["model"] == rec.model) & (df["tool"] == rec.tool)].iloc[0]
        bench = get_benchmark(row["benchmark"])
        example = next(e for e in load_benchmark(row["benchmark"]) if e.question == rec.question)
        same_answer += rec.answer == row["answer"]
        same_grade += float(bench.grade(rec.response, example)) == float(row["score"])
    assert len(records) >= 10 * 5
    assert same_answer >= 0.95 * len(records) and same_grade >= 0.95 * len(records)


def test_shipped_router_loads_and_covers_the_pool():
    router = load_router(default_router_path())
    assert set(router.pairs_) == set(Pool.load(None).pairs())


def test_ask_routes_by_default():
    proc = subprocess.run([sys.executable, "-m", "atlas_router", "ask", "What is 7321 * 58?"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "424618"
    proc = subprocess.run([sys.executable, "-m", "atlas_router", "ask", "--json", "--explain", "What is 7321 * 58?"],
                          capture_output=True, text=True, timeout=600)
    record = json.loads(proc.stdout)
    assert record["routing"]["operating_point"].startswith("cheapest within 2 accuracy points")
    assert record["tool"] in ("calculator", "python-code") and record["answer"] == "424618"


def test_shipped_router_beats_every_single_pair_on_held_out_kinds():
    """Multi-digit products and grade-school word problems of the test templates (never seen in training):
    the router's replayed accuracy at the default operating point is >= every single pair's."""
    from atlas_router.routers.operating_point import OperatingPoint, route_at

    df = _shipped()
    df = df[df["split"] == "test"]
    template = {e.question: e.meta["template"] for b in ("suite-arithmetic", "suite-word-problems")
                for e in load_benchmark(b)}
    df = df[df["query"].map(template).isin({"arith-multiply-by", "arith-product-of"})
            | (df["benchmark"] == "suite-word-problems")]
    scores = df.pivot_table(index="query", columns="tool", values="score")
    router = load_router(default_router_path())
    for kind, queries in (("products", [q for q in scores.index if template[q].startswith("arith")]),
                          ("word problems", [q for q in scores.index if template[q].startswith("wp")])):
        tools = [d.tool for d in route_at(router, queries, OperatingPoint())]
        routed = float(sum(scores.loc[q, t] for q, t in zip(queries, tools)) / len(queries))
        best = scores.loc[queries].mean().max()
        assert len(queries) >= 18 and routed >= best, (kind, routed, scores.loc[queries].mean().to_dict())


def test_freshly_worded_products_and_word_problems_go_to_a_tool_that_computes():
    """Wordings in no split of the suite: what the router learned is that a tool computes them."""
    from atlas_router.routers.operating_point import OperatingPoint, route_at

    products = ["What's 48213 multiplied by 67?", "Compute 5620 x 318.", "How much is 907 × 4415?",
                "Please work out 77012*49.", "What do you get when you multiply 3381 and 926?"]
    word = ["A bus carries 46 passengers on each trip. How many passengers does it carry in 23 trips?",
            "A school has 38 classrooms with 29 desks in each. How many desks are there?",
            "A box of pens costs 14 dollars. How much do 52 boxes cost?",
            "A farm had 913 sheep and sold 278. How many sheep are left?"]
    router = load_router(default_router_path())
    for d in route_at(router, products + word, OperatingPoint()):
        assert d.tool in ("calculator", "python-code"), (d.tool, d.explanation)
