"""EventForwarder: takes batches from the outbox and delivers them, one at a time.

One loop, one batch in flight: FIFO holds because a failed batch goes back to its
place in the outbox and is taken again before anything newer. While a batch is out and
another whole batch waits, the next one is read from the outbox meanwhile (taken, not
sent): it goes out after a batch accepted in full, and back to its place otherwise.
What each answer means is the contract's answer table (retry.Outcome;
docs/ARCHITECTURE.md, "Contracts"):

- success: ack per event from the per-event results; ``rejected`` -> dead letters
- retryable / rate limited / breaker open: back to the outbox, back off, try again
  (queued events retry without limit; they are on disk)
- auth: back to the outbox, stop using that route, tell the owner (reauth)
- too large, or permanent without per-event results: halve the batch limit and retry,
  so the failing prefix is bisected down to the single bad event, which becomes a dead
  letter; the limit doubles again after each success

While the primary route's breaker is open (or its auth failed) and a fallback route is
configured and allowed, batches go to the fallback.

The state says the truth about delivery: `delivering` until a batch fails, then
`waiting` (no answer: refused, timed out, 503 unavailable, breakers open, credentials
refused) or `backing_off` (another error answer) until a batch is accepted again,
with the `DeliveryProblem` (which service, since when, the last error) alongside.
`wake` cuts a wait short when a service is seen back (docs/ARCHITECTURE.md, "Recovery").
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .envelope import BATCH_PATH, PAYLOAD_TOO_LARGE, batch_body, parse_results
from .http_client import CircuitOpenError, ServiceCallError, ServiceHTTPClient, ServiceResponse
from .metrics import PipelineMetrics
from .outbox import Outbox, OutboxClosedError, OutboxRecord
from .retry import BackoffPolicy, Outcome

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Route:
    """Where batches can go: a named service reached through its resilient client."""

    name: str
    client: ServiceHTTPClient
    path: str = BATCH_PATH


@dataclass(frozen=True, slots=True)
class ForwarderConfig:
    batch_size: int = 500
    batch_bytes: int = 4 * 1024 * 1024
    # A batch that is not full goes once its oldest event has waited this long: one
    # request, transaction and wake-up for many events (CPU per event, see
    # docs/ARCHITECTURE.md), at a latency nobody sees on a dashboard.
    linger: float = 0.2
    use_fallback: bool = True
    backoff: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(base=1.0, cap=300.0))
    stop_timeout: float = 5.0  # how long stop() lets the batch in flight finish


class ForwarderState(StrEnum):
    STOPPED = "stopped"
    DELIVERING = "delivering"  # no batch has failed since the last one was accepted
    PAUSED = "paused"
    BACKING_OFF = "backing_off"  # a service answered with an error; retrying after a backoff
    WAITING = "waiting"  # no service takes events: no answer, 503, breakers open, auth refused


@dataclass(frozen=True, slots=True)
class DeliveryProblem:
    """Why nothing is delivered: from the first failed batch until one is accepted."""

    state: ForwarderState  # WAITING or BACKING_OFF
    service: str  # the route whose batch failed last
    since: float  # wall time of the first failed batch
    error: str  # the last failure

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "service": self.service,
            "since": self.since,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class FlushResult:
    done: bool  # the outbox was empty before the timeout
    delivered: int  # events delivered while the flush waited
    waiting: int  # events still in the outbox
    problem: DeliveryProblem | None  # why they wait, when a batch failed


class EventForwarder:
    """Delivers what the outbox holds through a primary route and an optional fallback."""

    def __init__(
        self,
        outbox: Outbox[Any],
        primary: Route,
        fallback: Route | None = None,
        config: ForwarderConfig | None = None,
        *,
        metrics: PipelineMetrics | None = None,
        on_auth_failure: Callable[[str], None] | None = None,
        sleep_rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
    ) -> None:
        self._outbox = outbox
        self.primary = primary
        self.fallback = fallback
        self.config = config or ForwarderConfig()
        self.metrics = metrics or PipelineMetrics()
        self._on_auth_failure = on_auth_failure
        self._rng = sleep_rng
        self._clock = clock
        self._log = logger or _LOGGER
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._running = asyncio.Event()  # set while not paused
        self._running.set()
        self._wake = asyncio.Event()
        self._problem: DeliveryProblem | None = None
        self._batch_limit = self.config.batch_size
        self._failures = 0  # consecutive failed deliveries, for the backoff
        self._retry_at: float | None = None
        self._auth_failed: set[str] = set()
        self._backlogged = False
        self._last_route: str | None = None
        self._acking: asyncio.Future[None] | None = None  # the last batch's ack, if unsettled
        self._ahead: asyncio.Future[list[OutboxRecord]] | None = None  # the next batch, read
        self._clean = False  # the last batch was accepted in full: the one read ahead may go

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        if self._task is not None:
            return
        self._stopping = False
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="ha_ingestor_forwarder")

    async def stop(self) -> None:
        """Let the batch in flight finish (up to stop_timeout), then end the loop."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        self._running.set()
        done, _ = await asyncio.wait({task}, timeout=self.config.stop_timeout)
        if not done:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            await self._acked()
        except Exception as err:  # the records stay in flight; ready again at reopen
            self._log.error("Acknowledging the last batch failed: %s", err)

    def update_config(self, config: ForwarderConfig) -> None:
        """New batch, linger, fallback or backoff settings, from the next batch on."""
        self.config = config
        self._batch_limit = min(self._batch_limit, config.batch_size)
        self._wake.set()

    def pause(self) -> None:
        """Stop taking new batches; the one in flight finishes."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()
        self._wake.set()

    def wake(self) -> None:
        """A service is back (its health answers): try now instead of after the wait.

        The backoff's growth is kept: a service that answers with errors again is
        retried no sooner than before.
        """
        self._retry_at = None
        self._wake.set()

    def on_availability(self, service: str, url: str, available: bool) -> None:
        """A registry listener: when a URL of one of its routes answers its health
        again, that route's breaker lets a probe through now and the loop wakes."""
        if not available:
            return
        routes = [route for route in (self.primary, self.fallback) if route is not None]
        for route in routes:
            if route.client.service == service:
                route.client.probe_now(url)
                self.wake()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def state(self) -> ForwarderState:
        if self._task is None:
            return ForwarderState.STOPPED
        if self.paused:
            return ForwarderState.PAUSED
        if self._problem is None:
            return ForwarderState.DELIVERING
        return self._problem.state

    @property
    def problem(self) -> DeliveryProblem | None:
        return self._problem

    def clear_auth_failure(self, route_name: str | None = None) -> None:
        """After a reauth: use the route(s) again."""
        if route_name is None:
            self._auth_failed.clear()
        else:
            self._auth_failed.discard(route_name)
        self._wake.set()

    @property
    def auth_failed(self) -> frozenset[str]:
        return frozenset(self._auth_failed)

    async def flush(self, timeout: float | None = None) -> FlushResult:
        """Send now (skipping linger and backoff) and wait until the outbox is empty.

        Done when everything was delivered (or dead-lettered) in time; otherwise the
        result says how many wait and why.
        """
        if self.paused:
            raise RuntimeError("the forwarder is paused")
        delivered_before = self.metrics.get("delivered")
        self.wake()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            stats = await self._outbox.stats()
            done = stats.pending == 0
            if done or (deadline is not None and loop.time() >= deadline):
                return FlushResult(
                    done=done,
                    delivered=self.metrics.get("delivered") - delivered_before,
                    waiting=stats.pending,
                    problem=self._problem,
                )
            # No new wake-up here: a failing service is retried on the backoff schedule.
            await asyncio.sleep(0.02)

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "problem": None if self._problem is None else self._problem.as_dict(),
            "batch_limit": self._batch_limit,
            "consecutive_failures": self._failures,
            "retry_at": self._retry_at,
            "auth_failed": sorted(self._auth_failed),
            "last_route": self._last_route,
            "backlogged": self._backlogged,
            "metrics": self.metrics.snapshot(),
        }

    # -- the loop --------------------------------------------------------------------

    def _stop_requested(self) -> bool:
        # A call, so type checkers do not assume the flag is unchanged across an await.
        return self._stopping

    async def _run(self) -> None:
        try:
            await self._loop()
        finally:
            await asyncio.shield(self._return_ahead())

    async def _loop(self) -> None:
        while not self._stop_requested():
            if self.paused:
                await self._return_ahead()  # not held through a pause
            await self._running.wait()
            if self._stop_requested():
                break
            if self._ahead is None:
                await self._wait_for_events()
            if self._stop_requested() or self.paused:
                await self._return_ahead()
                continue
            route = self.route()
            if route is None:
                await self._return_ahead()
                self._set_backlog(True)
                self._report_unusable(self.primary.name, "no service takes events")
                await self._sleep(self._route_wait())
                continue
            records = await self._take()
            await self._acked()  # done by now: the worker ran it before this take
            if not records:
                continue
            self._clean = False
            delay = await self._deliver(route, records)
            if not self._clean:
                await self._return_ahead()  # before anything is taken again: FIFO
            if delay:
                self._retry_at = self._clock() + delay
                await self._sleep(delay)
                self._retry_at = None

    async def _take(self) -> list[OutboxRecord]:
        """The batch read ahead, else the oldest ready records."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            return await ahead
        return await self._outbox.take(self._batch_limit, self.config.batch_bytes)

    def _read_ahead(self) -> None:
        """While a batch is out: take the next one now when a whole batch waits (the
        outbox's worker reads it meanwhile instead of after the answer)."""
        if self._ahead is None and self._outbox.waiting_hint() >= self._batch_limit:
            self._ahead = asyncio.ensure_future(
                self._outbox.take(self._batch_limit, self.config.batch_bytes)
            )

    async def _return_ahead(self) -> None:
        """Put the batch read ahead back in its place (never sent: no attempt counted)."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return
        try:
            records = await ahead
        except OutboxClosedError:
            return  # in flight only in memory: ready again when the outbox opens
        if records:
            await self._outbox.release([record.seq for record in records])

    async def _wait_for_events(self) -> None:
        """Wait for work, then linger so a batch can fill: until the oldest waiting event
        has waited ``linger``. Events that waited while a batch was in flight go at once,
        and so does a whole batch (counting events the outbox's worker has not stored
        yet), also one that fills during the linger."""
        ready = asyncio.ensure_future(self._outbox.wait_ready())
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({ready, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            woken.cancel()
        if self._wake.is_set():
            self._wake.clear()
            return
        linger = self.config.linger
        if linger > 0 and self._outbox.waiting_hint() < self._batch_limit:
            oldest = self._outbox.stats_nowait().oldest_enqueued_at
            waited = 0.0 if oldest is None else self._clock() - oldest
            await self._linger(min(linger, linger - waited))

    async def _linger(self, delay: float) -> None:
        """`_sleep`, but over as soon as a whole batch waits."""
        if delay <= 0:
            return
        filled = asyncio.ensure_future(self._outbox.wait_waiting(self._batch_limit))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({filled, woken}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            filled.cancel()
            woken.cancel()
        self._wake.clear()

    async def _sleep(self, delay: float) -> None:
        """Sleep, but wake early for flush, resume, reauth or stop."""
        if delay <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)
        self._wake.clear()

    def route(self, *, even_if_open: bool = False) -> Route | None:
        """The route to deliver through now: the primary, else the fallback when allowed.

        None while no route takes events (every breaker open, or the credentials
        refused). With ``even_if_open``, when every breaker is open the first route whose
        credentials were not refused is returned anyway (a call through it fails at once
        and says when to retry); None then only when every route refused them.
        """
        candidates = self._candidates()
        for route in candidates:
            if route.client.available():
                return route
        return candidates[0] if even_if_open and candidates else None

    def _candidates(self) -> list[Route]:
        """The routes allowed now, in order, without those whose credentials were refused."""
        routes = [self.primary]
        if self.config.use_fallback and self.fallback is not None:
            routes.append(self.fallback)
        return [route for route in routes if route.name not in self._auth_failed]

    def _route_wait(self) -> float:
        """How long until some route may take events again."""
        waits = [route.client.retry_in() for route in self._candidates()]
        # With every route waiting on a reauth, sleep until woken (or re-check now and then).
        return max(min(waits), 0.05) if waits else 60.0

    def _set_backlog(self, backlogged: bool) -> None:
        if backlogged != self._backlogged:
            self._backlogged = backlogged
            self._outbox.set_backlog(backlogged)

    # -- one batch -------------------------------------------------------------------

    async def _deliver(self, route: Route, records: list[OutboxRecord]) -> float:
        """Send one batch and settle every record; returns how long to wait before the next."""
        self._last_route = route.name
        seqs = [record.seq for record in records]
        key = _batch_key(records)
        self._read_ahead()
        try:
            response = await route.client.post(
                route.path,
                batch_body([record.payload for record in records]),
                idempotency_key=key,
                correlation_id=key,
            )
        except CircuitOpenError as err:
            await self._outbox.release(seqs)  # never sent: no attempt to count
            self._set_backlog(True)
            if self.route() is not None:
                return 0.0
            self._report_unusable(route.name, str(err))
            return max(err.retry_in, 0.05)
        except ServiceCallError as err:
            await self._outbox.nack(seqs)
            return self._failed(route, ForwarderState.WAITING, f"{route.name}: {err}", None)
        except asyncio.CancelledError:
            await asyncio.shield(self._outbox.release(seqs))
            raise
        return await self._settle(route, records, response)

    async def _settle(
        self, route: Route, records: list[OutboxRecord], response: ServiceResponse
    ) -> float:
        seqs = [record.seq for record in records]
        outcome = response.outcome
        if outcome is Outcome.SUCCESS:
            body = _body_of(response)
            if _all_confirmed(body, records):  # the usual answer: every event, in order
                await self._ack(route, records)
                self._succeeded()
                self._clean = True
                return 0.0
            unconfirmed = await self._apply_results(
                route, records, _results_in(body), default_ok=True
            )
            if unconfirmed:
                return self._failed(
                    route,
                    ForwarderState.BACKING_OFF,
                    f"{route.name}: {unconfirmed} events unconfirmed",
                    None,
                )
            self._succeeded()
            return 0.0
        if outcome is Outcome.RETRYABLE or outcome is Outcome.RATE_LIMITED:
            await self._outbox.nack(seqs)
            # 503 says "unavailable" (the enrichment says so while storage is away):
            # waiting for a service, like no answer at all; other errors back off.
            state = ForwarderState.WAITING if response.status == 503 else ForwarderState.BACKING_OFF
            return self._failed(route, state, _describe(route, response), response.retry_after)
        if outcome is Outcome.AUTH:
            await self._outbox.nack(seqs)
            self._auth_failed.add(route.name)
            self.metrics.inc("auth_failures")
            message = f"{route.name}: HTTP {response.status} (authentication)"
            self.metrics.record_error(message)
            self._report(ForwarderState.WAITING, route.name, message)
            self._log.error(
                "%s refused the credentials (HTTP %s); events are kept until reauthentication",
                route.name,
                response.status,
            )
            if self._on_auth_failure is not None:
                self._on_auth_failure(route.name)
            return 0.0
        # TOO_LARGE or PERMANENT
        results = _results_of(response)
        if outcome is Outcome.PERMANENT and results:
            unconfirmed = await self._apply_results(route, records, results, default_ok=False)
            if unconfirmed:
                return self._failed(
                    route, ForwarderState.BACKING_OFF, f"{route.name}: HTTP {response.status}", None
                )
            return 0.0
        if len(records) > 1:
            # Bisect: retry the first half; the bad event ends up alone in a batch.
            await self._outbox.nack(seqs)
            self._batch_limit = max(1, len(records) // 2)
            self.metrics.inc("batches_split")
            return 0.0
        code, message = response.error()
        if outcome is Outcome.TOO_LARGE:
            code = PAYLOAD_TOO_LARGE
        await self._outbox.dead_letter(seqs, code, message, route.name)
        self.metrics.inc("dead_lettered")
        self.metrics.record_error(f"{route.name}: {code}: {message}")
        self._problem = None  # the service answered for the event: it is taking batches
        return 0.0

    async def _apply_results(
        self,
        route: Route,
        records: Sequence[OutboxRecord],
        results: dict[str, Any] | None,
        *,
        default_ok: bool,
    ) -> int:
        """Ack confirmed events, dead-letter rejected ones, return unconfirmed ones.

        Returns how many were unconfirmed (and so go back to the outbox).
        """
        now = self._clock()
        if results is None:
            acked = list(records) if default_ok else []
            rejected: list[tuple[OutboxRecord, str, str]] = []
            unconfirmed: list[OutboxRecord] = [] if default_ok else list(records)
        else:
            acked, rejected, unconfirmed = [], [], []
            for record in records:
                result = results.get(record.event_id)
                if result is None:
                    unconfirmed.append(record)
                elif result["status"] == "rejected":
                    error = result.get("error") or {}
                    rejected.append(
                        (record, error.get("code", "rejected"), error.get("message", ""))
                    )
                else:
                    acked.append(record)
        if acked:
            await self._ack(route, acked, now)
        for record, code, message in rejected:
            await self._outbox.dead_letter([record.seq], code, message, route.name)
            self.metrics.inc("dead_lettered")
        if unconfirmed:
            # The receiver did not say what became of these: send them again (dedupe by id).
            await self._outbox.nack([record.seq for record in unconfirmed])
        return len(unconfirmed)

    async def _ack(
        self, route: Route, records: Sequence[OutboxRecord], now: float | None = None
    ) -> None:
        """Ack without waiting for the answer: the next take queues right behind it, so a
        batch costs one round trip to the outbox's thread instead of two."""
        now = self._clock() if now is None else now
        await self._acked()
        self._problem = None
        self._acking = self._outbox.ack_soon([record.seq for record in records])
        self.metrics.record_delivery(
            len(records), [(now - record.enqueued_at) * 1000.0 for record in records]
        )
        self.metrics.inc(f"delivered_{route.name}", len(records))

    async def _acked(self) -> None:
        """Wait for the last ack handed over (raises what it raised)."""
        acking, self._acking = self._acking, None
        if acking is not None:
            await acking

    def _succeeded(self) -> None:
        self.metrics.inc("batches_ok")
        self._problem = None
        self._failures = 0
        self._batch_limit = min(self._batch_limit * 2, self.config.batch_size)
        self._set_backlog(False)

    def _report(self, state: ForwarderState, service: str, error: str) -> None:
        """A batch failed (or could not go): say so, keeping when the trouble began.

        Within one episode `waiting` does not turn back into `backing_off`: with the
        enrichment answering 503 and the storage fallback refusing, the state would
        otherwise flip with each route tried; the service and error are the latest.
        """
        problem = self._problem
        if problem is not None and problem.state is ForwarderState.WAITING:
            state = ForwarderState.WAITING
        since = self._clock() if problem is None else problem.since
        self._problem = DeliveryProblem(state, service, since, error)

    def _report_unusable(self, service: str, error: str) -> None:
        """No route takes events: the failures that opened the breakers (or refused the
        credentials) already said why; without one, it is waiting."""
        if self._problem is None:
            self._report(ForwarderState.WAITING, service, error)

    def _failed(
        self, route: Route, state: ForwarderState, message: str, retry_after: float | None
    ) -> float:
        self.metrics.inc("batches_failed")
        self.metrics.record_error(message)
        self._report(state, route.name, message)
        self._set_backlog(True)
        delay = self.config.backoff.delay(self._failures, self._rng)
        self._failures += 1
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.config.backoff.cap))
        self._log.debug("%s; retrying in %.2fs", message, delay)
        return delay


