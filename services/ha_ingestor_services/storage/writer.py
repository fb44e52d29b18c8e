"""Group commit: concurrent requests share one backend write.

A request hands its records over and waits. One flusher task takes what has gathered
and writes it in one go (one SQLite transaction, one InfluxDB request): as soon as
``max_events`` are waiting, or every request in progress has handed its records over
(``in_progress``: the app's count; nobody else can join), else ``interval_s`` after the
oldest waiting request arrived. A lone sender (the integration keeps one batch in
flight) is thus never kept waiting for company. One flush runs at a time, so what
arrives during a flush joins the next one. Each request's wait ends when the flush
holding its records is durable, with one outcome per record, or with
`BackendUnavailable` for all of them.

`stop` refuses new requests, then flushes everything already accepted. Past
``max_waiting_events`` waiting, a request is refused with `BackendUnavailable` (a 503
with Retry-After) instead of queueing without bound while the backend is slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ha_ingestor_pipeline.metrics import LatencyWindow

from .backends.base import BackendUnavailable, Outcome
from .records import Record

_LOGGER = logging.getLogger(__name__)

WriteFn = Callable[[Sequence[Record]], Awaitable[list[Outcome]]]


@dataclass(slots=True)
class _Request:
    records: Sequence[Record]
    future: asyncio.Future[list[Outcome]]
    arrived: float


@dataclass(slots=True)
class WriterStats:
    flushes: int = 0
    flushed_events: int = 0
    failed_flushes: int = 0
    refused_requests: int = 0
    last_flush_events: int = 0
    max_flush_events: int = 0
    last_flush_ms: float | None = None
    last_error: str | None = None
    flush_latency: LatencyWindow = field(default_factory=LatencyWindow)


def _retrieve(future: asyncio.Future[list[Outcome]]) -> None:
    # A request that went away (client disconnect) leaves its future unread; reading the
    # exception here keeps asyncio from logging "exception was never retrieved".
    if not future.cancelled():
        future.exception()


class GroupCommitWriter:
    def __init__(
        self,
        write: WriteFn,
        *,
        max_events: int,
        interval_s: float,
        max_waiting_events: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        # How many requests are in progress now, theirs included (set by the service from
        # the app's count; None: unknown, so always wait ``interval_s`` for others).
        self.in_progress: Callable[[], int] | None = None
        self._max_events = max_events
        self._max_waiting_events = max_waiting_events
        self._interval_s = interval_s
        self._clock = clock
        self._waiting: list[_Request] = []
        self._waiting_events = 0
        self._wakeup = asyncio.Event()
        self._go = asyncio.Event()  # flush without waiting longer: full, or nobody to wait for
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.stats = WriterStats()

    @property
    def waiting_events(self) -> int:
        return self._waiting_events

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="storage-group-commit")

    async def submit(self, records: Sequence[Record]) -> list[Outcome]:
        """Wait until ``records`` are durable; one outcome each, in order."""
        if not records:
            return []
        if self._closing or self._task is None:
            raise BackendUnavailable("storage is shutting down")
        # Something is waiting already and this would pass the cap (a request on its own
        # always goes, however large: the batch limit bounds it).
        if self._waiting and self._waiting_events + len(records) > self._max_waiting_events:
            self.stats.refused_requests += 1
            raise BackendUnavailable(
                f"storage is busy: {self._waiting_events} events are waiting to be written",
                retry_after=1,
            )
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self._waiting.append(_Request(records, future, self._clock()))
        self._waiting_events += len(records)
        if self._no_one_to_wait_for():
            self._go.set()
        self._wakeup.set()
        # Shielded: a request whose client left still gets written (it was accepted).
        return await asyncio.shield(future)

    async def stop(self) -> None:
        """Refuse new requests, flush what was accepted, end the flusher."""
        self._closing = True
        self._wakeup.set()
        self._go.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            if not self._waiting:
                if self._closing:
                    return
                self._wakeup.clear()
                continue
            await self._linger()
            await self._flush(self._take())

    def _no_one_to_wait_for(self) -> bool:
        if self._closing or self._waiting_events >= self._max_events:
            return True
        return self.in_progress is not None and self.in_progress() <= len(self._waiting)

    async def _linger(self) -> None:
        """Give other requests until the oldest one's deadline to join this flush."""
        if self._no_one_to_wait_for():
            return
        remaining = self._waiting[0].arrived + self._interval_s - self._clock()
        if remaining <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._go.wait(), remaining)

    def _take(self) -> list[_Request]:
        """Whole requests up to ``max_events`` (a larger request goes alone)."""
        taken: list[_Request] = []
        count = 0
        while self._waiting and (
            not taken or count + len(self._waiting[0].records) <= self._max_events
        ):
            request = self._waiting.pop(0)
            taken.append(request)
            count += len(request.records)
        self._waiting_events -= count
        if not self._closing:
            self._go.clear()
        return taken

    async def _flush(self, requests: list[_Request]) -> None:
        records = [record for request in requests for record in request.records]
        started = time.perf_counter()
        try:
            outcomes = await self._write(records)
            if len(outcomes) != len(records):
                raise RuntimeError(f"backend answered {len(outcomes)} for {len(records)} records")
        except Exception as err:
            self.stats.failed_flushes += 1
            self.stats.last_error = str(err)
            if not isinstance(err, BackendUnavailable):
                _LOGGER.exception("storage flush failed")
            for request in requests:
                if not request.future.done():
                    request.future.set_exception(err)
            return
        elapsed_ms = (time.perf_counter() - started) * 1000
        self._record_flush(len(records), elapsed_ms)
        start = 0
        for request in requests:
            end = start + len(request.records)
            if not request.future.done():
                request.future.set_result(outcomes[start:end])
            start = end

    def _record_flush(self, events: int, elapsed_ms: float) -> None:
        stats = self.stats
        stats.flushes += 1
        stats.flushed_events += events
        stats.last_flush_events = events
        stats.max_flush_events = max(stats.max_flush_events, events)
        stats.last_flush_ms = round(elapsed_ms, 3)
        stats.last_error = None
        stats.flush_latency.record(elapsed_ms)

    def snapshot(self) -> dict[str, Any]:
        stats = self.stats
        p50, p95, p99 = stats.flush_latency.percentiles(50, 95, 99)
        return {
            "flushes": stats.flushes,
            "flushed_events": stats.flushed_events,
            "failed_flushes": stats.failed_flushes,
            "refused_requests": stats.refused_requests,
            "events_per_flush": round(stats.flushed_events / stats.flushes, 1)
            if stats.flushes
            else None,
            "last_flush_events": stats.last_flush_events,
            "max_flush_events": stats.max_flush_events,
            "last_flush_ms": stats.last_flush_ms,
            "flush_latency_ms": {"p50": p50, "p95": p95, "p99": p99},
            "waiting_events": self._waiting_events,
            "last_error": stats.last_error,
        }
