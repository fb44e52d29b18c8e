"""Where the points come from: InfluxDB 1.x, InfluxDB 2.x, or a storage service's API.

Each reader answers the entities it holds and, per entity, its state points in a window
``start <= time < end`` (ns), newest first, one page at a time (`pages`). InfluxDB
sources are read in either layout:

- ``ha_ingestor``: ours (docs/ARCHITECTURE.md, "Storage schema"): measurement
  ``state_changed``, tag ``entity_id`` (the whole id), fields ``state`` and ``value``.
- ``home_assistant``: Home Assistant's ``influxdb`` integration with default settings:
  measurement = the unit of measurement, else the entity id; tags ``domain`` and
  ``entity_id`` (the object id); field ``value`` for numeric states, ``state`` for the
  others (both for states it can read as a number, like ``on``). It writes no
  ``unknown``, ``unavailable`` or empty state (`HOME_ASSISTANT_SKIPS`).

Paging: a query asks for at most ``page_size`` points older than a cursor. A full page
may stop in the middle of the points of its oldest time, so those are read again with
the next page (`_paged`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

import aiohttp
import orjson

from ha_ingestor_services.storage.records import datetime_to_ns, ns_to_rfc3339

from .compare import Point, Value

Layout = Literal["ha_ingestor", "home_assistant"]
LAYOUTS: tuple[Layout, ...] = ("ha_ingestor", "home_assistant")
STATE_CHANGED = "state_changed"
# States Home Assistant's influxdb integration never writes.
HOME_ASSISTANT_SKIPS: frozenset[Value] = frozenset({"unknown", "unavailable", "", None})
API_MAX_LIMIT = 10_000  # storage/query.py's MAX_LIMIT
MICROSECOND = 1000  # the API's and influxdb-client's times: no digits below

_UNQUOTABLE = re.compile(r"[\x00\n\r\t]")


class SourceError(Exception):
    """A source cannot be read; the message names it and says why."""


@dataclass(frozen=True, slots=True)
class Source:
    """One side of the comparison, as given on the command line."""

    kind: Literal["influxdb-v1", "influxdb-v2", "api"]
    url: str
    layout: Layout = "ha_ingestor"
    database: str | None = None
    retention_policy: str | None = None
    username: str | None = None
    password: str | None = None
    org: str | None = None
    bucket: str | None = None
    token: str | None = None
    timeout_s: float = 30.0

    def describe(self) -> str:
        where = {
            "influxdb-v1": f"database {self.database}",
            "influxdb-v2": f"bucket {self.bucket}",
            "api": "query API",
        }[self.kind]
        layout = f", {self.layout} layout" if self.kind != "api" else ""
        return f"{self.kind} {self.url} ({where}{layout})"


class Reader(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def entities(self, start_ns: int, end_ns: int) -> set[str]: ...
    def pages(self, entity_id: str, start_ns: int, end_ns: int) -> AsyncIterator[list[Point]]: ...


# A page fetcher: (entity, start, end) -> points newest first, and the oldest time up to
# which they are complete (None: nothing older in the window either).
Fetch = Callable[[str | None, int, int], Awaitable[tuple[list[Point], int | None]]]


async def _paged(
    fetch: Fetch, entity_id: str | None, start_ns: int, end_ns: int, step: int = 1
) -> AsyncIterator[list[Point]]:
    """Pages of ``fetch``; ``step``: the sources' time resolution (1000 when they answer
    whole microseconds, though the points stored hold digits below)."""
    end = end_ns
    while end > start_ns:
        points, bound = await fetch(entity_id, start_ns, end)
        if bound is None:
            if points:
                yield points
            return
        # Points at the bound may continue on the next page: read them again there.
        newer = [point for point in points if point.time_ns > bound]
        if newer:
            yield newer
            end = bound + step
        else:  # a whole page of one time: take it and go past it
            yield points
            end = bound


def _split_entity(entity_id: str) -> tuple[str, str]:
    domain, _, object_id = entity_id.partition(".")
    return domain, object_id


def _state(state: object, value: object) -> Value:
    """A point's value: the state text when stored, else the number."""
    if isinstance(state, str):
        return state
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _describe(err: BaseException) -> str:
    return str(err) or type(err).__name__


