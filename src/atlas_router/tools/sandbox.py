"""Run untrusted Python (model-written code, benchmark tests) in a locked-down child process.

``run_python(code, limits)`` starts ``sys.executable -I -B sandbox_bootstrap.py`` in a fresh scratch
directory (deleted afterwards) with a cleared environment, in its own session, and reads its output with
a cap. The child locks itself down before running the code (namespaces, rlimits, Landlock, seccomp, an
audit hook: see ``sandbox_bootstrap``); this side enforces the wall-clock limit and the output cap by
killing the whole process group. Every refusal comes back as a one-line ``error`` and an
``error_kind`` so callers (the python tool, the code grader) can tell a wrong program from a blocked one.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any

BOOTSTRAP = Path(__file__).with_name("sandbox_bootstrap.py")
_JOB_FILE = ".atlas_job.json"
_REPORT_CAP = 1 << 20


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one run. The layer switches exist so tests can show each kernel layer on its own."""

    timeout_s: float = 10.0
    memory_mb: int = 512
    max_output_bytes: int = 64 * 1024
    file_mb: int = 16
    namespaces: bool = True
    landlock: bool = True
    seccomp: bool = True
    audit_hook: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.timeout_s, (int, float)) and 0 < self.timeout_s <= 3600):
            raise ValueError(f"timeout_s must be a number of seconds in (0, 3600], got {self.timeout_s!r}")
        for name in ("memory_mb", "max_output_bytes", "file_mb"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.memory_mb < 64:
            raise ValueError(f"memory_mb must be at least 64 (Python itself needs it), got {self.memory_mb}")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "SandboxLimits":
        """Limits from a tool's settings; unknown keys are ignored (they belong to the tool)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in settings.items() if k in names})

    @property
    def cpu_s(self) -> int:
        return math.ceil(self.timeout_s) + 1


@dataclass
class SandboxResult:
    """How a run ended. ``error`` is one line; ``error_kind`` is one of: timeout, memory, output,
    network, write, process, native, signal, file_size, exception, exit, crash."""

    ok: bool
    stdout: str
    stderr: str
    error: str | None = None
    error_kind: str | None = None
    error_line: int | None = None
    exit_code: int | None = None
    duration_s: float = 0.0
    layers: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _child_env() -> dict[str, str]:
    """PATH and LANG only, plus thread caps so numeric libraries fit the address-space limit."""
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LANG": os.environ.get("LANG", "C.UTF-8")}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[var] = "1"
    env["MALLOC_ARENA_MAX"] = "2"
    return env


def _write_files(scratch: Path, files: Mapping[str, str | bytes]) -> None:
    for name, content in files.items():
        rel = PurePosixPath(name)
        if rel.is_absolute() or not rel.parts or ".." in rel.parts:
            raise ValueError(f"sandbox file names must be relative paths inside the scratch directory: {name!r}")
        target = scratch.joinpath(*rel.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")


def _remove_tree(path: Path) -> None:
    """Delete the scratch directory even if the code made parts of it read-only."""

    def retry(func, p, _exc) -> None:
        try:
            os.chmod(os.path.dirname(p), stat.S_IRWXU)
            os.chmod(p, stat.S_IRWXU)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=retry)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _Reader:
    """Reads stdout, stderr and the report pipe together, stopping at the deadline or the output cap."""

    def __init__(self, proc: subprocess.Popen, report_fd: int, cap: int) -> None:
        self.proc, self.cap = proc, cap
        self.out, self.err, self.report = bytearray(), bytearray(), bytearray()
        self.total = 0
        self.sel = selectors.DefaultSelector()
        assert proc.stdout is not None and proc.stderr is not None
        self.sel.register(proc.stdout.fileno(), selectors.EVENT_READ, self.out)
        self.sel.register(proc.stderr.fileno(), selectors.EVENT_READ, self.err)
        self.sel.register(report_fd, selectors.EVENT_READ, self.report)

    def pump(self, deadline: float) -> str | None:
        """Read until every pipe closes; returns "timeout" or "output" when a limit stops it first."""
        try:
            while self.sel.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "timeout"
                for key, _ in self.sel.select(remaining):
                    chunk = os.read(key.fd, 65536)
                    buf: bytearray = key.data
                    if not chunk:
                        self.sel.unregister(key.fd)
                        continue
                    if buf is self.report:
                        if len(buf) < _REPORT_CAP:
                            buf += chunk
                        continue
                    buf += chunk
                    self.total += len(chunk)
                    if self.total > self.cap:
                        return "output"
            return None
        finally:
            self.sel.close()


def _report(raw: bytes) -> dict[str, Any]:
    for line in reversed(raw.decode("utf-8", "replace").splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    return {}


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _classify(limits: SandboxLimits, stop: str | None, returncode: int | None, report: dict[str, Any],
              stderr: str) -> tuple[str | None, str | None, int | None]:
    """(error_kind, error, error_line) for a finished run; (None, None, None) on success."""
    if stop == "output":
        return "output", f"output limit exceeded ({limits.max_output_bytes} bytes)", None
    if stop == "timeout":
        return "timeout", f"time limit {limits.timeout_s:g}s exceeded", None
    status, line = report.get("status"), report.get("line")
    if status == "violation":
        return str(report.get("kind")), str(report.get("message")), line
    if status == "memory":
        return "memory", f"memory limit {limits.memory_mb} MB exceeded ({report.get('type', 'MemoryError')})", line
    if status == "exception":
        etype, message = report.get("type", "Exception"), report.get("message", "")
        if etype in ("OSError", "IOError") and "File too large" in message:
            return "file_size", f"file size limit {limits.file_mb} MB exceeded", line
        where = f" (line {line})" if line else ""
        text = f"{etype}: {message}" if message else etype
        return "exception", f"{text}{where}", line
    last = next((ln.strip() for ln in reversed(stderr.splitlines()) if ln.strip()), "")
    if status == "exit":
        code = report.get("code", returncode)
        if not code:
            return None, None, None
        return "exit", f"exited with status {code}" + (f": {last}" if last else ""), None
    if status in ("ok", None) and returncode == 0:  # no report: the code left through os._exit(0)
        return None, None, None
    if returncode is not None and returncode < 0:
        sig = -returncode
        if sig == signal.SIGXCPU:
            return "timeout", f"time limit {limits.timeout_s:g}s exceeded (CPU time)", None
        if sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGKILL):
            return "crash", (f"process killed by {_signal_name(sig)} "
                             f"(the memory limit of {limits.memory_mb} MB may have been exceeded)"), None
        return "crash", f"process killed by {_signal_name(sig)}", None
    return "crash", f"process exited with status {returncode}" + (f": {last}" if last else ""), None


def run_python(code: str, limits: SandboxLimits | None = None, *, stdin: str | bytes | None = None,
               files: Mapping[str, str | bytes] | None = None) -> SandboxResult:
    """Run ``code`` as ``__main__`` in a sandboxed child; blocks until it ends or a limit stops it.

    ``stdin`` is fed to the program's standard input; ``files`` are written into the scratch directory
    (relative names) before it starts, for test fixtures or helper modules.
    """
    limits = limits or SandboxLimits()
    scratch = Path(tempfile.mkdtemp(prefix="atlas-sandbox-"))
    start = time.monotonic()
    try:
        if files:
            _write_files(scratch, files)
        job = {"code": code, "scratch": str(scratch), "memory_mb": limits.memory_mb, "cpu_s": limits.cpu_s,
               "file_mb": limits.file_mb, "namespaces": limits.namespaces, "landlock": limits.landlock,
               "seccomp": limits.seccomp, "audit_hook": limits.audit_hook}
        job_path = scratch / _JOB_FILE
        job_path.write_text(json.dumps(job), encoding="utf-8")
        with tempfile.TemporaryFile() as stdin_file:
            if stdin:
                stdin_file.write(stdin.encode("utf-8") if isinstance(stdin, str) else stdin)
                stdin_file.seek(0)
            report_r, report_w = os.pipe()
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-I", "-B", str(BOOTSTRAP), str(job_path), str(report_w)],
                    stdin=stdin_file, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=scratch,
                    env=_child_env(), start_new_session=True, pass_fds=(report_w,), close_fds=True,
                )
            except BaseException:
                os.close(report_r)
                raise
            finally:
                os.close(report_w)
            try:
                reader = _Reader(proc, report_r, limits.max_output_bytes)
                stop = reader.pump(start + limits.timeout_s)
                if stop is None:
                    try:
                        proc.wait(timeout=max(0.0, start + limits.timeout_s - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        stop = "timeout"
            finally:
                _kill_group(proc)  # also reaps anything the code left behind in its session
                proc.wait()
                for pipe in (proc.stdout, proc.stderr):
                    if pipe is not None:
                        pipe.close()
                os.close(report_r)
        duration = time.monotonic() - start
        report = _report(bytes(reader.report))
        stdout = bytes(reader.out[: limits.max_output_bytes]).decode("utf-8", "replace")
        stderr = bytes(reader.err[: limits.max_output_bytes]).decode("utf-8", "replace")
        kind, error, line = _classify(limits, stop, proc.returncode, report, stderr)
        return SandboxResult(ok=kind is None, stdout=stdout, stderr=stderr, error=error, error_kind=kind,
                             error_line=line, exit_code=proc.returncode, duration_s=duration,
                             layers=dict(report.get("layers", {})))
    finally:
        _remove_tree(scratch)


async def arun_python(code: str, limits: SandboxLimits | None = None, *, stdin: str | bytes | None = None,
                      files: Mapping[str, str | bytes] | None = None) -> SandboxResult:
    """``run_python`` without blocking the event loop (the wait happens in a worker thread)."""
    return await asyncio.to_thread(run_python, code, limits, stdin=stdin, files=files)
