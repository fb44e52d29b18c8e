"""A real receiver of the services' contract on 127.0.0.1, with switches for every failure.

`FaultServer` answers ``POST /api/v1/events/batch``, ``POST /api/v1/events`` (gzip bodies
welcome), ``GET /api/v1/health`` and ``GET /api/v1/stats`` (behind the token, like the
events paths). It stores events idempotently by ``event_id`` and
answers one result per event, like the real services. Tests flip its switches at any
moment:

- a plan of faults, one per request, in order: ``add_faults(Fault.answer(503), ...)`` or
  the shortcut ``fail_next(3, 503, retry_after=2)``; the kinds are ``Fault.answer``
  (any status, Retry-After as seconds or a datetime), ``Fault.slow`` (answer late),
  ``Fault.reset`` (drop the connection mid-request), ``Fault.fail_after_store``
  (store, then answer an error) and ``Fault.slow_after_store`` (store, then answer
  late); a fault without ``path`` hits the events paths only;
- random faults with a seeded RNG: ``set_random_faults(0.3, Fault.answer(500), ...)``;
- per-event rejection: ``reject(event_id, ...)``, or events whose ``data`` (or
  ``data.attributes``) holds the key `REJECT_MARKER`;
- ``max_batch_events`` (413 above it), ``token`` (401 without it), ``health_status``,
  ``service_id`` (health answers it with ``role``, ``api_version`` and
  ``token_required``, as current services do; None: an older service, name and status only);
- ``refuse()`` closes the port (connections refused) and ``restore()`` reopens it.

What happened is in ``received`` (every event parsed from any request that got past
the token check, in arrival order, duplicates and faulted requests included),
``stored_ids`` (first storage order) and ``requests`` (one `RequestRecord` per request:
headers, Idempotency-Key, sizes, event ids, fault, status answered). Await
``wait_for_stored(n)`` or ``wait_for_requests(n)`` instead of polling.

    server = FaultServer(token="secret")
    await server.start()
    server.fail_next(2, 503, retry_after=1)      # the next two event requests get 503
    ...                                           # post to f"{server.url}/api/v1/events/batch"
    assert server.stored_ids == [...]
    await server.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

if TYPE_CHECKING:
    from collections.abc import Callable

BATCH_PATH = "/api/v1/events/batch"
EVENT_PATH = "/api/v1/events"
HEALTH_PATH = "/api/v1/health"
STATS_PATH = "/api/v1/stats"
EVENT_PATHS = (BATCH_PATH, EVENT_PATH)
REJECT_MARKER = "__reject__"
HOST = "127.0.0.1"


class FaultKind(StrEnum):
    STATUS = "status"  # answer `status` (error body, Retry-After if set); store nothing
    DELAY = "delay"  # wait `delay` seconds, then answer normally
    RESET = "reset"  # read a little of the request, then drop the connection
    FAIL_AFTER_STORE = "fail_after_store"  # store the events, then answer `status`
    SLOW_AFTER_STORE = "slow_after_store"  # store the events, answer after `delay`


RetryAfter = float | int | str | datetime | None


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure. ``path`` None means either events path (never health or stats)."""

    kind: FaultKind
    status: int = 503
    retry_after: str | None = None
    delay: float = 0.0
    path: str | None = None
    body: bytes | None = None  # raw answer body instead of the error JSON

    @classmethod
    def answer(
        cls,
        status: int,
        *,
        retry_after: RetryAfter = None,
        path: str | None = None,
        body: bytes | None = None,
    ) -> Fault:
        """Answer ``status`` without storing; ``retry_after`` as seconds or a datetime."""
        return cls(FaultKind.STATUS, status, _retry_after(retry_after), path=path, body=body)

    @classmethod
    def slow(cls, seconds: float, *, path: str | None = None) -> Fault:
        """Answer normally, but only after ``seconds`` (past a client timeout, say)."""
        return cls(FaultKind.DELAY, delay=seconds, path=path)

    @classmethod
    def reset(cls, *, path: str | None = None) -> Fault:
        """Drop the connection mid-request: the client sees a disconnect."""
        return cls(FaultKind.RESET, path=path)

    @classmethod
    def fail_after_store(
        cls, status: int = 503, *, retry_after: RetryAfter = None, path: str | None = None
    ) -> Fault:
        """Store the events, then answer an error: the at-least-once case."""
        return cls(FaultKind.FAIL_AFTER_STORE, status, _retry_after(retry_after), path=path)

    @classmethod
    def slow_after_store(cls, seconds: float, *, path: str | None = None) -> Fault:
        """Store the events, then answer normally after ``seconds``: a sender that dies
        meanwhile sends them again."""
        return cls(FaultKind.SLOW_AFTER_STORE, delay=seconds, path=path)

    def applies_to(self, path: str) -> bool:
        return path in EVENT_PATHS if self.path is None else path == self.path