# -- InfluxDB 1.x ---------------------------------------------------------------------------


def _identifier(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class InfluxV1Reader:
    """InfluxQL over ``/query`` (GET, read-only)."""

    def __init__(self, source: Source, page_size: int) -> None:
        self.source = source
        self.page_size = page_size
        self._url = source.url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        auth = (
            aiohttp.BasicAuth(self.source.username, self.source.password or "")
            if self.source.username
            else None
        )
        self._session = aiohttp.ClientSession(
            auth=auth, timeout=aiohttp.ClientTimeout(total=self.source.timeout_s)
        )
        database = self.source.database or ""
        names = {
            row[0]
            for series in await self._query("SHOW DATABASES")
            for row in series.get("values") or []
        }
        if database not in names:
            raise SourceError(f"database {database!r} not found")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _query(self, statement: str) -> list[dict[str, Any]]:
        assert self._session is not None
        params = {"q": statement, "epoch": "ns"}
        if self.source.database:
            params["db"] = self.source.database
        try:
            async with self._session.get(f"{self._url}/query", params=params) as response:
                status, body = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            raise SourceError(f"unreachable ({_describe(err)})") from None
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = None
        if status in (401, 403):
            raise SourceError(f"refused the credentials (HTTP {status})")
        if status != 200 or not isinstance(answer, dict):
            text = answer.get("error") if isinstance(answer, dict) else body[:200].decode("replace")
            raise SourceError(f"answered HTTP {status}: {text}")
        results = answer.get("results") or [{}]
        result = results[0] if isinstance(results[0], dict) else {}
        if "error" in result:
            raise SourceError(f"refused {statement.split()[0]}: {result['error']}")
        return [series for series in result.get("series") or [] if isinstance(series, dict)]

    def _from(self, measurement: str | None) -> str:
        target = _identifier(measurement) if measurement is not None else "/.*/"
        policy = self.source.retention_policy
        return f"{_identifier(policy)}.{target}" if policy else target

    async def _tag_values(self, key: str, measurement: str | None, where: str = "") -> set[str]:
        statement = f"SHOW TAG VALUES FROM {self._from(measurement)} WITH KEY = {_identifier(key)}"
        series = await self._query(statement + (f" WHERE {where}" if where else ""))
        return {row[1] for item in series for row in item.get("values") or [] if len(row) > 1}

    async def entities(self, start_ns: int, end_ns: int) -> set[str]:
        # The tag index knows no times: entities without points in the window come out
        # of the comparison with none on either side and are left out of the report.
        if self.source.layout == "ha_ingestor":
            return await self._tag_values("entity_id", STATE_CHANGED)
        found: set[str] = set()
        for domain in await self._tag_values("domain", None):
            if _UNQUOTABLE.search(domain):
                continue
            where = f'"domain" = {_string(domain)}'
            found |= {f"{domain}.{obj}" for obj in await self._tag_values("entity_id", None, where)}
        return found

    def pages(self, entity_id: str, start_ns: int, end_ns: int) -> AsyncIterator[list[Point]]:
        return _paged(self._fetch, entity_id, start_ns, end_ns)

    async def _fetch(
        self, entity_id: str | None, start_ns: int, end_ns: int
    ) -> tuple[list[Point], int | None]:
        assert entity_id is not None
        if _UNQUOTABLE.search(entity_id):
            return [], None
        if self.source.layout == "ha_ingestor":
            source, where = self._from(STATE_CHANGED), f'"entity_id" = {_string(entity_id)}'
        else:
            domain, object_id = _split_entity(entity_id)
            source = self._from(None)
            where = f'"domain" = {_string(domain)} AND "entity_id" = {_string(object_id)}'
        statement = (
            f'SELECT "state", "value" FROM {source} WHERE {where} AND time >= {start_ns} '
            f"AND time < {end_ns} ORDER BY time DESC LIMIT {self.page_size}"
        )
        points: list[Point] = []
        bound: int | None = None
        # LIMIT holds per measurement: each one full stops the page at its oldest time.
        for series in await self._query(statement):
            columns = series.get("columns") or []
            rows = series.get("values") or []
            for row in rows:
                values = dict(zip(columns, row, strict=False))
                if isinstance(values.get("time"), int):
                    value = _state(values.get("state"), values.get("value"))
                    points.append(Point(values["time"], value))
            if len(rows) >= self.page_size and rows:
                oldest = rows[-1][0]
                bound = oldest if bound is None else max(bound, oldest)
        points.sort(key=lambda point: point.time_ns, reverse=True)
        return points, bound


# -- InfluxDB 2.x ---------------------------------------------------------------------------


def _flux_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return f'"{escaped}"'


def _flux_time(time_ns: int) -> str:
    seconds = ns_to_rfc3339(time_ns - time_ns % 1_000_000_000).removesuffix("Z")
    return f'time(v: "{seconds}.{time_ns % 1_000_000_000:09d}Z")'


class InfluxV2Reader:
    """Flux through influxdb-client's async client."""

    def __init__(self, source: Source, page_size: int) -> None:
        self.source = source
        self.page_size = page_size
        self._client: Any = None

    async def open(self) -> None:
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

        self._client = InfluxDBClientAsync(
            url=self.source.url.rstrip("/"),
            token=self.source.token or "",
            org=self.source.org or "",
            timeout=int(self.source.timeout_s * 1000),
        )
        from influxdb_client.rest import ApiException

        try:
            await self._client.ping()
        except ApiException as err:
            raise SourceError(f"answered /ping with HTTP {err.status}") from None
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as err:
            raise SourceError(f"unreachable ({_describe(err)})") from None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _tables(self, flux: str) -> list[Any]:
        from influxdb_client.rest import ApiException

        try:
            tables: list[Any] = await self._client.query_api().query(flux)
        except ApiException as err:
            raise SourceError(f"answered HTTP {err.status}: {err.message}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise SourceError(f"unreachable ({_describe(err)})") from None
        return tables

    def _range(self, start_ns: int, end_ns: int) -> str:
        bucket = _flux_string(self.source.bucket or "")
        return (
            f"from(bucket: {bucket})\n"
            f"  |> range(start: {_flux_time(start_ns)}, stop: {_flux_time(end_ns)})\n"
        )

    def _entity_filter(self, entity_id: str) -> str:
        if self.source.layout == "ha_ingestor":
            return (
                f"  |> filter(fn: (r) => r._measurement == {_flux_string(STATE_CHANGED)})\n"
                f"  |> filter(fn: (r) => r.entity_id == {_flux_string(entity_id)})\n"
            )
        domain, object_id = _split_entity(entity_id)
        return (
            f"  |> filter(fn: (r) => r.domain == {_flux_string(domain)}"
            f" and r.entity_id == {_flux_string(object_id)})\n"
        )

    async def entities(self, start_ns: int, end_ns: int) -> set[str]:
        only = (
            f"  |> filter(fn: (r) => r._measurement == {_flux_string(STATE_CHANGED)})\n"
            if self.source.layout == "ha_ingestor"
            else ""
        )
        flux = (
            self._range(start_ns, end_ns)
            + only
            + '  |> filter(fn: (r) => r._field == "state" or r._field == "value")\n'
            + '  |> keep(columns: ["domain", "entity_id"])\n'
            + '  |> group()\n  |> unique(column: "entity_id")\n'
        )
        if self.source.layout == "home_assistant":
            flux = flux.replace(
                '|> unique(column: "entity_id")',
                '|> map(fn: (r) => ({r with entity_id: r.domain + "." + r.entity_id}))\n'
                '  |> unique(column: "entity_id")',
            )
        found: set[str] = set()
        for table in await self._tables(flux):
            for row in table.records:
                value = row.values.get("entity_id")
                if isinstance(value, str):
                    found.add(value)
        return found

    def pages(self, entity_id: str, start_ns: int, end_ns: int) -> AsyncIterator[list[Point]]:
        return _paged(self._fetch, entity_id, start_ns, end_ns, MICROSECOND)

    async def _fetch(
        self, entity_id: str | None, start_ns: int, end_ns: int
    ) -> tuple[list[Point], int | None]:
        assert entity_id is not None
        flux = (
            self._range(start_ns, end_ns)
            + self._entity_filter(entity_id)
            + '  |> filter(fn: (r) => r._field == "state" or r._field == "value")\n'
            + '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
            + "  |> group()\n"
            + '  |> sort(columns: ["_time"], desc: true)\n'
            + f"  |> limit(n: {self.page_size})"
        )
        points: list[Point] = []
        for table in await self._tables(flux):
            for row in table.records:
                moment = row.values.get("_time")
                if isinstance(moment, datetime):
                    time_ns = datetime_to_ns(moment)
                    state = _state(row.values.get("state"), row.values.get("value"))
                    points.append(Point(time_ns, state))
        points.sort(key=lambda point: point.time_ns, reverse=True)
        full = len(points) >= self.page_size and points
        return points, points[-1].time_ns if full else None


# -- a storage service's query API ----------------------------------------------------------


class ApiReader:
    """``GET /api/v1/events`` of a storage service (newest first, ``limit`` per call)."""

    def __init__(self, source: Source, page_size: int) -> None:
        self.source = source
        self.page_size = min(page_size, API_MAX_LIMIT)
        self._url = source.url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.source.token or ''}"},
            timeout=aiohttp.ClientTimeout(total=self.source.timeout_s),
        )
        await self._get({"limit": "1", "event_type": STATE_CHANGED})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _get(self, params: dict[str, str]) -> list[dict[str, Any]]:
        assert self._session is not None
        try:
            async with self._session.get(f"{self._url}/api/v1/events", params=params) as answer:
                status, body = answer.status, await answer.read()
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            raise SourceError(f"unreachable ({_describe(err)})") from None
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            document = None
        if status in (401, 403):
            raise SourceError(f"refused the token (HTTP {status})")
        if status != 200 or not isinstance(document, dict):
            error = document.get("error") if isinstance(document, dict) else None
            message = (
                error.get("message") if isinstance(error, dict) else body[:200].decode("replace")
            )
            raise SourceError(f"answered HTTP {status}: {message}")
        events = document.get("events")
        if not isinstance(events, list):
            raise SourceError("answered without an events list: is it a storage service?")
        return [event for event in events if isinstance(event, dict)]

    async def _events(
        self, entity_id: str | None, start_ns: int, end_ns: int, *, ids: bool
    ) -> tuple[list[Point], int | None]:
        """A page of points; with ``ids`` each point's value is its entity id."""
        # The API's times are whole microseconds and its end is inclusive.
        params = {
            "event_type": STATE_CHANGED,
            "start_time": ns_to_rfc3339(start_ns + (-start_ns) % 1000),
            "end_time": ns_to_rfc3339(end_ns - 1),
            "limit": str(self.page_size),
        }
        if entity_id is not None:
            params["entity_id"] = entity_id
        points: list[Point] = []
        for event in await self._get(params):
            try:
                time_ns = datetime_to_ns(datetime.fromisoformat(str(event["timestamp"])))
            except (KeyError, ValueError):
                continue
            value = (
                str(event.get("entity_id") or "")
                if ids
                else _state(event.get("state"), event.get("value"))
            )
            points.append(Point(time_ns, value))
        full = len(points) >= self.page_size and points
        return points, points[-1].time_ns if full else None

    async def _fetch(
        self, entity_id: str | None, start_ns: int, end_ns: int
    ) -> tuple[list[Point], int | None]:
        return await self._events(entity_id, start_ns, end_ns, ids=False)

    async def _fetch_ids(
        self, entity_id: str | None, start_ns: int, end_ns: int
    ) -> tuple[list[Point], int | None]:
        return await self._events(entity_id, start_ns, end_ns, ids=True)

    async def entities(self, start_ns: int, end_ns: int) -> set[str]:
        # The API lists no entities: the window's events are read once for their ids.
        found: set[str] = set()
        async for page in _paged(self._fetch_ids, None, start_ns, end_ns, MICROSECOND):
            found.update(str(point.value) for point in page if point.value)
        return found

    def pages(self, entity_id: str, start_ns: int, end_ns: int) -> AsyncIterator[list[Point]]:
        return _paged(self._fetch, entity_id, start_ns, end_ns, MICROSECOND)


def reader(source: Source, page_size: int) -> Reader:
    if source.kind == "influxdb-v1":
        return InfluxV1Reader(source, page_size)
    if source.kind == "influxdb-v2":
        return InfluxV2Reader(source, page_size)
    return ApiReader(source, page_size)
