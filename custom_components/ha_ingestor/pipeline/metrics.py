"""Counters, gauges, latency percentiles and rates, cheap enough for every event.

Writes are O(1) appends; the sorting for percentiles happens on read, and readers
(sensors, the stats endpoint) ask at most about once a second.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable


class LatencyWindow:
    """Latency samples (milliseconds) of the last ``window`` seconds, at most ``max_samples``."""

    def __init__(
        self,
        window: float = 300.0,
        max_samples: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self._clock = clock
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)

    def record(self, value_ms: float) -> None:
        self._samples.append((self._clock(), value_ms))

    def record_many(self, values_ms: Iterable[float]) -> None:
        now = self._clock()
        self._samples.extend((now, value) for value in values_ms)

    def _values(self) -> list[float]:
        horizon = self._clock() - self.window
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
        return sorted(value for _, value in self._samples)

    def percentiles(self, *quantiles: float) -> list[float | None]:
        """Nearest-rank percentiles (0 <= q <= 100, 0 gives the minimum); None when empty."""
        for q in quantiles:
            if not 0 <= q <= 100:
                raise ValueError(f"percentile {q!r} is outside 0..100")
        values = self._values()
        if not values:
            return [None for _ in quantiles]
        count = len(values)
        # rank = ceil(q/100 * n). Quantiles are written in decimal (95, 99.9) and float
        # noise must not push an exact rank to the next one (0.07 * 100 == 7.000000000000001).
        return [values[max(0, math.ceil(round(q * count / 100, 9)) - 1)] for q in quantiles]

    def percentile(self, quantile: float) -> float | None:
        return self.percentiles(quantile)[0]

    def __len__(self) -> int:
        return len(self._values())


class RateMeter:
    """Events per second bucket, kept for ``window`` seconds; reports per minute."""

    def __init__(self, window: int = 60, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._buckets: deque[list[int]] = deque()  # [second, count]

    def mark(self, count: int = 1) -> None:
        second = int(self._clock())
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += count
        else:
            self._buckets.append([second, count])
            self._prune(second)

    def _prune(self, now_second: int) -> None:
        horizon = now_second - self.window
        while self._buckets and self._buckets[0][0] <= horizon:
            self._buckets.popleft()

    def total(self) -> int:
        """Events in the last ``window`` seconds."""
        self._prune(int(self._clock()))
        return sum(count for _, count in self._buckets)

    def per_minute(self) -> float:
        return self.total() * 60.0 / self.window

    def per_second(self) -> float:
        return self.total() / self.window


class PipelineMetrics:
    """The figures a forwarder keeps: counters by name, gauges, latency and rate."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._wall_clock = wall_clock
        self.counters: dict[str, int] = {}
        self.gauges: dict[str, float] = {}
        self.latency = LatencyWindow(clock=clock)
        self.delivered_rate = RateMeter(clock=clock)
        self.last_delivery: float | None = None  # wall time of the last delivered batch
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    def inc(self, name: str, count: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + count

    def get(self, name: str) -> int:
        return self.counters.get(name, 0)

    def set_gauge(self, name: str, value: float) -> None:
        self.gauges[name] = value

    def record_delivery(self, count: int, latencies_ms: Iterable[float]) -> None:
        self.inc("delivered", count)
        self.delivered_rate.mark(count)
        self.latency.record_many(latencies_ms)
        self.last_delivery = self._wall_clock()

    def record_error(self, message: str) -> None:
        self.inc("errors")
        self.last_error = message
        self.last_error_at = self._wall_clock()

    def success_rate(self) -> float | None:
        """Share of delivery attempts that succeeded, in percent (None before any)."""
        ok = self.get("batches_ok")
        failed = self.get("batches_failed")
        if ok + failed == 0:
            return None
        return round(100.0 * ok / (ok + failed), 2)

    def snapshot(self) -> dict[str, Any]:
        p50, p95, p99 = self.latency.percentiles(50, 95, 99)
        return {
            "counters": dict(self.counters),
            "gauges": dict(self.gauges),
            "latency_ms": {"p50": p50, "p95": p95, "p99": p99},
            "events_per_minute": self.delivered_rate.per_minute(),
            "success_rate": self.success_rate(),
            "last_delivery": self.last_delivery,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }
