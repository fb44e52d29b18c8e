"""The storage service: checked envelopes in, durable idempotent records out.

`create_app(StorageService(settings), token=...)` serves it. `process` maps each
envelope to its record (a record no backend can keep is rejected on its own), hands
the records to the group-commit writer and answers once they are durable: ``stored``,
``duplicate`` (the event id was stored before) or ``rejected``. When the backend is
down the whole request gets 503 with Retry-After and the sender keeps the events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ha_ingestor_pipeline.envelope import (
    EVENTS_PATH,
    STORAGE_SERVICE_NAME,
    VALIDATION_ERROR,
    EventResult,
    ValidationError,
)
from ha_ingestor_services.contract import (
    BAD_REQUEST,
    DecodedBatch,
    DependencyHealth,
    RequestError,
    ServiceUnavailable,
)
from ha_ingestor_services.identity import IdentitySource
from ha_ingestor_services.responses import json_response

from .backends.base import BackendUnavailable, BadQuery, Outcome, StorageBackend
from .batch_decode import decode_batch
from .query import openapi_paths, parse_query
from .records import Record, to_record
from .settings import StorageSettings
from .writer import GroupCommitWriter

_LOGGER = logging.getLogger(__name__)

OUTSIDE_RETENTION = "OUTSIDE_RETENTION"
RETENTION_INTERVAL_S = 3600.0
# Health is open: each probe is a write (SQLite) or a request (InfluxDB), so one
# answer serves every health call for this long, and concurrent calls share one probe.
HEALTH_CACHE_S = 2.0
# Events waiting for the group-commit writer, in flushes: past it, 503 with Retry-After.
WAITING_FLUSHES = 4
LAYOUT_NOT_QUERYABLE = (
    "GET /api/v1/events reads the ha_ingestor layout only; this storage writes "
    "influx_layout home_assistant (--influx-layout, HA_INGESTOR_INFLUX_LAYOUT): "
    "query InfluxDB itself, as for Home Assistant's influxdb integration"
)


def create_backend(settings: StorageSettings) -> StorageBackend:
    """The backend the settings name (InfluxDB modules load only when used)."""
    if settings.backend == "sqlite":
        from .backends.sqlite import SQLiteBackend

        return SQLiteBackend(
            settings.sqlite_path,
            synchronous=settings.sqlite_synchronous,
            timeout_s=settings.timeout_s,
        )
    if settings.influx_api == "v1":
        from .backends.influx_v1 import InfluxV1Backend

        return InfluxV1Backend(settings)
    from .backends.influx_v2 import InfluxV2Backend

    return InfluxV2Backend(settings)


class StorageService:
    """The `EventService` of the storage service, and a `DecodesBatches` (see
    `ha_ingestor_services.contract`)."""

    name = STORAGE_SERVICE_NAME
    role = "storage"
    processing_steps = ["validation", "storage"]  # noqa: RUF012 (the protocol's plain list)

    def __init__(
        self,
        settings: StorageSettings,
        *,
        backend: StorageBackend | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        identity: IdentitySource | None = None,
    ) -> None:
        """``identity``: where the service id is kept when the backend keeps none (the
        command gives its state file)."""
        self.settings = settings
        self._identity = identity or IdentitySource("storage")
        self._service_id: str | None = None
        self.backend = backend if backend is not None else create_backend(settings)
        self._clock_ns = clock_ns
        self.writer = GroupCommitWriter(
            self.backend.write,
            max_events=settings.flush_max_events,
            interval_s=settings.flush_interval_ms / 1000,
            max_waiting_events=WAITING_FLUSHES * settings.flush_max_events,
        )
        self._retention_task: asyncio.Task[None] | None = None
        self._rejections: Counter[str] = Counter()
        self._expired = 0
        self._last_retention_run: float | None = None
        self.health_cache_s = HEALTH_CACHE_S
        self._health_lock = asyncio.Lock()
        self._health: dict[str, DependencyHealth] | None = None
        self._health_at = 0.0

    # -- life -----------------------------------------------------------------------------

    @property
    def service_id(self) -> str:
        if self._service_id is None:
            raise RuntimeError("the service id is known once the service has started")
        return self._service_id

    async def start(self) -> None:
        await self.backend.open()
        try:
            # SQLite keeps the id in its file; InfluxDB's is the state file's.
            self._service_id = await asyncio.to_thread(
                self._identity.resolve, self.backend.service_id
            )
        except BaseException:
            await self.backend.close()
            raise
        self.writer.start()
        if self.settings.retention_ns is not None:
            self._retention_task = asyncio.create_task(
                self._retention_loop(), name="storage-retention"
            )
        _LOGGER.info("storage ready on %s", self.backend.name)

    async def stop(self) -> None:
        if self._retention_task is not None:
            self._retention_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention_task
            self._retention_task = None
        await self.writer.stop()  # what was accepted is written before the backend closes
        await self.backend.close()

    # -- events ---------------------------------------------------------------------------

    async def process(
        self, envelopes: list[dict[str, Any]], correlation_id: str
    ) -> list[EventResult]:
        items: list[Record | EventResult] = []
        for envelope in envelopes:
            try:
                items.append(to_record(envelope))
            except ValidationError as err:
                self._rejections[err.code] += 1
                event_id = envelope["event_id"]
                items.append({"event_id": event_id, "status": "rejected", "error": err.to_error()})
        return await self._store(items)

    def decode_batch(self, body: bytes, max_events: int) -> DecodedBatch | None:
        return decode_batch(body, max_events)  # its items are records

    async def process_decoded(self, items: list[Any], correlation_id: str) -> list[EventResult]:
        return await self._store(items)

    async def _store(self, items: list[Record | EventResult]) -> list[EventResult]:
        """Write the records among ``items`` (the others are answers already); one result
        per item, in order."""
        retention_ns = self.settings.retention_ns
        cutoff = self._clock_ns() - retention_ns if retention_ns is not None else None
        records: list[Record] = []
        results: list[EventResult | None] = []
        for item in items:
            if not isinstance(item, Record):
                results.append(item)
            elif cutoff is not None and item.time_ns < cutoff:
                self._rejections[OUTSIDE_RETENTION] += 1
                results.append(self._outside_retention(item.event_id))
            else:
                records.append(item)
                results.append(None)
        try:
            outcomes = await self.writer.submit(records)
        except BackendUnavailable as err:
            raise ServiceUnavailable(
                err.message, retry_after=err.retry_after or self.settings.retry_after_s
            ) from None
        answers = map(self._answer, records, outcomes)
        return [result if result is not None else next(answers) for result in results]

    def _answer(self, record: Record, outcome: Outcome) -> EventResult:
        if outcome == "stored":
            return {"event_id": record.event_id, "status": "stored"}
        if outcome == "duplicate":
            return {"event_id": record.event_id, "status": "duplicate"}
        self._rejections[outcome["code"]] += 1
        return {"event_id": record.event_id, "status": "rejected", "error": outcome}

    def _outside_retention(self, event_id: str) -> EventResult:
        days = self.settings.retention_days
        return {
            "event_id": event_id,
            "status": "rejected",
            "error": {
                "code": OUTSIDE_RETENTION,
                "message": f"timestamp: is older than the retention period of {days} days",
                "details": {
                    "field": "timestamp",
                    "issue": "is older than the retention period",
                    "expected": f"within the last {days} days",
                },
            },
        }

    # -- retention ------------------------------------------------------------------------

    async def run_retention(self) -> int:
        """Delete events older than the retention period now; how many went."""
        retention_ns = self.settings.retention_ns
        if retention_ns is None:
            return 0
        deleted = await self.backend.expire(self._clock_ns() - retention_ns)
        self._expired += deleted
        self._last_retention_run = time.time()
        if deleted:
            _LOGGER.info(
                "retention: deleted %d events older than %d days",
                deleted,
                self.settings.retention_days,
            )
        return deleted

    async def _retention_loop(self) -> None:
        while True:
            try:
                await self.run_retention()
            except BackendUnavailable as err:
                _LOGGER.warning("retention skipped: %s", err.message)
            await asyncio.sleep(RETENTION_INTERVAL_S)

    # -- health, stats, routes -------------------------------------------------------------

    async def health(self) -> dict[str, DependencyHealth]:
        async with self._health_lock:
            if self._health is None or time.monotonic() - self._health_at >= self.health_cache_s:
                self._health = {self.backend.name: await self.backend.probe()}
                self._health_at = time.monotonic()
            return self._health

    def count_requests_with(self, in_progress: Callable[[], int]) -> None:
        # The group commit waits for other requests only while some are in progress.
        self.writer.in_progress = in_progress

    def stats(self) -> dict[str, Any]:
        return {
            "backend": self.backend.name,
            "writer": self.writer.snapshot(),
            "rejected_by_code": dict(self._rejections),
            "retention_days": self.settings.retention_days,
            "expired_events": self._expired,
            "last_retention_run": self._last_retention_run,
            self.backend.name: self.backend.stats(),
        }

    def routes(self) -> list[web.RouteDef]:
        return [web.get(EVENTS_PATH, self._get_events)]

    def openapi_paths(self) -> dict[str, Any]:
        return openapi_paths()

    async def _get_events(self, request: web.Request) -> web.Response:
        if self.settings.backend == "influxdb" and self.settings.influx_layout != "ha_ingestor":
            raise RequestError(400, BAD_REQUEST, LAYOUT_NOT_QUERYABLE)
        params = request.query
        repeated = {key: len(params.getall(key)) for key in params}
        query = parse_query(params, repeated, self._clock_ns)
        try:
            events = await self.backend.query(query)
        except BadQuery as err:
            raise RequestError(400, VALIDATION_ERROR, str(err)) from None
        except BackendUnavailable as err:
            raise ServiceUnavailable(
                err.message, retry_after=err.retry_after or self.settings.retry_after_s
            ) from None
        return json_response({"events": events})
