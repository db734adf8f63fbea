"""A memory cgroup per sandbox run: the kernel counts every page the child touches (heap, memfd, tmpfs
scratch, shared memory) against ``memory_mb`` and OOM-kills the run at the limit, which RLIMIT_AS alone
cannot do (memfd pages written with ``write`` are never mapped).

Works with cgroup v1 (the ``memory`` hierarchy) and v2 (a child of this process's cgroup with the memory
controller enabled), wherever this process may create a child cgroup (root, or a delegated subtree).
The child joins it itself, before any user code runs, by writing its pid to ``procs``.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, super options) of every cgroup mount."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            fstype, _source, opts = (right.split() + ["", "", ""])[:3]
            if fstype in ("cgroup", "cgroup2"):
                found.append((left.split()[4], fstype, set(opts.split(","))))
    return found


@functools.lru_cache(maxsize=1)
def _memory_parent() -> tuple[Path, int] | tuple[None, str]:
    """The directory under which this process may create a memory cgroup, and the cgroup version."""
    own: dict[str, str] = {}
    with open("/proc/self/cgroup", encoding="utf-8") as fh:
        for line in fh:
            _id, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                own[c] = path
    mounts = _mounts()
    for point, fstype, opts in mounts:
        if fstype == "cgroup" and "memory" in opts and "memory" in own:
            return Path(point + own["memory"]), 1
    for point, fstype, _opts in mounts:
        if fstype == "cgroup2" and "" in own:
            base = Path(point + own[""])
            try:
                if "memory" in (base / "cgroup.controllers").read_text().split():
                    return base, 2
            except OSError:
                continue
    return None, "no memory controller is mounted for this process"


@dataclass
class MemoryCgroup:
    """One run's cgroup: create before the child starts, read its counters after, then remove."""

    path: Path
    version: int

    @classmethod
    def create(cls, limit_mb: int) -> "MemoryCgroup | str":
        """The cgroup, or why none could be made (a one-line reason)."""
        parent, version = _memory_parent()
        if parent is None:
            return str(version)
        path = parent / f"atlas-sandbox-{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir()
        except OSError as err:
            return f"cannot create a cgroup under {parent}: {err.strerror}"
        group = cls(path, int(version))
        limit = str(limit_mb * 1024 * 1024)
        try:
            if group.version == 1:
                (path / "memory.limit_in_bytes").write_text(limit)
                swap = path / "memory.memsw.limit_in_bytes"
                if swap.exists():  # swap accounting: memory+swap gets the same limit, so no swapping out
                    swap.write_text(limit)
            else:
                (path / "memory.max").write_text(limit)
                if (path / "memory.swap.max").exists():
                    (path / "memory.swap.max").write_text("0")
        except OSError as err:
            group.remove()
            return f"cannot set the memory limit of {path}: {err.strerror}"
        return group

    @property
    def procs(self) -> str:
        return str(self.path / "cgroup.procs")

    def _read(self, name: str) -> str:
        try:
            return (self.path / name).read_text()
        except OSError:
            return ""

    def oom_killed(self) -> bool:
        """True when the kernel killed a process of this run at the memory limit."""
        text = self._read("memory.oom_control" if self.version == 1 else "memory.events")
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit() and int(value) > 0:
                return True
        return False

    def peak_bytes(self) -> int | None:
        text = self._read("memory.max_usage_in_bytes" if self.version == 1 else "memory.peak").strip()
        return int(text) if text.isdigit() else None

    def remove(self) -> None:
        """rmdir once every task has left (they are dead by now; the kernel may lag a few ms)."""
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.01)
