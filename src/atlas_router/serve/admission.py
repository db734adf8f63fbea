"""Admission control: at most ``max_concurrency`` requests run, at most ``max_queue`` wait; the rest get 429.

Overload then costs a fast refusal the client can retry, instead of unbounded memory and latency.
A request that waits longer than ``queue_timeout_s`` is refused the same way.
"""

from __future__ import annotations

import asyncio


class Rejected(Exception):
    """The gateway is full; ``retry_after_s`` is a hint for the Retry-After header."""

    def __init__(self, reason: str, retry_after_s: float = 1.0) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class Admission:
    """A concurrency limit with a bounded waiting queue, for one event loop."""

    def __init__(self, max_concurrency: int, max_queue: int, queue_timeout_s: float) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self._sem = asyncio.Semaphore(max_concurrency)
        self.admitted = 0  # running or waiting; counted on entry and exit, so a slot handed over counts once
        self.running = 0

    @property
    def waiting(self) -> int:
        return self.admitted - self.running

    @property
    def full(self) -> bool:
        """Every run slot and queue place is taken: the next request is refused."""
        return self.admitted >= self.max_concurrency + self.max_queue

    def refusal(self) -> Rejected:
        return Rejected(f"too many requests: {self.running} running and {self.waiting} waiting")

    def slot(self) -> "_Slot":
        """A run slot for the body of an ``async with``; raises Rejected when full. A class rather than a
        generator-based context manager: it is entered on every request."""
        return _Slot(self)


class _Slot:
    """One request's place: counted as admitted on entry, running once it holds the semaphore."""

    __slots__ = ("admission", "holds")

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.holds = False

    async def __aenter__(self) -> None:
        adm = self.admission
        if adm.full:
            raise adm.refusal()
        adm.admitted += 1
        try:
            if not adm._sem.locked():
                await adm._sem.acquire()  # a free slot: taken at once, no timer to arm and cancel
            else:
                try:
                    async with asyncio.timeout(adm.queue_timeout_s):  # no extra task, unlike wait_for
                        await adm._sem.acquire()
                except TimeoutError:
                    raise Rejected(f"waited {adm.queue_timeout_s:g}s for a slot") from None
        except BaseException:
            adm.admitted -= 1
            raise
        self.holds = True
        adm.running += 1

    async def __aexit__(self, *exc: object) -> None:
        adm = self.admission
        if self.holds:
            self.holds = False
            adm.running -= 1
            adm._sem.release()
            adm.admitted -= 1
