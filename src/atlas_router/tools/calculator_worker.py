"""A long-lived child process that runs calculator computations, so a runaway one can be killed.

sympy calls cannot be interrupted inside a thread (``factor(2**256 + 1)`` may run for hours), so the
calculator sends each request as a JSON line to this worker and kills it when the time limit passes;
the next call starts a fresh one. The worker also caps its own address space.
"""

from __future__ import annotations

import json
import resource
import select
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import asdict
from typing import Any

STARTUP_TIMEOUT_S = 120.0


def serve(memory_mb: int) -> None:
    """Answer one JSON request per stdin line until stdin closes."""
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from atlas_router.tools.calculator_math import CalcRequest, CalculatorError, compute

    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        try:
            req = CalcRequest(**json.loads(line))
            output, data = compute(req)
            reply: dict[str, Any] = {"ok": True, "output": output, "data": data}
        except CalculatorError as err:
            reply = {"ok": False, "error": str(err)}
        except MemoryError:
            reply = {"ok": False, "error": f"memory limit {memory_mb} MB exceeded"}
        except RecursionError:
            reply = {"ok": False, "error": "expression too deeply nested"}
        except Exception as err:  # sympy raises many kinds; each becomes a one-line error for the model
            reply = {"ok": False, "error": f"sympy could not do it: {type(err).__name__}: {err}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


class WorkerTimeout(Exception):
    """The computation ran past its time limit; the worker was killed."""


class ComputeProcess:
    """Client side: one worker, started lazily, used by one request at a time, killed on timeout."""

    def __init__(self, memory_mb: int = 1024) -> None:
        self.memory_mb = memory_mb
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._finalizer = weakref.finalize(self, ComputeProcess._kill, [None])

    @staticmethod
    def _kill(holder: list) -> None:
        proc = holder[0]
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def _readline(self, proc: subprocess.Popen, timeout_s: float) -> bytes | None:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, timeout_s))
        return proc.stdout.readline() if ready else None

    def _start(self) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "atlas_router.tools.calculator_worker", str(self.memory_mb)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, ComputeProcess._kill, [proc])
        line = self._readline(proc, STARTUP_TIMEOUT_S)
        if not line or not json.loads(line).get("ready"):
            ComputeProcess._kill([proc])
            raise RuntimeError("the calculator worker failed to start")
        return proc

    def compute(self, request: Any, timeout_s: float) -> dict[str, Any]:
        """Send one CalcRequest; the reply dict has ok/output/data or ok/error. Raises WorkerTimeout."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            proc = self._proc
            assert proc.stdin is not None
            start = time.monotonic()
            proc.stdin.write((json.dumps(asdict(request)) + "\n").encode())
            proc.stdin.flush()
            line = self._readline(proc, timeout_s - (time.monotonic() - start))
            if not line:
                ComputeProcess._kill([proc])
                self._proc = None
                if line is None:
                    raise WorkerTimeout
                return {"ok": False, "error": "the computation crashed the calculator worker"}
            return json.loads(line)

    def close(self) -> None:
        with self._lock:
            ComputeProcess._kill([self._proc])
            self._proc = None


if __name__ == "__main__":
    serve(int(sys.argv[1]) if len(sys.argv) > 1 else 1024)