def _describe(route: Route, response: ServiceResponse) -> str:
    """An error answer for the Status sensor: the status, and the service's own words."""
    _, message = response.error()
    message = " ".join(message.split())[:200]
    return f"{route.name}: HTTP {response.status}" + (f": {message}" if message else "")


def _batch_key(records: Sequence[OutboxRecord]) -> str:
    """The same events give the same key, so a resent batch is recognised."""
    digest = hashlib.blake2b(digest_size=16)
    for record in records:
        digest.update(record.event_id.encode())
    return digest.hexdigest()


_CONFIRMED = ("stored", "duplicate")  # a tuple: an odd (unhashable) status is just unequal


def _body_of(response: ServiceResponse) -> object:
    try:
        return response.json()
    except ServiceCallError:
        return None


def _all_confirmed(body: object, records: Sequence[OutboxRecord]) -> bool:
    """True when the answer confirms every event of the batch, one result each, in order.

    A cheap check for the common case; anything else is read by `parse_results`.
    """
    if type(body) is not dict:
        return False
    results = body.get("results")
    if type(results) is not list or len(results) != len(records):
        return False
    confirmed = _CONFIRMED
    for item, record in zip(results, records, strict=True):
        if (
            type(item) is not dict
            or item.get("event_id") != record.event_id
            or item.get("status") not in confirmed
        ):
            return False
    return True


def _results_of(response: ServiceResponse) -> dict[str, Any] | None:
    return _results_in(_body_of(response))


def _results_in(body: object) -> dict[str, Any] | None:
    results = parse_results(body)
    # None: the receiver gives no per-event results (ack all on success);
    # a dict, even empty: only the events it names are settled.
    return None if results is None else dict(results)