@dataclass(slots=True)
class RequestRecord:
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    idempotency_key: str | None
    correlation_id: str | None
    content_encoding: str | None
    wire_bytes: int | None  # Content-Length as sent (compressed size for gzip)
    body_bytes: int = 0  # size after decompression
    event_ids: list[str] = field(default_factory=list)
    fault: FaultKind | None = None
    status: int | None = None  # None when the connection was dropped
    at: float = field(default_factory=time.monotonic)


class FaultServer:
    """One receiver on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        *,
        token: str | None = None,
        max_batch_events: int = 1000,
        max_body_bytes: int = 64 * 1024 * 1024,
        seed: int = 0,
        name: str = "fault-server",
        service_id: str | None = None,
    ) -> None:
        self.token = token
        self.service_id = service_id
        self.max_batch_events = max_batch_events
        self.max_body_bytes = max_body_bytes
        self.name = name
        self.health_status = 200
        self.reject_ids: set[str] = set()
        self.reject_if: Callable[[dict[str, Any]], bool] | None = None
        self.received: list[dict[str, Any]] = []
        self.stored_ids: list[str] = []
        self.requests: list[RequestRecord] = []
        self.port: int | None = None
        self._stored: set[str] = set()
        self._plan: deque[Fault] = deque()
        self._random_probability = 0.0
        self._random_faults: tuple[Fault, ...] = ()
        self._rng = random.Random(seed)
        self._runner: web.AppRunner | None = None
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()  # set on every request and every stored event

    # -- lifecycle -------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server has not been started")
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self, port: int = 0) -> None:
        """Listen on ``port`` (0: a free one; the bound port is then in ``self.port``)."""
        if self._runner is not None:
            return
        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_post(BATCH_PATH, self._handle_events)
        app.router.add_post(EVENT_PATH, self._handle_events)
        app.router.add_get(HEALTH_PATH, self._handle_health)
        app.router.add_get(STATS_PATH, self._handle_stats)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, HOST, port if port else (self.port or 0))
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        self._wake = asyncio.Event()

    async def stop(self) -> None:
        """Close the port and every connection; slow answers in progress end at once."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._wake.set()
        await runner.cleanup()

    async def refuse(self) -> None:
        """From now on connections to the port are refused (``restore`` reopens it)."""
        await self.stop()

    async def restore(self) -> None:
        """Listen again on the same port."""
        await self.start(self.port or 0)

    # -- switches --------------------------------------------------------------------

    def add_faults(self, *faults: Fault) -> None:
        """Queue faults; each request takes the first queued fault that applies to it."""
        self._plan.extend(faults)

    def fail_next(
        self,
        count: int = 1,
        status: int = 503,
        *,
        retry_after: RetryAfter = None,
        path: str | None = None,
    ) -> None:
        self.add_faults(*[Fault.answer(status, retry_after=retry_after, path=path)] * count)

    def set_random_faults(
        self, probability: float, *faults: Fault, seed: int | None = None
    ) -> None:
        """With ``probability``, a request (not taking a planned fault) gets one of ``faults``."""
        if probability > 0 and not faults:
            raise ValueError("name the faults to draw from")
        self._random_probability = probability
        self._random_faults = faults
        if seed is not None:
            self._rng.seed(seed)

    def reject(self, *event_ids: str) -> None:
        """Answer these events with a per-event ``rejected`` result (never stored)."""
        self.reject_ids.update(event_ids)

    def clear_faults(self) -> None:
        """Back to a healthy server (records and stored events are kept)."""
        self._plan.clear()
        self._random_probability = 0.0
        self._random_faults = ()
        self.reject_ids.clear()
        self.reject_if = None
        self.health_status = 200

    @property
    def pending_faults(self) -> int:
        return len(self._plan)

    # -- questions -------------------------------------------------------------------

    def requests_to(self, path: str) -> list[RequestRecord]:
        return [record for record in self.requests if record.path == path]

    async def wait_for_stored(self, count: int, timeout: float = 5.0) -> None:
        """Wait until at least ``count`` distinct events are stored."""
        await self._wait_until(lambda: len(self.stored_ids) >= count, timeout)

    async def wait_for_requests(self, count: int, timeout: float = 5.0) -> None:
        """Wait until at least ``count`` requests have arrived (any path)."""
        await self._wait_until(lambda: len(self.requests) >= count, timeout)

    async def _wait_until(self, condition: Callable[[], bool], seconds: float) -> None:
        async with asyncio.timeout(seconds):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    # -- handlers --------------------------------------------------------------------

    async def _handle_health(self, request: web.Request) -> web.StreamResponse:
        record = self._record(request)
        fault = self._take_fault(request.path)
        if fault is not None:
            early = await self._early_fault(request, record, fault)
            if early is not None:
                return early
        healthy = 200 <= self.health_status < 300
        body: dict[str, Any] = {
            "status": "healthy" if healthy else "unhealthy",
            "service": self.name,
        }
        if self.service_id is not None:
            body |= {
                "service_id": self.service_id,
                "role": "storage" if "storage" in self.name else "enrichment",
                "api_version": 1,
                "token_required": self.token is not None,
            }
        return self._json(record, body, self.health_status)

    async def _handle_stats(self, request: web.Request) -> web.StreamResponse:
        record = self._record(request)
        fault = self._take_fault(request.path)
        if fault is not None:
            early = await self._early_fault(request, record, fault)
            if early is not None:
                return early
        if self.token is not None and request.headers.get("Authorization") != (
            f"Bearer {self.token}"
        ):
            return self._error(record, 401, "UNAUTHORIZED", "missing or wrong bearer token")
        return self._json(
            record,
            {
                "service": self.name,
                "received": len(self.received),
                "stored": len(self.stored_ids),
                "requests": len(self.requests),
            },
            200,
        )

    async def _handle_events(self, request: web.Request) -> web.StreamResponse:
        record = self._record(request)
        fault = self._take_fault(request.path)
        if fault is not None:
            early = await self._early_fault(request, record, fault)
            if early is not None:
                return early
        if self.token is not None and request.headers.get("Authorization") != (
            f"Bearer {self.token}"
        ):
            return self._error(record, 401, "UNAUTHORIZED", "missing or wrong bearer token")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._error(record, 413, "payload_too_large", "request body too large")
        record.body_bytes = len(raw)
        events = _events_of(raw, batch=request.path == BATCH_PATH)
        if isinstance(events, str):
            return self._error(record, 400, "VALIDATION_ERROR", events)
        record.event_ids = [event["event_id"] for event in events]
        self.received.extend(events)
        if fault is not None and fault.kind is FaultKind.STATUS:
            return self._fault_answer(record, fault)
        if len(events) > self.max_batch_events:
            return self._error(
                record,
                413,
                "payload_too_large",
                f"{len(events)} events, over the limit of {self.max_batch_events}",
            )
        results = [self._store(event) for event in events]
        if fault is not None and fault.kind is FaultKind.FAIL_AFTER_STORE:
            return self._fault_answer(record, fault)
        if fault is not None and fault.kind is FaultKind.SLOW_AFTER_STORE:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), fault.delay)
        return self._json(
            record,
            {
                "success": True,
                "processed_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "processing_time_ms": 0.1,
                "correlation_id": request.headers.get("X-Correlation-ID"),
                "metadata": {
                    "service": self.name,
                    "version": "test",
                    "processing_steps": ["validation", "storage"],
                },
                "results": results,
            },
            200,
        )

    # -- internals -------------------------------------------------------------------

    def _record(self, request: web.Request) -> RequestRecord:
        record = RequestRecord(
            method=request.method,
            path=request.path,
            headers=dict(request.headers),
            query=dict(request.query),
            idempotency_key=request.headers.get("Idempotency-Key"),
            correlation_id=request.headers.get("X-Correlation-ID"),
            content_encoding=request.headers.get("Content-Encoding"),
            wire_bytes=request.content_length,
        )
        self.requests.append(record)
        self._changed.set()
        return record

    def _take_fault(self, path: str) -> Fault | None:
        for fault in self._plan:
            if fault.applies_to(path):
                self._plan.remove(fault)
                return fault
        if self._random_probability > 0 and self._rng.random() < self._random_probability:
            fault = self._rng.choice(self._random_faults)
            if fault.applies_to(path):
                return fault
        return None

    async def _early_fault(
        self, request: web.Request, record: RequestRecord, fault: Fault
    ) -> web.StreamResponse | None:
        """Faults that act before the body is read; None lets the request go on."""
        record.fault = fault.kind
        if fault.kind is FaultKind.RESET:
            await request.content.read(16)
            assert request.transport is not None
            request.transport.abort()
            # aiohttp drops this answer quietly: the transport is gone.
            return web.Response(status=500)
        if fault.kind is FaultKind.DELAY:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), fault.delay)
            if self._wake.is_set():  # shutting down: store nothing, answer nothing useful
                return self._error(record, 503, "SHUTTING_DOWN", "server stopping")
        if fault.kind is FaultKind.STATUS and request.path not in EVENT_PATHS:
            return self._fault_answer(record, fault)
        return None

    def _store(self, event: dict[str, Any]) -> dict[str, Any]:
        event_id: str = event["event_id"]
        if event_id in self._stored:
            return {"event_id": event_id, "status": "duplicate"}
        if self._rejects(event):
            return {
                "event_id": event_id,
                "status": "rejected",
                "error": {
                    "code": "VALIDATION_ERROR",
                    "message": "rejected by the fault server",
                    "details": {"field": "data", "issue": "marked for rejection"},
                },
            }
        self._stored.add(event_id)
        self.stored_ids.append(event_id)
        self._changed.set()
        return {"event_id": event_id, "status": "stored"}

    def _rejects(self, event: dict[str, Any]) -> bool:
        if event["event_id"] in self.reject_ids:
            return True
        data = event.get("data")
        if isinstance(data, dict):
            attributes = data.get("attributes")
            if REJECT_MARKER in data or (
                isinstance(attributes, dict) and REJECT_MARKER in attributes
            ):
                return True
        return self.reject_if is not None and self.reject_if(event)

    def _fault_answer(self, record: RequestRecord, fault: Fault) -> web.Response:
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
        if fault.body is not None:
            record.status = fault.status
            return web.Response(status=fault.status, body=fault.body, headers=headers)
        return self._error(
            record, fault.status, f"HTTP_{fault.status}", f"injected {fault.kind}", headers
        )

    def _error(
        self,
        record: RequestRecord,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        body = {
            "success": False,
            "error": {"code": code, "message": message, "details": {}},
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "correlation_id": record.correlation_id,
        }
        return self._json(record, body, status, headers)

    @staticmethod
    def _json(
        record: RequestRecord,
        body: dict[str, Any],
        status: int,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        record.status = status
        return web.Response(
            status=status,
            body=orjson.dumps(body),
            content_type="application/json",
            headers=headers,
        )


def _retry_after(value: RetryAfter) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return format_datetime(value.astimezone(UTC), usegmt=True)
    return str(int(value))


def _events_of(raw: bytes, *, batch: bool) -> list[dict[str, Any]] | str:
    """The events of a request body, or what is wrong with it."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "body is not JSON"
    if batch:
        if not isinstance(body, dict) or not isinstance(body.get("events"), list):
            return "expected an object with an 'events' list"
        events = body["events"]
    else:
        events = [body]
    for event in events:
        if not isinstance(event, dict) or not isinstance(event.get("event_id"), str):
            return "every event needs a string 'event_id'"
    return events
