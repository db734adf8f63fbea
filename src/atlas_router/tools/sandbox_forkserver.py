"""The parent's side of the sandbox fork server (``sandbox_bootstrap.serve``).

Starting a Python interpreter is most of what a short sandboxed run costs, so one warm server process per
parent process forks a fresh child for each run. The server starts lazily with a cleared environment, in
its own session; each child closes the server's descriptors before anything else and then locks itself
down exactly as a directly started bootstrap would. The server reports each child's pid and, once reaped,
its wait status, which is what the verdict is built on. Thread-safe: runs may come from many threads.
"""

from __future__ import annotations

import array
import atexit
import itertools
import os
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

_MSG = struct.Struct("QBqi")  # tag, kind (S started / E exited / F failed), pid, wait status


class ForkServerError(RuntimeError):
    """The server could not start a run (it died, or refused the request)."""


class _Run:
    __slots__ = ("started", "pid", "failed", "exited", "status")

    def __init__(self) -> None:
        self.started, self.exited = threading.Event(), threading.Event()
        self.pid = 0
        self.failed = False
        self.status = 0


class ForkServer:
    def __init__(self, bootstrap: Path, env: Mapping[str, str]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-B", str(bootstrap), "--serve", str(theirs.fileno())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd="/", env=dict(env),
                start_new_session=True, pass_fds=(theirs.fileno(),), close_fds=True,
            )
        finally:
            theirs.close()
        self.sock = ours
        self.owner = os.getpid()
        self.lock = threading.Lock()
        self.tags = itertools.count(1)
        self.runs: dict[int, _Run] = {}  # by tag until started, then by pid as well
        self.by_pid: dict[int, _Run] = {}
        self.early: dict[int, int] = {}  # exit statuses that arrived before the start reply was read
        self.dead = False
        self.reader = threading.Thread(target=self._read, name="atlas-sandbox-forkserver", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            while True:
                data = self.sock.recv(_MSG.size)
                if len(data) != _MSG.size:
                    break
                tag, kind, pid, status = _MSG.unpack(data)
                with self.lock:
                    if kind == ord("E"):
                        run = self.by_pid.pop(pid, None)
                        if run is None:
                            self.early[pid] = status
                            continue
                        run.status = status
                        run.exited.set()
                        continue
                    run = self.runs.pop(tag, None)
                    if run is None:
                        continue
                    if kind == ord("F"):
                        run.failed = True
                    else:
                        run.pid = pid
                        if pid in self.early:
                            run.status = self.early.pop(pid)
                            run.exited.set()
                        else:
                            self.by_pid[pid] = run
                    run.started.set()
        except OSError:
            pass
        with self.lock:  # the server is gone: every waiting run fails now rather than hangs
            self.dead = True
            for run in list(self.runs.values()) + list(self.by_pid.values()):
                run.failed = True
                run.status = 0x7F00  # reported as a crash
                run.started.set()
                run.exited.set()
            self.runs.clear()
            self.by_pid.clear()

    def spawn(self, fds: Sequence[int]) -> _Run:
        """Start one run with (stdin, stdout, stderr, report, job) descriptors; returns once it has a pid."""
        run = _Run()
        with self.lock:
            if self.dead:
                raise ForkServerError("the sandbox fork server has exited")
            tag = next(self.tags)
            self.runs[tag] = run
            try:
                self.sock.sendmsg([struct.pack("Q", tag)],
                                  [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())])
            except OSError as err:
                self.runs.pop(tag, None)
                raise ForkServerError(f"the sandbox fork server is unreachable: {err}") from err
        if not run.started.wait(30) or run.failed:
            raise ForkServerError("the sandbox fork server did not start the run")
        return run

    def close(self) -> None:
        try:
            self.sock.close()  # the server kills what is left and exits
        finally:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_server: ForkServer | None = None
_server_lock = threading.Lock()


def get_server(bootstrap: Path, env: Mapping[str, str]) -> ForkServer:
    """This process's server, started on first use (and again after a fork of the parent or its death)."""
    global _server
    with _server_lock:
        if _server is None or _server.owner != os.getpid() or _server.dead or _server.proc.poll() is not None:
            _server = ForkServer(bootstrap, env)
        return _server


def _close_at_exit() -> None:
    if _server is not None and _server.owner == os.getpid():
        _server.close()


atexit.register(_close_at_exit)
