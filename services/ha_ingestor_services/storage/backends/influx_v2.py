"""InfluxDB 2.x / 3.x / Cloud backend (API v2) through influxdb-client's async client.

The bucket must exist (checked at start; its retention is InfluxDB's business). Writes
send the same line protocol as API v1 with nanosecond precision; queries are Flux.
Idempotency and refused lines are handled as for API v1 (`influx_writes`).

No InfluxDB 2.x server could be run where this was written: the tests drive this
module against a local stand-in that checks the requests as InfluxDB 2.x would.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

import aiohttp
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.client.write_api_async import WriteApiAsync
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException
from influxdb_client.service.buckets_service import BucketsService as _UntypedBuckets

from ha_ingestor_services.contract import DependencyHealth, StartupError
from ha_ingestor_services.storage.records import (
    Record,
    StoredEvent,
    datetime_to_ns,
    ns_to_rfc3339,
    stored_event,
)
from ha_ingestor_services.storage.settings import StorageSettings

from .base import BackendUnavailable, BadQuery, EventQuery, Outcome
from .influx_writes import InfluxWrites, Refused

# influxdb-client has no type hints; its buckets service is used through Any.
BucketsService: Any = _UntypedBuckets
_ORG_ID = re.compile(r"^[0-9a-f]{16}$")
_NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


def flux_string(value: str) -> str:
    """A Flux string literal (``${`` would start an interpolation)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return f'"{escaped}"'


def flux_time(time_ns: int) -> str:
    """``time(v: "…")`` with RFC 3339 to the nanosecond."""
    seconds = ns_to_rfc3339(time_ns - time_ns % 1_000_000_000).removesuffix("Z")
    return f'time(v: "{seconds}.{time_ns % 1_000_000_000:09d}Z")'


def flux_query(bucket: str, query: EventQuery) -> str:
    lines = [
        f"from(bucket: {flux_string(bucket)})",
        # range's stop is exclusive; the API's end_time is inclusive.
        f"  |> range(start: {flux_time(query.start_ns)}, stop: {flux_time(query.end_ns + 1)})",
    ]
    if query.event_type is not None:
        lines.append(f"  |> filter(fn: (r) => r._measurement == {flux_string(query.event_type)})")
    if query.entity_id is not None:
        lines.append(f"  |> filter(fn: (r) => r.entity_id == {flux_string(query.entity_id)})")
    lines += [
        '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
        "  |> group()",
        '  |> sort(columns: ["_time"], desc: true)',
        f"  |> limit(n: {query.limit})",
    ]
    return "\n".join(lines)


class InfluxV2Backend:
    name = "influxdb-v2"
    service_id: str | None = None  # kept in a state file, not in the data (identity.py)

    def __init__(self, settings: StorageSettings) -> None:
        self.settings = settings
        self._url = settings.influx_url.rstrip("/")
        self._bucket: str = settings.influx_bucket or ""
        self._org: str = settings.influx_org or ""
        self._client: InfluxDBClientAsync | None = None
        self._write_api: WriteApiAsync | None = None
        self._writes = InfluxWrites(self._post, settings.influx_layout)
        self._last_error: str | None = None

    def _live(self) -> InfluxDBClientAsync:
        if self._client is None:
            raise BackendUnavailable("the InfluxDB client is closed")
        return self._client

    # -- life -----------------------------------------------------------------------------

    async def open(self) -> None:
        self._client = InfluxDBClientAsync(
            url=self._url,
            token=self.settings.influx_token or "",
            org=self._org,
            timeout=int(self.settings.timeout_s * 1000),
        )
        self._write_api = self._client.write_api()
        try:
            await self._check_bucket()
        except BackendUnavailable as err:
            await self.close()
            raise StartupError(f"InfluxDB at {self._url}: {err.message}") from None

    async def _check_bucket(self) -> None:
        client = self._live()
        org = {"org_id": self._org} if _ORG_ID.match(self._org) else {"org": self._org}
        try:
            await client.ping()
            answer = await BucketsService(client.api_client).get_buckets_async(
                name=self._bucket, **org
            )
        except ApiException as err:
            if err.status in (401, 403):
                raise BackendUnavailable(f"refused the token (HTTP {err.status})") from None
            raise BackendUnavailable(f"answered HTTP {err.status}: {err.message}") from None
        except _NETWORK_ERRORS as err:
            raise BackendUnavailable(f"is unreachable ({str(err) or type(err).__name__})") from None
        except (ValueError, TypeError) as err:  # the client could not read the answer
            raise BackendUnavailable(f"answered an unreadable bucket list ({err})") from None
        buckets = getattr(answer, "buckets", None) or []
        if not any(getattr(bucket, "name", None) == self._bucket for bucket in buckets):
            raise BackendUnavailable(f"bucket {self._bucket!r} not found in org {self._org!r}")

    async def close(self) -> None:
        if self._client is not None:
            client: Any = self._client
            await client.close()
            self._client = None
            self._write_api = None

    # -- writes -----------------------------------------------------------------------------

    async def write(self, records: Sequence[Record]) -> list[Outcome]:
        return await self._writes.write(records)

    async def _post(self, body: str) -> None:
        if self._write_api is None:
            raise BackendUnavailable("the InfluxDB client is closed")
        try:
            await self._write_api.write(
                bucket=self._bucket,
                org=self._org,
                record=body,
                write_precision=WritePrecision.NS,  # type: ignore[arg-type]
            )
        except ApiException as err:
            message = f"HTTP {err.status}: {err.message}"
            if err.status in (400, 422):
                raise Refused(err.message) from None
            self._last_error = message
            raise BackendUnavailable(
                f"InfluxDB answered {message}", retry_after=_seconds(err.retry_after)
            ) from None
        except _NETWORK_ERRORS as err:
            self._last_error = f"unreachable ({str(err) or type(err).__name__})"
            raise BackendUnavailable(f"InfluxDB is {self._last_error}") from None
        self._last_error = None

    async def expire(self, before_ns: int) -> int:
        return 0  # the bucket's retention expires old points inside InfluxDB

    # -- reads ------------------------------------------------------------------------------

    async def query(self, query: EventQuery) -> list[StoredEvent]:
        try:
            tables = await self._live().query_api().query(flux_query(self._bucket, query))
        except ApiException as err:
            if err.status == 400:
                raise BadQuery(f"InfluxDB cannot run this query: {err.message}") from None
            raise BackendUnavailable(
                f"InfluxDB answered HTTP {err.status}: {err.message}"
            ) from None
        except _NETWORK_ERRORS as err:
            raise BackendUnavailable(
                f"InfluxDB is unreachable ({str(err) or type(err).__name__})"
            ) from None
        events: list[tuple[int, StoredEvent]] = []
        for table in tables:
            for row in table.records:
                values: dict[str, Any] = dict(row.values)
                moment = values.get("_time")
                if moment is None:
                    continue
                time_ns = datetime_to_ns(moment)
                values["event_type"] = values.get("_measurement")
                events.append((time_ns, stored_event(values, time_ns)))
        events.sort(key=lambda item: item[0], reverse=True)
        return [event for _, event in events[: query.limit]]

    # -- health -----------------------------------------------------------------------------

    async def probe(self) -> DependencyHealth:
        try:
            await asyncio.wait_for(self._check_bucket(), 5)
        except BackendUnavailable as err:
            return DependencyHealth(False, f"InfluxDB {self._url}: {err.message}")
        except TimeoutError:
            return DependencyHealth(False, f"InfluxDB {self._url}: no answer within 5 s")
        return DependencyHealth(True, f"InfluxDB v2 {self._url}, bucket {self._bucket}")

    def stats(self) -> dict[str, Any]:
        return {
            "url": self._url,
            "org": self._org,
            "bucket": self._bucket,
            "recent_ids": len(self._writes.recent),
            "bisections": self._writes.bisections,
            "layout": self.settings.influx_layout,
            "skipped_by_layout": dict(self._writes.skipped),
            "last_error": self._last_error,
        }


def _seconds(header: object) -> float | None:
    try:
        return max(1.0, float(str(header))) if header else None
    except ValueError:
        return None
