"""A circuit breaker per upstream model: stop sending work to a model that keeps failing.

closed -> (``failures`` consecutive failures) -> open -> (``cooldown_s`` elapsed) -> half-open, where one
trial call is let through: success closes the circuit, failure opens it again. Written here rather than
taken from pybreaker because the gateway needs a non-blocking "may I?" check inside asyncio (pybreaker
wraps synchronous calls and its async support is Tornado-only).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum


class State(IntEnum):
    """Values exported as the circuit-state gauge: 0 closed, 1 half-open, 2 open."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """One upstream's breaker. Single-threaded use (the event loop), so no locks."""

    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[State], None] | None = None) -> None:
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._on_change = on_change
        self._state = State.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._trial_out = False

    @property
    def state(self) -> State:
        if self._state is State.OPEN and self._clock() - self._opened_at >= self.cooldown_s:
            self._set(State.HALF_OPEN)
            self._trial_out = False
        return self._state

    def retry_after_s(self) -> float:
        """Seconds until an open circuit lets a trial call through (0 when not open)."""
        if self.state is not State.OPEN:
            return 0.0
        return max(0.0, self.cooldown_s - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """Whether a call may go out now; in half-open, only one trial call at a time."""
        state = self.state
        if state is State.CLOSED:
            return True
        if state is State.HALF_OPEN and not self._trial_out:
            self._trial_out = True
            return True
        return False

    def release(self) -> None:
        """Give back a half-open trial that never reached the upstream (no verdict either way)."""
        self._trial_out = False

    def success(self) -> None:
        self._consecutive = 0
        self._trial_out = False
        if self._state is not State.CLOSED:
            self._set(State.CLOSED)

    def reset(self) -> None:
        """Close the circuit and forget past failures (a reload: the operator fixed what failed)."""
        self._consecutive = 0
        self._trial_out = False
        self._set(State.CLOSED)

    def failure(self) -> None:
        self._consecutive += 1
        self._trial_out = False
        if self._state is State.HALF_OPEN or self._consecutive >= self.threshold:
            self._opened_at = self._clock()
            self._set(State.OPEN)

    def _set(self, state: State) -> None:
        if state is not self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)


class BreakerBoard:
    """Breakers by model name, created on first use so a reloaded pool's new models get one too."""

    def __init__(self, failures: int, cooldown_s: float,
                 on_change: Callable[[str, State], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._on_change = on_change
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def __getitem__(self, model: str) -> CircuitBreaker:
        if model not in self._breakers:
            hook = (lambda s, m=model: self._on_change(m, s)) if self._on_change else None
            self._breakers[model] = CircuitBreaker(self.failures, self.cooldown_s, self._clock, hook)
            if self._on_change:
                self._on_change(model, State.CLOSED)
        return self._breakers[model]

    def reset(self) -> None:
        for breaker in self._breakers.values():
            breaker.reset()

    def states(self) -> dict[str, str]:
        return {m: b.state.name.lower() for m, b in self._breakers.items()}
