"""Does atlas-cluster generalise? Accuracy of every router on held-out queries of the LLMRouter table.

Run: python bench/routing_generalisation.py [--seeds 0,1,2,3,4] [--protocols split,lobo,models]
                                             [--routers atlas-cluster,best-single,...] [--cache-dir DIR]
                                             [--set atlas-cluster.task_weight=0 ...]

Per protocol (``eval.generalisation``: seeded 70/30 query splits; leave-benchmarks-out; model subsets)
every router is fitted on the training records with its default settings and replayed at a = 0. Printed:
each router's accuracy, then atlas-cluster's margin over best single and over the best baseline of that
protocol (mean paired per-query difference, 95% bootstrap interval), and a summary of the product's
promise: atlas-cluster >= best single on every protocol, its mean >= every baseline's mean, and no
baseline ahead of it by more than 0.01 anywhere. Embeddings are cached on disk (--cache-dir).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

DEFAULT_ROUTERS = "atlas-cluster,best-single,oracle,random,knn,mlp,routerdc,bert"
BASELINES = ("random", "knn", "mlp", "bert", "routerdc")


def parse_settings(items: list[str]) -> dict[str, dict[str, float]]:
    """``["atlas-cluster.task_weight=0"]`` -> ``{"atlas-cluster": {"task_weight": 0.0}}`` (numbers only)."""
    params: dict[str, dict[str, float]] = {}
    for item in items:
        target, eq, value = item.partition("=")
        router, dot, key = target.rpartition(".")
        if not eq or not dot or not router or not key:
            raise SystemExit(f"--set {item!r}: expected ROUTER.SETTING=VALUE, e.g. atlas-cluster.task_weight=0")
        try:
            params.setdefault(router, {})[key] = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            raise SystemExit(f"--set {item!r}: the value must be a number") from None
    return params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--protocols", default="split", help="comma list of split, lobo, models")
    ap.add_argument("--routers", default=DEFAULT_ROUTERS)
    ap.add_argument("--encoder", default="sentence-transformers")
    ap.add_argument("--cache-dir", default="/tmp/atlas-llmrouter-embeddings")
    ap.add_argument("--set", action="append", default=[], metavar="ROUTER.SETTING=VALUE",
                    help="fix one setting of one router (repeatable), e.g. atlas-cluster.task_weight=0: what a "
                    "setting is worth across protocols, against the defaults of another run")
    args = ap.parse_args()
    params = parse_settings(args.set)

    from atlas_router.eval.generalisation import (
        TARGET, compare, leave_benchmarks_out, model_subset, split_protocols,
    )
    from atlas_router.routers.encoders import EmbeddingCache, build_encoder
    from support.routing_data import llmrouter_records

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    routers = [r.strip() for r in args.routers.split(",") if r.strip()]
    records = llmrouter_records()
    encoder = build_encoder(args.encoder, cache=EmbeddingCache(args.cache_dir))
    t0 = time.perf_counter()
    encoder.encode(sorted(set(records["query"])))
    print(f"embedded {records['query_id'].nunique()} queries with {encoder.name} in {time.perf_counter() - t0:.1f}s "
          f"(cache {args.cache_dir})")

    protocols = []
    for kind in [p.strip() for p in args.protocols.split(",") if p.strip()]:
        if kind == "split":
            protocols += split_protocols(records, seeds)
        elif kind == "lobo":
            protocols += [leave_benchmarks_out(records, s) for s in seeds]
        elif kind == "models":
            protocols += [model_subset(records, s) for s in seeds]
        else:
            raise SystemExit(f"unknown protocol {kind!r}: use split, lobo, models")

    table: dict[str, dict[str, float]] = {}
    failures = []
    for proto in protocols:
        t0 = time.perf_counter()
        cmp = compare(proto, routers, encoder, seed=0, params=params)
        acc = cmp.accuracy()
        table[proto.name] = acc
        print(f"\n== {proto.name}: {cmp.n_train} train / {cmp.n_test} test queries ({time.perf_counter() - t0:.0f}s)")
        for name in routers:
            print(f"  {name:14s} {acc[name]:.4f}")
        if TARGET in cmp.settings:
            s = cmp.settings[TARGET]
            cv = s["cv"]
            print(f"  {TARGET} settings: k={s['k']} m={s['shrinkage']:g} task_weight={s['task_weight']:g} "
                  f"ridge_weight={s['ridge_weight']:g} lambda={s['ridge_lambda']:g} z={s['evidence']:g} "
                  f"single={s['single']} (cv gain {cv.get('gain', float('nan')):+.4f} +- {cv.get('se', float('nan')):.4f})")
        if TARGET not in acc:
            continue
        others = ["best-single"] if "best-single" in acc else []
        best = cmp.best_baseline()
        if best:
            others.append(best)
        for other in others:
            m = cmp.margin(other)
            label = "best single" if other == "best-single" else f"best baseline ({other})"
            print(f"  margin over {label}: {m['margin']:+.4f} [{m['low']:+.4f}, {m['high']:+.4f}]")
        if "best-single" in acc and acc[TARGET] < acc["best-single"]:
            failures.append(f"{proto.name}: below best single ({acc[TARGET]:.4f} < {acc['best-single']:.4f})")
        for b in BASELINES:
            if b in acc and acc[b] > acc[TARGET] + 0.01:
                failures.append(f"{proto.name}: {b} ahead by {acc[b] - acc[TARGET]:.4f} (> 0.01)")

    print("\n== mean over protocols")
    means = {name: float(np.mean([t[name] for t in table.values()])) for name in routers}
    for name in routers:
        print(f"  {name:14s} {means[name]:.4f}")
    if TARGET in means:
        for b in BASELINES:
            if b in means and means[b] > means[TARGET]:
                failures.append(f"mean: {b} {means[b]:.4f} > {TARGET} {means[TARGET]:.4f}")
        print("PASS: atlas-cluster >= best single on every protocol, mean >= every baseline's, none ahead by > 0.01"
              if not failures else "FAIL:\n  " + "\n  ".join(failures))


if __name__ == "__main__":
    main()
