"""InfluxDB 1.x backend (API v1): line protocol to ``/write``, InfluxQL from ``/query``.

At start the database is created and the retention policy created (or altered) as the
database's default, with a duration of ``retention_days`` (INF when 0). In the
``home_assistant`` layout an existing policy is left as it is: that database is most
likely the one Home Assistant's influxdb integration fills, with its own retention.

InfluxDB answers a write with 204 once the points are in its write-ahead log (fsynced);
a 400 ("partial write") becomes `Refused` for `influx_writes`, which finds the refused
lines and handles idempotency (see there).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson

from ha_ingestor_services.contract import DependencyHealth, StartupError
from ha_ingestor_services.storage.records import Record, StoredEvent, stored_event
from ha_ingestor_services.storage.settings import StorageSettings

from .base import BackendUnavailable, BadQuery, EventQuery, Outcome
from .influx_writes import InfluxWrites, Refused

_LOGGER = logging.getLogger(__name__)
_UNQUOTABLE = re.compile(r"[\x00\n\r\t]")


def quote_identifier(name: str) -> str:
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def quote_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


class InfluxV1Backend:
    name = "influxdb-v1"
    service_id: str | None = None  # kept in a state file, not in the data (identity.py)

    def __init__(self, settings: StorageSettings) -> None:
        self.settings = settings
        self._url = settings.influx_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._writes = InfluxWrites(self._post, settings.influx_layout)
        self._auth = (
            aiohttp.BasicAuth(settings.influx_username, settings.influx_password or "")
            if settings.influx_username is not None
            else None
        )
        self._write_params = {
            "db": settings.influx_database,
            "rp": settings.influx_retention_policy,
            "precision": "ns",
        }
        self._last_error: str | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise BackendUnavailable("the InfluxDB client is closed")
        return self._session

    # -- life -----------------------------------------------------------------------------

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(
            auth=self._auth, timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s)
        )
        try:
            await self._ping()
            await self._prepare()
        except BackendUnavailable as err:
            await self.close()
            raise StartupError(f"InfluxDB at {self._url}: {err.message}") from None

    async def _ping(self) -> None:
        try:
            async with self._http().get(f"{self._url}/ping") as response:
                if response.status != 204:
                    raise BackendUnavailable(f"/ping answered HTTP {response.status}")
        except (aiohttp.ClientError, TimeoutError) as err:
            raise BackendUnavailable(f"is unreachable ({_describe(err)})") from None

    async def _prepare(self) -> None:
        """Create the database and make the retention policy its default."""
        settings = self.settings
        database = quote_identifier(settings.influx_database)
        policy = quote_identifier(settings.influx_retention_policy)
        duration = f"{settings.retention_days}d" if settings.retention_days else "INF"
        await self._execute(f"CREATE DATABASE {database}")
        policies = await self._execute(f"SHOW RETENTION POLICIES ON {database}")
        names = {row[0] for series in policies for row in series.get("values") or []}
        verb = "ALTER" if settings.influx_retention_policy in names else "CREATE"
        if settings.influx_layout == "home_assistant":
            if verb == "ALTER":
                return  # a database Home Assistant's integration wrote: its policy stays
            if await self._execute(f"SHOW MEASUREMENTS ON {database} LIMIT 1"):
                _LOGGER.warning(
                    "InfluxDB database %s holds data; retention policy %s is created as its "
                    "default, so queries (and Home Assistant's influxdb integration) naming no "
                    "policy now use it: give --influx-retention-policy %s to write where they do",
                    settings.influx_database,
                    settings.influx_retention_policy,
                    " or ".join(sorted(names)) or "autogen",
                )
        replication = "" if verb == "ALTER" else " REPLICATION 1"
        await self._execute(
            f"{verb} RETENTION POLICY {policy} ON {database} DURATION {duration}"
            f"{replication} DEFAULT"
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- InfluxQL ---------------------------------------------------------------------------

    async def _execute(self, statement: str, *, read: bool = False) -> list[dict[str, Any]]:
        """Run one InfluxQL statement; its series. `BackendUnavailable` on any failure."""
        params = {"q": statement, "epoch": "ns"}
        if read:
            params["db"] = self.settings.influx_database
        try:
            if read:
                request = self._http().get(f"{self._url}/query", params=params)
            else:
                request = self._http().post(f"{self._url}/query", data=params)
            async with request as response:
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as err:
            raise BackendUnavailable(f"InfluxDB is unreachable ({_describe(err)})") from None
        answer = _json(body)
        if read and response.status == 400:
            raise BadQuery(f"InfluxDB cannot run this query: {_error_text(answer, body)}")
        if response.status != 200:
            raise BackendUnavailable(
                f"InfluxDB answered HTTP {response.status}: {_error_text(answer, body)}"
            )
        results = answer.get("results") if isinstance(answer, dict) else None
        result = results[0] if isinstance(results, list) and results else {}
        if not isinstance(result, dict):
            raise BackendUnavailable("InfluxDB answered a query with an unexpected body")
        if "error" in result:
            raise BackendUnavailable(f"InfluxDB refused {statement.split()[0]}: {result['error']}")
        series = result.get("series") or []
        return [item for item in series if isinstance(item, dict)]

    # -- writes -----------------------------------------------------------------------------

    async def write(self, records: Sequence[Record]) -> list[Outcome]:
        return await self._writes.write(records)

    async def _post(self, lines: str, *, prepare_again: bool = True) -> None:
        body = lines.encode()
        try:
            async with self._http().post(
                f"{self._url}/write", params=self._write_params, data=body
            ) as response:
                status = response.status
                answer = await response.read()
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as err:
            self._last_error = f"unreachable ({_describe(err)})"
            raise BackendUnavailable(f"InfluxDB is unreachable ({_describe(err)})") from None
        if status == 204:
            self._last_error = None
            return
        message = _error_text(_json(answer), answer)
        if status == 400:
            raise Refused(message)
        if prepare_again and (
            "database not found" in message or "retention policy not found" in message
        ):
            # Dropped while we run: create it again and retry once.
            self._last_error = message
            await self._prepare()
            await self._post(lines, prepare_again=False)
            return
        self._last_error = f"HTTP {status}: {message}"
        raise BackendUnavailable(
            f"InfluxDB answered HTTP {status}: {message}",
            retry_after=_seconds(retry_after),
        )

    async def expire(self, before_ns: int) -> int:
        return 0  # the retention policy expires old points inside InfluxDB

    # -- reads ------------------------------------------------------------------------------

    async def query(self, query: EventQuery) -> list[StoredEvent]:
        filters = [value for value in (query.event_type, query.entity_id) if value is not None]
        if any(_UNQUOTABLE.search(value) for value in filters):
            # InfluxQL cannot quote these, and no stored tag or measurement holds them
            # (line protocol writes them escaped): nothing can match.
            return []
        source = quote_identifier(query.event_type) if query.event_type is not None else "/.*/"
        where = [f"time >= {query.start_ns}", f"time <= {query.end_ns}"]
        if query.entity_id is not None:
            where.append(f'"entity_id" = {quote_string(query.entity_id)}')
        policy = quote_identifier(self.settings.influx_retention_policy)
        statement = (
            f"SELECT * FROM {policy}.{source} WHERE {' AND '.join(where)} "
            f"ORDER BY time DESC LIMIT {query.limit}"
        )
        events: list[tuple[int, StoredEvent]] = []
        for series in await self._execute(statement, read=True):
            measurement = series.get("name")
            columns = series.get("columns") or []
            for row in series.get("values") or []:
                values = dict(zip(columns, row, strict=False))
                time_ns = values.get("time")
                if not isinstance(time_ns, int):
                    continue
                values["event_type"] = measurement
                events.append((time_ns, stored_event(values, time_ns)))
        # Each measurement is its own series, newest first; merge them.
        events.sort(key=lambda item: item[0], reverse=True)
        return [event for _, event in events[: query.limit]]

    # -- health -----------------------------------------------------------------------------

    async def probe(self) -> DependencyHealth:
        """Ping, then read the database's retention policies (the database must exist)."""
        try:
            await self._ping()
            database = quote_identifier(self.settings.influx_database)
            await asyncio.wait_for(self._execute(f"SHOW RETENTION POLICIES ON {database}"), 5)
        except BackendUnavailable as err:
            return DependencyHealth(False, f"InfluxDB {self._url}: {err.message}")
        except TimeoutError:
            return DependencyHealth(False, f"InfluxDB {self._url}: no answer within 5 s")
        return DependencyHealth(
            True, f"InfluxDB 1.x {self._url}, database {self.settings.influx_database}"
        )

    def stats(self) -> dict[str, Any]:
        return {
            "url": self._url,
            "database": self.settings.influx_database,
            "retention_policy": self.settings.influx_retention_policy,
            "recent_ids": len(self._writes.recent),
            "bisections": self._writes.bisections,
            "layout": self.settings.influx_layout,
            "skipped_by_layout": dict(self._writes.skipped),
            "last_error": self._last_error,
        }


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _error_text(answer: Any, body: bytes) -> str:
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        return str(answer["error"])
    return body[:200].decode(errors="replace").strip() or "(no message)"


def _describe(err: BaseException) -> str:
    return str(err) or type(err).__name__


def _seconds(header: str | None) -> float | None:
    try:
        return max(1.0, float(header)) if header else None
    except ValueError:
        return None
