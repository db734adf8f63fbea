"""Competition-math answers (MATH, AIME, AMC) checked with math-verify: LaTeX, fractions, boxed answers.

math-verify bounds its own parsing and comparison with ``signal.alarm``, which only works in the main
thread and cancels any alarm the caller has set. So the check runs in this process only on the main
thread with no alarm pending; otherwise (servers, thread pools, a test runner's timer) it goes to a
long-lived worker process (``_math_worker``) under a wall-clock limit: a hung comparison kills the
worker, not the caller, and the next call starts a fresh one.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time

from atlas_router.core.answers import extract_answer, last_boxed

DEFAULT_TIMEOUT_S = 5


def _as_latex(answer: str) -> str:
    """Wrap a bare answer so math-verify's LaTeX extractor sees it as math."""
    answer = answer.strip()
    if "\\boxed" in answer or "$" in answer:
        return answer
    return f"${answer}$"


def gold_answer(reference: str) -> str:
    """The gold final answer: a MATH solution's last boxed value, else the reference itself."""
    boxed = last_boxed(reference)
    return boxed if boxed is not None else reference.strip()


def verify_answer(gold: str, prediction: str, timeout_s: int = DEFAULT_TIMEOUT_S) -> bool:
    """True when the prediction's final answer equals ``gold`` mathematically (runs in this thread)."""
    from math_verify import parse, verify

    if not gold.strip() or not prediction.strip():
        return False
    gold_parsed = parse(_as_latex(gold), parsing_timeout=timeout_s)
    if not gold_parsed:
        return False
    candidates = [prediction]
    stated = extract_answer(prediction)
    if stated and stated != prediction.strip():
        candidates.append(_as_latex(stated))
    for text in candidates:
        pred_parsed = parse(text, parsing_timeout=timeout_s)
        if pred_parsed and verify(gold_parsed, pred_parsed, timeout_seconds=timeout_s):
            return True
    return False


class _Worker:
    """One ``python -m atlas_router.data.graders._math_worker`` child answering JSON lines, one at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._buf = b""

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            from atlas_router.config import subprocess_env

            env = subprocess_env(PYTHONUNBUFFERED="1")
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "atlas_router.data.graders._math_worker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
            )
            self._buf = b""
        return self._proc

    def close(self) -> None:
        with self._lock:
            self._kill()

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def ask(self, gold: str, prediction: str, timeout_s: int, wall_s: float) -> bool:
        with self._lock:
            proc = self._start()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(json.dumps({"gold": gold, "prediction": prediction, "timeout": timeout_s}).encode()
                                 + b"\n")
                proc.stdin.flush()
            except OSError:
                self._kill()
                return False
            deadline = time.monotonic() + wall_s
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stdout, selectors.EVENT_READ)
                while b"\n" not in self._buf:
                    left = deadline - time.monotonic()
                    if left <= 0 or not sel.select(left):
                        self._kill()
                        return False
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        self._kill()
                        return False
                    self._buf += chunk
            line, self._buf = self._buf.split(b"\n", 1)
            try:
                return bool(json.loads(line)["ok"])
            except (ValueError, KeyError):
                return False


_worker = _Worker()
atexit.register(_worker.close)


def _signals_usable() -> bool:
    """math-verify's alarms are safe here: main thread, and no timer of the caller would be cancelled."""
    return threading.current_thread() is threading.main_thread() and signal.getitimer(signal.ITIMER_REAL)[0] == 0


def safe_verify(gold: str, prediction: str, timeout_s: int = DEFAULT_TIMEOUT_S) -> bool:
    """``verify_answer`` that returns within a bounded time from any thread; False on timeout or error."""
    if _signals_usable():
        try:
            return verify_answer(gold, prediction, timeout_s)
        except Exception:  # math-verify raises on pathological input: a wrong answer, not a crash
            return False
    # gold + up to two predictions are parsed and compared, each bounded inside the worker; the first
    # call also pays the worker's start-up (imports of sympy and math-verify)
    return _worker.ask(gold, prediction, timeout_s, wall_s=6 * timeout_s + 30)


def grade_math(prediction: str, reference: object, timeout_s: int = DEFAULT_TIMEOUT_S) -> float:
    """1.0 when the reply's final answer is mathematically equal to the reference answer."""
    return float(safe_verify(gold_answer(str(reference)), prediction or "", timeout_s))
