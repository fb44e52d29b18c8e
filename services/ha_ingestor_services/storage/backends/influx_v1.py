"""InfluxDB 1.x backend (API v1): line protocol to ``/write``, InfluxQL from ``/query``.

At start the database is created and the retention policy created (or altered) as the
database's default, with a duration of ``retention_days`` (INF when 0).

Idempotency: a resent event has the same measurement, tags and nanosecond time, so
InfluxDB overwrites the point with itself: one copy whatever happens. A bounded set of
recently written event ids lets the answer say ``duplicate``; storage stays correct
without it (after a restart a resent event is answered ``stored`` and still kept once).

InfluxDB answers a write with 204 once the points are in its write-ahead log (fsynced).
A 400 means some lines were refused and the others written ("partial write"); the batch
is then halved until each refused line is found and rejected on its own.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson

from ha_ingestor_services.storage.records import Record, StoredEvent, stored_event
from ha_ingestor_services.storage.settings import StorageSettings
from ha_ingestor_services.web import DependencyHealth, StartupError

from .base import DUPLICATE, STORED, BackendUnavailable, BadQuery, EventQuery, Outcome
from .line_protocol import influx_problem, to_line

# Enough to recognise resends of the last minutes; ids are kept as text (no hash
# collisions that could call a new event a duplicate).
RECENT_IDS = 50_000
_UNQUOTABLE = re.compile(r"[\x00\n\r\t]")
INFLUX_REJECTED = "INFLUX_REJECTED"


def quote_identifier(name: str) -> str:
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def quote_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


class RecentIds:
    """The last ``size`` event ids written, to answer ``duplicate`` without a read."""

    def __init__(self, size: int = RECENT_IDS) -> None:
        self._size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)

    def __len__(self) -> int:
        return len(self._ids)


class _Refused(Exception):
    """InfluxDB refused (some of) the lines: 400 with its message."""


class InfluxV1Backend:
    name = "influxdb-v1"

    def __init__(self, settings: StorageSettings) -> None:
        self.settings = settings
        self._url = settings.influx_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._recent = RecentIds()
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
        self._bisections = 0

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
        outcomes: list[Outcome | None] = []
        lines: list[str] = []
        positions: list[int] = []
        seen: set[str] = set()
        for index, record in enumerate(records):
            if record.event_id in self._recent or record.event_id in seen:
                outcomes.append(DUPLICATE)
                continue
            problem = influx_problem(record)
            if problem is not None:
                outcomes.append(_rejected(problem))
                continue
            seen.add(record.event_id)
            lines.append(to_line(record))
            positions.append(index)
            outcomes.append(None)
        refused = await self._write_lines(lines, 0)
        for offset, index in enumerate(positions):
            message = refused.get(offset)
            if message is None:
                outcomes[index] = STORED
                self._recent.add(records[index].event_id)
            else:
                outcomes[index] = _rejected(f"InfluxDB refused the point: {message}")
        return [outcome if outcome is not None else STORED for outcome in outcomes]

    async def _write_lines(self, lines: list[str], first: int) -> dict[int, str]:
        """Write ``lines``; the refused ones by position (from ``first``) with InfluxDB's reason."""
        if not lines:
            return {}
        try:
            await self._post("\n".join(lines).encode())
        except _Refused as err:
            if len(lines) == 1:
                return {first: str(err)}
            self._bisections += 1
            half = len(lines) // 2
            refused = await self._write_lines(lines[:half], first)
            refused.update(await self._write_lines(lines[half:], first + half))
            return refused
        return {}

    async def _post(self, body: bytes, *, prepare_again: bool = True) -> None:
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
            raise _Refused(message)
        if prepare_again and (
            "database not found" in message or "retention policy not found" in message
        ):
            # Dropped while we run: create it again and retry once.
            self._last_error = message
            await self._prepare()
            await self._post(body, prepare_again=False)
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
            "recent_ids": len(self._recent),
            "bisections": self._bisections,
            "last_error": self._last_error,
        }


def _rejected(message: str) -> Outcome:
    return {"code": INFLUX_REJECTED, "message": message}


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
