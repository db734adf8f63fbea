"""Run every bench script, one after another, and sum up their checks (each figure against its floor).

Each script runs in its own process with its own timeout; its output is shown as it runs, and the
``CHECK`` lines (see ``_report``) of all of them are repeated at the end. Exit 1 when a check failed or
a script failed. Numbers on a shared machine are noisy: compare ratios within one run, and rerun.

    python bench/run_all.py [--only encoder_speed,pair_throughput] [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: script, its normal arguments, its --quick arguments, timeout in seconds (the gateway runs with its
#: default one worker: on the 2-core reference machine a second one only competes with the load generator
#: and the upstream, 0.75x direct at 32 clients against 0.90-0.97x with one, 2026-12-03)
SCRIPTS: list[tuple[str, list[str], list[str], int]] = [
    ("encoder_speed", [], ["--queries", "300", "--repeat", "1"], 1200),
    ("routing_speed", [], ["--queries", "500", "--single", "500"], 1200),
    ("routing_instructions", [], ["--decisions", "100"], 900),
    ("pair_throughput", [], ["--jobs", "256", "--repeat", "1"], 600),
    ("gateway_load", [], ["--requests", "600", "--time-cap", "10"], 900),
    ("gateway_app_cpu", [], ["--requests", "600", "--rounds", "1"], 600),  # no floor: where the gateway's CPU goes
    ("upstream_cookies", [], ["--calls", "300", "--rounds", "1"], 600),  # no floor: why the pool's client keeps no cookies
    ("records_load", [], ["--rows", "200000"], 900),
    ("sandbox_overhead", [], [], 600),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated script names (default: all)")
    ap.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run, not a measurement")
    args = ap.parse_args()
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - {s[0] for s in SCRIPTS}
    if unknown:
        raise SystemExit(f"unknown bench script(s): {', '.join(sorted(unknown))}")
    summary: list[str] = []
    failed = False
    for name, normal, quick, timeout in SCRIPTS:
        if only and name not in only:
            continue
        cmd = [sys.executable, str(HERE / f"{name}.py"), *(quick if args.quick else normal)]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        checks: list[str] = []
        try:
            with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
                timer = threading.Timer(timeout, proc.kill)  # a hung script is ended, the others still run
                timer.start()
                assert proc.stdout is not None
                for line in proc.stdout:
                    print(line, end="", flush=True)
                    if line.startswith("CHECK "):
                        checks.append(line.rstrip())
                rc = proc.wait()
                timer.cancel()
        except OSError as err:
            rc, checks = 1, [f"could not start: {err}"]
        took = time.perf_counter() - t0
        status = "ok" if rc == 0 else f"exit {rc}"
        failed |= rc != 0
        summary.append(f"{name} ({took:.0f}s, {status})")
        summary += [f"  {c}" for c in checks] or ["  (prints figures, no binding check)"]
    print("\n=== summary")
    print("\n".join(summary))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
