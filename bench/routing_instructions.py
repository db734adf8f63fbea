"""Instructions per routing decision, counted by valgrind (callgrind): a figure the machine's speed does not move.

``bench/routing_speed.py`` times one decision in microseconds, and on a shared VM that tail moves with the
machine's speed of the hour. This counts the CPU instructions one single-query decision executes instead,
which is the same from run to run for the same code, inputs and libraries, whatever else the machine does.
The baseline, counted in the same run: the bare product of one embedding with the router's centroids
(``np.dot(e, centroids)``), the one piece of arithmetic no cluster router can skip, whatever its
settings. Compare commits by the count per decision; the ratio is printed for scale.

How: a cluster router is fitted on the LLMRouter table (70% split, the ``hashing:384`` encoder, so that no
model weights are needed) and saved; then a child process loads it and makes N decisions (or N bare
products), once with N = 0 and once with N = --decisions under callgrind, with the garbage collector off
(a collection would land in one count and not the other), one BLAS thread, a fixed string-hash seed
and, where ``setarch -R`` exists, address randomisation off (the BLAS kernels' path depends on alignment);
the difference divided by N is the count per call. Needs valgrind (Debian's package).

    python bench/routing_instructions.py [--decisions 1000] [--explain]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

CHILD = """
import gc
import sys
import numpy as np
from atlas_router.routers.persist import load_router
router = load_router(sys.argv[1])
emb = np.load(sys.argv[2])
n, what = int(sys.argv[3]), sys.argv[4]
rows = [emb[i % len(emb):i % len(emb) + 1] for i in range(max(n, 1))]
centroids = np.ascontiguousarray(router.centroids_.T, dtype=np.float64)
router.route(rows[0])[0].explanation  # first touches (plan, tables) outside the counted difference
gc.disable()  # a collection would land in one of the two counts and not the other
for x in rows[:n]:
    if what == "decision":
        router.route(x)
    elif what == "explained":
        router.route(x)[0].explanation
    else:
        np.dot(np.asarray(x[0], dtype=np.float64), centroids)
"""

# the same count for the same work: one BLAS thread (idle pool threads spin after each call, and valgrind counts
# their instructions) and a fixed string-hash seed (a random one moves dict layouts, and the count by ~1M)
CHILD_ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
             "PYTHONHASHSEED": "0"}


def instructions(router_path: Path, emb_path: Path, n: int, what: str) -> int:
    """Instructions the child executes in all (callgrind's total)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        fixed = ["setarch", platform.machine(), "-R"] if shutil.which("setarch") else []  # same addresses each run
        proc = subprocess.run([*fixed, "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-c",
                               CHILD, str(router_path), str(emb_path), str(n), what],
                              capture_output=True, text=True, env=CHILD_ENV)
        if proc.returncode != 0:
            sys.exit(f"error: the counted child failed: {proc.stderr.strip().splitlines()[-1:]}")
        found = re.search(r"Collected : (\d+)", proc.stderr)
        if not found:
            sys.exit("error: callgrind printed no instruction total")
        return int(found.group(1))


def per_call(router_path: Path, emb_path: Path, n: int, what: str) -> float:
    return (instructions(router_path, emb_path, n, what) - instructions(router_path, emb_path, 0, what)) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--decisions", type=int, default=1000, help="decisions counted (each count runs twice)")
    ap.add_argument("--explain", action="store_true", help="also count a decision with its explanation read")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("error: valgrind is not installed (Debian: apt-get install valgrind)")

    import numpy as np

    from atlas_router.eval.split import split_records
    from atlas_router.routers.cluster import ClusterRouter
    from atlas_router.routers.encoders import build_encoder
    from atlas_router.routers.persist import save_router
    from support.routing_data import llmrouter_records

    train, test = split_records(llmrouter_records(), test_size=0.3, seed=0)
    encoder = build_encoder("hashing:384", cache=False)
    router = ClusterRouter(alpha=0.5).fit(train, encoder)
    print(f"fit on {router.n_queries_} queries; settings k={router.n_clusters_}, task weight "
          f"{router.task_weight_:g}, ridge weight {router.ridge_weight_:g}; {len(router.pairs_)} pairs")
    with tempfile.TemporaryDirectory() as tmp:
        router_path, emb_path = Path(tmp) / "router", Path(tmp) / "emb.npy"
        save_router(router, router_path)
        np.save(emb_path, encoder.encode(list(dict.fromkeys(test["query"]))[:500]))
        product = per_call(router_path, emb_path, args.decisions, "product")
        decision = per_call(router_path, emb_path, args.decisions, "decision")
        print(f"bare product (embedding x centroids): {product:,.0f} instructions")
        print(f"one routing decision from its embedding: {decision:,.0f} instructions, {decision / product:.2f}x "
              f"the bare product")
        if args.explain:
            explained = per_call(router_path, emb_path, args.decisions, "explained")
            print(f"the same with its explanation read: {explained:,.0f} instructions, "
                  f"{explained / product:.2f}x the bare product")


if __name__ == "__main__":
    main()
