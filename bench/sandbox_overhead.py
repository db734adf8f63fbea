"""Cost of the sandbox per run, against a bare ``python -I -c`` subprocess measured in the same run.

Usage: python bench/sandbox_overhead.py [runs]
"""

from __future__ import annotations

import subprocess
import sys
import time

from atlas_router.tools.sandbox import run_python


def _timed(fn, runs: int) -> float:
    start = time.perf_counter()
    for _ in range(runs):
        fn()
    return (time.perf_counter() - start) / runs


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    code = "print(sum(i * i for i in range(1000)))"
    bare = _timed(lambda: subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, check=True), runs)
    sandboxed = _timed(lambda: run_python(code), runs)
    print(f"bare python subprocess: {bare * 1000:.1f} ms/run")
    print(f"sandboxed run_python:   {sandboxed * 1000:.1f} ms/run")
    print(f"ratio sandbox/bare:     {sandboxed / bare:.2f}x")


if __name__ == "__main__":
    main()
