"""How well an LLM judge behind a loopback model server agrees with gold labels, on two benchmarks.

The judge is the embedded pool's SmolLM2-135M (llama.cpp, in-process) served over HTTP on 127.0.0.1 by
``serve.model_server``, reached as ``judge:smollm2-135m@http://127.0.0.1:PORT/v1`` - the path a user's
vLLM or llama.cpp judge takes. A 135M judge is weak; the point is that its agreement is measured.

* GSM8K (RouteLLM's gsm8k_responses.csv): the recorded replies of Mixtral-8x7B and GPT-4 with their
  published correctness;
* MATH (test set without MATH-500): the dataset's own worked solution and SmolLM2's reply, both graded
  by the gold math grader, so both labels occur.

For each: label and preference agreement, and routers fitted on judge grades vs gold grades of the same
train queries, evaluated on the gold grades of the same test queries (data.graders.agreement).

    .venv/bin/python bench/judge_agreement.py [--gsm8k 40] [--math 30] [--judges judge-verdict,...] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from atlas_router.cli.judge import print_report
from atlas_router.data.benchmarks import get_benchmark, load_benchmark
from atlas_router.eval.judge_agreement import (
    compare_routers, judge_records, label_agreement, preference_agreement, sample_queries,
)
from atlas_router.data.graders.judge import build_label_free_grader
from atlas_router.records.importers.routellm import read_routellm
from atlas_router.pool.pool import Pool
from atlas_router.records import collect as collecting
from atlas_router.records.schema import query_key
from atlas_router.records.store import RecordStore
from atlas_router.routers.encoders import build_encoder
from atlas_router.serve.model_server import create_model_app

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _loopback import serve  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def gsm8k_records(n: int, seed: int) -> pd.DataFrame:
    records = read_routellm([DATA / "routing" / "routellm" / "gsm8k_responses.csv"]).records
    return sample_queries(records, n, seed)


def math_records(pool: Pool, n: int, seed: int) -> pd.DataFrame:
    """The dataset solution and SmolLM2's reply to ``n`` MATH problems, gold-graded."""
    bench = get_benchmark("math")
    examples = load_benchmark("math", path=str(DATA / "benchmarks" / "math" / "test_without_math500.jsonl"))
    picked = [examples[i] for i in pd.Series(range(len(examples))).sample(n, random_state=seed).sort_values()]
    with tempfile.TemporaryDirectory() as tmp:
        store = RecordStore(tmp)
        plan = collecting.plan(bench, picked, [(pool.config.models[0].name, "none")], store)
        asyncio.run(collecting.collect_local(pool, bench, plan, store, "test", concurrency=1))
        replies = store.load()
    solutions = pd.DataFrame([{
        "query_id": query_key(bench.name, bench.format_prompt(ex)), "benchmark": bench.name, "domain": bench.domain,
        "query": bench.format_prompt(ex), "reference": str(ex.reference), "model": "dataset-solution", "tool": "none",
        "response": ex.meta.get("solution") or "", "score": bench.grade(ex.meta.get("solution") or "", ex),
        "cost": 0.0, "grader": "gold:math", "source": "dataset"} for ex in picked])
    return pd.concat([replies, solutions], ignore_index=True)


def report(name: str, gold: pd.DataFrame, grader_spec: str, seed: int, encoder) -> dict:
    grader = build_label_free_grader(grader_spec)
    t0 = time.perf_counter()
    total, done = int(gold["query_id"].nunique()), [0]

    def tick() -> None:
        done[0] += 1
        print(f"  graded {done[0]}/{total} queries ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    judged = judge_records(gold, grader, concurrency=1, on_done=tick)
    seconds = time.perf_counter() - t0
    return {"records": name, "grader": grader.name, "queries": int(gold["query_id"].nunique()), "seed": seed,
            "judge_s": round(seconds, 1),
            "labels": label_agreement(gold, judged), "preferences": preference_agreement(gold, judged),
            "routing": compare_routers(gold, judged, ["atlas-cluster", "best-single", "oracle"], seed=seed,
                                       encoder=encoder)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gsm8k", type=int, default=40, help="GSM8K queries (2 replies each)")
    ap.add_argument("--math", type=int, default=30, help="MATH problems (2 replies each)")
    ap.add_argument("--judges", default="judge-verdict,judge,judge-pairwise",
                    help="grader kinds to measure (judge-verdict: yes/no; judge: 1-10 rating; judge-pairwise)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--encoder", default="sentence-transformers")
    ap.add_argument("--json-out", help="write the reports here (JSON)")
    ap.add_argument("--json", dest="old_json", help=argparse.SUPPRESS)  # the old spelling of --json-out
    args = ap.parse_args()
    if args.old_json:
        print("notice: '--json PATH' is now '--json-out PATH' (the old spelling still works, for now)",
              file=sys.stderr)
        args.json_out = args.json_out or args.old_json
    pool = Pool.load(None, use_cache=False)
    judge_name = pool.config.models[0].name
    encoder = build_encoder(args.encoder)
    reports = []
    with serve(create_model_app(pool)) as url:
        kinds = [k.strip() for k in args.judges.split(",") if k.strip()]
        sets = []
        if args.gsm8k:
            sets.append(("GSM8K (RouteLLM responses)", gsm8k_records(args.gsm8k, args.seed)))
        if args.math:
            sets.append(("MATH (dataset solution vs SmolLM2)", math_records(pool, args.math, args.seed)))
        for name, gold in sets:
            for kind in kinds:
                r = report(name, gold, f"{kind}:{judge_name}@{url}/v1", args.seed, encoder)
                print_report(r)
                print(f"  ({r['judge_s']} s of judging)")
                reports.append(r)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(reports, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
