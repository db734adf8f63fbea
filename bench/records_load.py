"""How fast a RecordStore of 1M records loads, against reading one plain Parquet file of the same data.

Run: python bench/records_load.py [--rows 1000000] [--parts 20]
Prints append time, load time and peak memory, and the ratio load / baseline measured in this run.
Each load runs in a fresh child process so that its peak RSS (VmHWM in /proc/self/status) is its own;
Arrow allocates outside Python's allocator, so tracemalloc would not see it. Best of --repeat runs.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from atlas_router.records.store import RecordStore, normalize


def synthetic(n: int, seed: int = 0) -> pd.DataFrame:
    """n records over 12 models x 3 tools, with realistic text sizes for queries and responses."""
    rng = np.random.default_rng(seed)
    models = [f"model-{i}" for i in range(12)]
    tools = ["none", "python_code", "web_search"]
    pairs = len(models) * len(tools)
    q = np.arange(n) // pairs
    benches = np.array(["gsm8k", "math", "humaneval", "mbpp", "natural_questions", "gpqa"])
    bench = benches[q % len(benches)]
    return pd.DataFrame(
        {
            "query_id": [f"q{i:09d}" for i in q],
            "benchmark": bench,
            "split": "test",
            "domain": "math",
            "query": [f"Question {i}: what is {i} plus {i * 7 % 13}? " * 3 for i in q],
            "reference": (q % 1000).astype(str),
            "model": [models[i % len(models)] for i in range(n)],
            "tool": [tools[(i // len(models)) % len(tools)] for i in range(n)],
            "answer": rng.integers(0, 1000, n).astype(str),
            "response": [f"Step by step reasoning number {i}. The answer is {i % 997}." for i in range(n)],
            "score": rng.integers(0, 2, n).astype(float),
            "cost": rng.random(n) * 1e-4,
            "input_tokens": rng.integers(20, 400, n),
            "output_tokens": rng.integers(10, 800, n),
            "latency_s": rng.random(n) * 3,
            "calls": 1,
            "source": "bench",
        }
    )


def _peak_rss_mib() -> float:
    """High-water RSS of this process (Linux VmHWM; getrusage's ru_maxrss survives exec, so it is not used)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load_in_child(kind: str, path: str) -> tuple[float, int, float, float]:
    """(seconds, rows, peak RSS MiB of this child, peak RSS MiB before the load) for one load."""
    before = _peak_rss_mib()
    t0 = time.perf_counter()
    rows = len(pd.read_parquet(path)) if kind == "plain" else len(RecordStore(path).load())
    elapsed = time.perf_counter() - t0
    return elapsed, rows, _peak_rss_mib(), before


def measure(kind: str, path: Path, repeat: int) -> tuple[float, int, float, float]:
    """Best time of ``repeat`` fresh-process loads (with that run's memory figures)."""
    runs = []
    for _ in range(repeat):
        with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
            runs.append(pool.submit(_load_in_child, kind, str(path)).result())
    return min(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--parts", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    df = normalize(synthetic(args.rows))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = RecordStore(root / "store")
        t0 = time.perf_counter()
        for chunk in np.array_split(np.arange(len(df)), args.parts):
            store.append(df.iloc[chunk])
        append_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = store.append(df.iloc[: len(df) // args.parts])
        reappend_s = time.perf_counter() - t0

        plain = root / "plain.parquet"
        df.to_parquet(plain, index=False, compression="zstd")
        base_s, base_rows, base_peak, base_before = measure("plain", plain, args.repeat)
        load_s, load_rows, load_peak, load_before = measure("store", root / "store", args.repeat)
        fresh = RecordStore(root / "store")
        t0 = time.perf_counter()
        fresh.keys()
        keys_s = time.perf_counter() - t0
        assert load_rows == base_rows == args.rows, (load_rows, base_rows)
        assert again == 0

    print(f"records: {args.rows:,} in {args.parts} parts")
    print(f"append (all parts):        {append_s:7.2f} s")
    print(f"re-append one part (dedupe, 0 added): {reappend_s:7.2f} s")
    print(f"baseline pd.read_parquet:  {base_s:7.2f} s  peak RSS {base_peak:8.1f} MiB (child at start {base_before:.0f})")
    print(f"RecordStore.load:          {load_s:7.2f} s  peak RSS {load_peak:8.1f} MiB (child at start {load_before:.0f})")
    print(f"RecordStore.keys (cold):   {keys_s:7.2f} s")
    print(f"load / baseline ratio:     {load_s / base_s:7.2f}x")


if __name__ == "__main__":
    main()
