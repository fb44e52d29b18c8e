"""A circuit breaker per endpoint: closed, open, half-open.

closed --(N consecutive failures, or failure rate over the window)--> open
open --(open interval elapsed, or `probe_now`; next request)--> half_open (one probe passes)
half_open --probe succeeds--> closed (interval back to its start)
half_open --probe fails--> open (interval grows by the multiplier, up to the cap)
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

_LOGGER = logging.getLogger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    failure_threshold: int = 5  # consecutive failures that open the circuit
    failure_rate: float = 0.5  # or this share of failures over the window ...
    window: float = 60.0  # ... of this many seconds ...
    min_calls: int = 20  # ... once it holds at least this many calls
    open_interval: float = 5.0  # first wait before a probe
    max_open_interval: float = 300.0
    interval_multiplier: float = 2.0


StateListener = Callable[["CircuitBreaker", BreakerState, BreakerState], None]


class CircuitBreaker:
    """Decides whether a call may go to one endpoint. Not thread-safe: use on one loop."""

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._window: deque[tuple[float, bool]] = deque()
        self._window_failures = 0
        self._interval = self.config.open_interval
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._listeners: list[StateListener] = []
        self.opened_count = 0

    @property
    def state(self) -> BreakerState:
        return self._state

    def add_listener(self, listener: StateListener) -> Callable[[], None]:
        """Call ``listener(breaker, old, new)`` on every transition; returns a remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def retry_in(self) -> float:
        """Seconds until a probe may pass (0 when a call may go now)."""
        if self._state is BreakerState.OPEN:
            return max(0.0, self._opened_at + self._interval - self._clock())
        if self._state is BreakerState.HALF_OPEN and self._probe_in_flight:
            return self._interval
        return 0.0

    def allow_request(self) -> bool:
        """True when a call may go now; in half-open, only the single probe passes."""
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            if self._clock() - self._opened_at < self._interval:
                return False
            self._transition(BreakerState.HALF_OPEN)
        if self._probe_in_flight:
            return False
        self._probe_in_flight = True
        return True

    def record_success(self) -> None:
        self._remember(ok=True)
        self._consecutive_failures = 0
        if self._state is not BreakerState.CLOSED:
            self._probe_in_flight = False
            self._interval = self.config.open_interval
            self._window.clear()
            self._window_failures = 0
            self._transition(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._remember(ok=False)
        self._consecutive_failures += 1
        if self._state is BreakerState.HALF_OPEN:
            self._probe_in_flight = False
            self._interval = min(
                self._interval * self.config.interval_multiplier, self.config.max_open_interval
            )
            self._open()
        elif self._state is BreakerState.CLOSED and self._should_trip():
            self._interval = self.config.open_interval
            self._open()

    def probe_now(self) -> None:
        """Evidence from outside (a health check answered) that the endpoint is back:
        an open breaker lets its probe through now. The interval is kept, so a probe
        that fails waits as long as it would have."""
        if self._state is BreakerState.OPEN:
            self._opened_at = self._clock() - self._interval

    def release_probe(self) -> None:
        """The probe ended without a verdict (e.g. 429 or a cancelled call): allow another."""
        self._probe_in_flight = False

    def failure_ratio(self) -> float:
        self._prune()
        return self._window_failures / len(self._window) if self._window else 0.0

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self._state.value,
            "consecutive_failures": self._consecutive_failures,
            "failure_ratio": round(self.failure_ratio(), 4),
            "open_interval": self._interval,
            "retry_in": round(self.retry_in(), 3),
            "opened_count": self.opened_count,
        }

    def _should_trip(self) -> bool:
        if self._consecutive_failures >= self.config.failure_threshold:
            return True
        return (
            len(self._window) >= self.config.min_calls
            and self._window_failures / len(self._window) >= self.config.failure_rate
        )

    def _open(self) -> None:
        self._opened_at = self._clock()
        self.opened_count += 1
        self._transition(BreakerState.OPEN)

    def _remember(self, *, ok: bool) -> None:
        self._window.append((self._clock(), ok))
        if not ok:
            self._window_failures += 1
        self._prune()

    def _prune(self) -> None:
        horizon = self._clock() - self.config.window
        while self._window and self._window[0][0] < horizon:
            _, ok = self._window.popleft()
            if not ok:
                self._window_failures -= 1

    def _transition(self, new: BreakerState) -> None:
        old = self._state
        if old is new:
            return
        self._state = new
        for listener in list(self._listeners):
            try:
                listener(self, old, new)
            except Exception:
                _LOGGER.exception("Circuit breaker listener failed for %s", self.name)
