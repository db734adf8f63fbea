"""Run untrusted Python (model-written code, benchmark tests) in a locked-down child process.

``run_python(code, limits)`` asks the sandbox fork server (one warm ``sandbox_bootstrap`` process per
parent process, started with a cleared environment in its own session) for a fresh child, hands it the job
on an unlinked file and pipes for its output, and reads the output with a cap.
The child locks itself down with the kernel before running the code (a memory cgroup, PID/mount/net/IPC
namespaces, a private read-only root with a size-limited scratch tmpfs, its own uid, Landlock, a seccomp
allow-list: see ``sandbox_bootstrap``). This side enforces the wall-clock limit and the output cap by
killing the whole process group, and decides the verdict from what the child cannot forge: the exit
status, its own clock and the cgroup's counters. The child's report only adds detail (which exception,
which line) to a run that already failed. A layer the kernel refused is logged as a warning and shown in
``SandboxResult.layers``; ``require_all_layers`` (or ``ATLAS_SANDBOX_REQUIRE_ALL_LAYERS=1``) refuses to
run code without every layer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import marshal
import math
import os
import selectors
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any

from atlas_router.config import env_flag, subprocess_env
from atlas_router.tools.sandbox_cgroup import MemoryCgroup
from atlas_router.tools.sandbox_forkserver import ForkServerError, get_server
from atlas_router.tools.sandbox_policy import seccomp_program

BOOTSTRAP = Path(__file__).with_name("sandbox_bootstrap.py")
_REPORT_CAP = 1 << 20
_REFUSED_EXIT = 125  # sandbox_bootstrap.REFUSED_EXIT
log = logging.getLogger("atlas_router.sandbox")
_warned: set[str] = set()


def _require_all_default() -> bool:
    return env_flag("ATLAS_SANDBOX_REQUIRE_ALL_LAYERS")


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one run. The layer switches exist so tests can show each kernel layer on its own."""

    timeout_s: float = 10.0
    memory_mb: int = 512
    max_output_bytes: int = 64 * 1024
    file_mb: int = 16
    disk_mb: int = 64
    namespaces: bool = True
    landlock: bool = True
    seccomp: bool = True
    audit_hook: bool = True
    cgroup: bool = True
    require_all_layers: bool = field(default_factory=_require_all_default)

    def __post_init__(self) -> None:
        if not (isinstance(self.timeout_s, (int, float)) and 0 < self.timeout_s <= 3600):
            raise ValueError(f"timeout_s must be a number of seconds in (0, 3600], got {self.timeout_s!r}")
        for name in ("memory_mb", "max_output_bytes", "file_mb", "disk_mb"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.memory_mb < 64:
            raise ValueError(f"memory_mb must be at least 64 (Python itself needs it), got {self.memory_mb}")
        for name in ("namespaces", "landlock", "seccomp", "audit_hook", "cgroup", "require_all_layers"):
            if not isinstance(getattr(self, name), bool):  # "no" must not switch a layer on, or off
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")

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
    network, write, process, native, signal, file_size, exception, exit, crash, sandbox (a required
    layer is missing). ``ok`` comes from the exit status and the parent's own limits only.
    ``memory_peak_mb`` is the cgroup's peak, where a cgroup was used."""

    ok: bool
    stdout: str
    stderr: str
    error: str | None = None
    error_kind: str | None = None
    error_line: int | None = None
    exit_code: int | None = None
    duration_s: float = 0.0
    layers: dict[str, str] = field(default_factory=dict)
    memory_peak_mb: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _child_env() -> dict[str, str]:
    """PATH and LANG only, plus thread caps so numeric libraries fit the address-space limit."""
    env = subprocess_env(only={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"})
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[var] = "1"
    env["MALLOC_ARENA_MAX"] = "2"
    return env


def _job_files(files: Mapping[str, str | bytes]) -> dict[str, tuple[str, str]]:
    """Checked relative names -> ("text"|"b64", content); the child writes them into its scratch."""
    out: dict[str, tuple[str, str]] = {}
    for name, content in files.items():
        rel = PurePosixPath(name)
        if rel.is_absolute() or not rel.parts or ".." in rel.parts:
            raise ValueError(f"sandbox file names must be relative paths inside the scratch directory: {name!r}")
        if isinstance(content, bytes):
            out[str(rel)] = ("b64", base64.b64encode(content).decode("ascii"))
        else:
            out[str(rel)] = ("text", content)
    return out


def _remove_tree(path: Path) -> None:
    """Delete the scratch directory even if the code made parts of it read-only. (With a private root the
    code wrote to its own tmpfs and this folder is empty; this matters where that layer is missing.)"""

    def retry(func, p, _exc) -> None:
        try:
            os.chmod(os.path.dirname(p), stat.S_IRWXU)  # a real folder: rmtree does not follow links
            if not os.path.islink(p):  # chmod follows links: never onto a file the code pointed at
                os.chmod(p, stat.S_IRWXU)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=retry)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _Reader:
    """Reads stdout, stderr and the report pipe together, stopping at the deadline or the output cap."""

    def __init__(self, out_fd: int, err_fd: int, report_fd: int, cap: int) -> None:
        self.cap = cap
        self.out, self.err, self.report = bytearray(), bytearray(), bytearray()
        self.total = 0
        self.sel = selectors.DefaultSelector()
        self.sel.register(out_fd, selectors.EVENT_READ, self.out)
        self.sel.register(err_fd, selectors.EVENT_READ, self.err)
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


def _report(raw: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the layers line, written before the user's code ran; the last diagnostic line, which the code
    could have forged and so only describes a failure the exit status already shows)."""
    first: dict[str, Any] = {}
    last: dict[str, Any] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict):
            if not first:
                first = data
            else:
                last = data
    return first, last


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _classify(limits: SandboxLimits, stop: str | None, returncode: int | None, report: dict[str, Any],
              stderr: str, oom: bool) -> tuple[str | None, str | None, int | None]:
    """(error_kind, error, error_line) for a finished run; (None, None, None) on success.

    Success is decided here from the parent's measurements alone: no limit stopped the run, the cgroup
    saw no OOM kill and the process exited with status 0. The report only names a failure."""
    if stop == "output":
        return "output", f"output limit exceeded ({limits.max_output_bytes} bytes)", None
    if stop == "timeout":
        return "timeout", f"time limit {limits.timeout_s:g}s exceeded", None
    if oom:
        return "memory", f"memory limit {limits.memory_mb} MB exceeded (killed by the kernel)", None
    if returncode == 0:
        return None, None, None
    status, line = report.get("status"), report.get("line")
    line = line if isinstance(line, int) and not isinstance(line, bool) else None
    if status == "violation":
        return str(report.get("kind")), str(report.get("message")), line
    if status == "memory":
        return "memory", f"memory limit {limits.memory_mb} MB exceeded ({report.get('type', 'MemoryError')})", line
    if status == "exception":
        etype, message = str(report.get("type", "Exception")), str(report.get("message", ""))
        if etype in ("OSError", "IOError") and "File too large" in message:
            return "file_size", f"file size limit {limits.file_mb} MB exceeded", line
        where = f" (line {line})" if line else ""
        text = f"{etype}: {message}" if message else etype
        return "exception", f"{text}{where}", line
    last = next((ln.strip() for ln in reversed(stderr.splitlines()) if ln.strip()), "")
    if returncode is not None and returncode > 0:
        return "exit", f"exited with status {returncode}" + (f": {last}" if last else ""), None
    if returncode is not None and returncode < 0:
        sig = -returncode
        if sig == signal.SIGXCPU:
            return "timeout", f"time limit {limits.timeout_s:g}s exceeded (CPU time)", None
        if sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGKILL):
            return "crash", (f"process killed by {_signal_name(sig)} "
                             f"(the memory limit of {limits.memory_mb} MB may have been exceeded)"), None
        return "crash", f"process killed by {_signal_name(sig)}", None
    return "crash", f"process exited with status {returncode}" + (f": {last}" if last else ""), None


def _degraded(layers: Mapping[str, str]) -> list[str]:
    """Kernel layers the kernel refused (the caller's own switches are not warned about)."""
    return sorted(k for k, v in layers.items() if str(v).startswith("unavailable") or "(no signal scope" in str(v))


def _warn_degraded(layers: Mapping[str, str]) -> None:
    """Say loudly (once per distinct situation) which kernel layers this machine refused."""
    missing = _degraded(layers)
    key = ";".join(f"{k}={layers[k]}" for k in missing)
    if missing and key not in _warned:
        _warned.add(key)
        log.warning("sandbox runs WITHOUT these kernel layers: %s (set require_all_layers or "
                    "ATLAS_SANDBOX_REQUIRE_ALL_LAYERS=1 to refuse such runs)",
                    "; ".join(f"{k}: {layers[k]}" for k in missing))


def _seccomp_bytes(limits: SandboxLimits, memfd: bool, self_pid: int | None) -> bytes:
    """The BPF program for a child that is PID 1 of its namespace (``self_pid=1``: it may signal itself),
    or one that may not signal at all (no PID namespace: pid 1 would be the host's init)."""
    if not limits.seccomp:
        return b""
    try:
        return seccomp_program(self_pid, memfd)
    except Exception as err:  # libseccomp missing: the child reports the layer as unavailable
        log.warning("cannot build the sandbox's seccomp filter: %s", err)
        return b""


def _job_handle(job: dict[str, Any]):
    """An unlinked file holding the job: no path the code could find, no pipe that could block."""
    handle = tempfile.TemporaryFile()
    handle.write(marshal.dumps(job))  # the child reads it without importing json
    handle.seek(0)
    return handle


def _execute(stdin_fd: int, job_fd: int, limits: SandboxLimits,
             start: float) -> tuple[_Reader, str | None, int, bool]:
    """One run through the fork server: (what was read, the limit that stopped it, the wait status,
    whether the server died under it)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    report_r, report_w = os.pipe()
    try:
        try:
            fds = [stdin_fd, out_w, err_w, report_w, job_fd]
            try:
                run = get_server(BOOTSTRAP, _child_env()).spawn(fds)
            except ForkServerError:  # it died between runs: a fresh one gets a second chance
                run = get_server(BOOTSTRAP, _child_env()).spawn(fds)
        finally:
            for fd in (out_w, err_w, report_w):
                os.close(fd)
        try:
            reader = _Reader(out_r, err_r, report_r, limits.max_output_bytes)
            stop = reader.pump(start + limits.timeout_s)
            if stop is None and not run.exited.wait(max(0.0, start + limits.timeout_s - time.monotonic())):
                stop = "timeout"
        finally:
            if not run.exited.is_set() or run.failed:  # failed: the server died, its runs may not have
                _kill_group(run.pid)  # the run's own session: the bootstrap and the sandboxed PID 1
            run.exited.wait(10)
        return reader, stop, run.status, run.failed
    finally:
        for fd in (out_r, err_r, report_r):
            os.close(fd)


def run_python(code: str, limits: SandboxLimits | None = None, *, stdin: str | bytes | None = None,
               files: Mapping[str, str | bytes] | None = None) -> SandboxResult:
    """Run ``code`` as ``__main__`` in a sandboxed child; blocks until it ends or a limit stops it.

    ``stdin`` is fed to the program's standard input; ``files`` are written into the scratch directory
    (relative names) before it starts, for test fixtures or helper modules.
    """
    limits = limits or SandboxLimits()
    job_files = _job_files(files or {})
    group = MemoryCgroup.create(limits.memory_mb) if limits.cgroup else "off"
    scratch = Path(tempfile.mkdtemp(prefix="atlas-sandbox-"))
    start = time.monotonic()
    try:
        cg = group if isinstance(group, MemoryCgroup) else None
        job = {"code": code, "scratch": str(scratch), "memory_mb": limits.memory_mb, "cpu_s": limits.cpu_s,
               "file_mb": limits.file_mb, "disk_mb": limits.disk_mb, "namespaces": limits.namespaces,
               "landlock": limits.landlock, "seccomp": limits.seccomp, "audit_hook": limits.audit_hook,
               "require_all_layers": limits.require_all_layers, "files": job_files,
               "seccomp_bpf": _seccomp_bytes(limits, cg is not None, 1),
               "seccomp_bpf_no_pid_ns": _seccomp_bytes(limits, cg is not None, None),
               "cgroup_procs": cg.procs if cg else None, "cgroup_version": cg.version if cg else None,
               "cgroup_reason": None if cg else (group if group == "off" else f"unavailable ({group})")}
        with tempfile.TemporaryFile() as stdin_file, _job_handle(job) as job_file:
            if stdin:
                stdin_file.write(stdin.encode("utf-8") if isinstance(stdin, str) else stdin)
                stdin_file.seek(0)
            reader, stop, status, server_died = _execute(stdin_file.fileno(), job_file.fileno(), limits, start)
        returncode = os.waitstatus_to_exitcode(status)
        duration = time.monotonic() - start
        first, report = _report(bytes(reader.report))
        layers = {str(k): str(v) for k, v in dict(first.get("layers", {})).items()}
        _warn_degraded(layers)
        stdout = bytes(reader.out[: limits.max_output_bytes]).decode("utf-8", "replace")
        stderr = bytes(reader.err[: limits.max_output_bytes]).decode("utf-8", "replace")
        oom = cg.oom_killed() if cg else False
        peak = cg.peak_bytes() if cg else None
        if server_died:
            kind, error, line = "crash", "the sandbox fork server died during the run", None
        elif returncode == _REFUSED_EXIT and first.get("refused"):
            kind, line = "sandbox", None
            error = "refused to run: the kernel did not grant these required sandbox layers: " + ", ".join(
                f"{k} ({layers.get(k, '?')})" for k in first["refused"])
        else:
            kind, error, line = _classify(limits, stop, returncode, report, stderr, oom)
        return SandboxResult(ok=kind is None, stdout=stdout, stderr=stderr, error=error, error_kind=kind,
                             error_line=line, exit_code=returncode, duration_s=duration, layers=layers,
                             memory_peak_mb=None if peak is None else round(peak / 2 ** 20, 1))
    finally:
        if isinstance(group, MemoryCgroup):
            group.remove()
        _remove_tree(scratch)


async def arun_python(code: str, limits: SandboxLimits | None = None, *, stdin: str | bytes | None = None,
                      files: Mapping[str, str | bytes] | None = None) -> SandboxResult:
    """``run_python`` without blocking the event loop (the wait happens in a worker thread)."""
    return await asyncio.to_thread(run_python, code, limits, stdin=stdin, files=files)
