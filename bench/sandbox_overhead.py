"""Cost of the sandbox per run, against a bare ``python -I -c`` subprocess measured in the same run.

Runs alternate (bare, sandboxed, bare, ...) so machine load hits both alike; medians are compared. The
first sandboxed run also starts the fork server, so it is timed on its own ("cold"). Every kernel layer is
on (the result's layers are printed), the audit hook too.

Usage: python bench/sandbox_overhead.py [runs]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from atlas_router.tools.sandbox import run_python

FLOOR = 3.0  # issue 16: a sandboxed run costs at most 3x a bare subprocess


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    code = "print(sum(i * i for i in range(1000)))"
    start = time.perf_counter()
    first = run_python(code)
    cold = time.perf_counter() - start
    assert first.ok, first.error
    bare, sandboxed = [], []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, check=True)
        bare.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = run_python(code)
        sandboxed.append(time.perf_counter() - start)
        assert result.ok and result.stdout == first.stdout, result.error
    b, s = statistics.median(bare), statistics.median(sandboxed)
    print(f"layers: {', '.join(f'{k}={v}' for k, v in first.layers.items())}")
    print(f"first sandboxed run (starts the fork server): {cold * 1000:.1f} ms")
    print(f"bare python subprocess: {b * 1000:.1f} ms/run (median of {runs})")
    print(f"sandboxed run_python:   {s * 1000:.1f} ms/run (median of {runs})")
    ratio = s / b
    print(f"ratio sandbox/bare:     {ratio:.2f}x (floor <= {FLOOR:g}x: {'OK' if ratio <= FLOOR else 'FAIL'})")


if __name__ == "__main__":
    main()
