"""A local stand-in for an InfluxDB 2.x server (no real 2.x server can run here).

It answers what the storage's v2 backend uses, the way InfluxDB 2.x does, and checks
each request: ``GET /ping``; ``GET /api/v2/buckets?name=&org=``; ``POST /api/v2/write``
(org, bucket, precision=ns, ``Authorization: Token …``, line protocol it parses and
keeps, a point overwriting the one with the same series and time); ``POST
/api/v2/query`` answering the storage's Flux query shape (range, measurement and
entity filters, pivot, newest first, limit) with annotated CSV.

Switches: ``down`` answers 503 with Retry-After; a line whose measurement is in
``refuse`` makes the write a 400 "partial write", as InfluxDB does for a bad point; a
query for the entity "refuse me" is a 400, as for a Flux query InfluxDB cannot run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

NUMBER_FIELDS = {
    "value",
    "weather_temp_c",
    "weather_humidity",
    "weather_pressure_hpa",
    "processing_time_ms",
}


def _split(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside quotes and not escaped (escapes kept)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            current.append(text[index : index + 2])
            index += 2
            continue
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\([,= \"\\])", r"\1", text)


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, Any], int]:
    key, fields_text, time_text = _split(line, " ")
    measurement, *tag_parts = _split(key, ",")
    tags = {}
    for part in tag_parts:
        name, value = _split(part, "=")
        tags[_unescape(name)] = _unescape(value)
    fields: dict[str, Any] = {}
    for part in _split(fields_text, ","):
        name, _, value = part.partition("=")
        if value.startswith('"'):
            fields[name] = _unescape(value[1:-1])
        else:
            fields[name] = float(value.rstrip("iu"))
    return _unescape(measurement), tags, fields, int(time_text)


def rfc3339_ns(time_ns: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=time_ns // 10**9)
    return f"{moment.strftime('%Y-%m-%dT%H:%M:%S')}.{time_ns % 10**9:09d}Z"


def _parse_time(text: str) -> int:
    base, _, rest = text.partition(".")
    moment = datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    seconds = int((moment - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds())
    return seconds * 10**9 + int(rest.rstrip("Z").ljust(9, "0"))


def _flux_string(pattern: str, flux: str) -> str | None:
    match = re.search(pattern + r'"((?:[^"\\]|\\.)*)"', flux)
    if match is None:
        return None
    return re.sub(r"\\(.)", r"\1", match.group(1))


@dataclass
class InfluxV2StandIn:
    org: str = "home"
    bucket: str = "events"
    token: str = "v2-token"
    down: bool = False
    refuse: set[str] = field(default_factory=set)
    points: dict[tuple[str, tuple[tuple[str, str], ...], int], dict[str, Any]] = field(
        default_factory=dict
    )
    writes: list[dict[str, Any]] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                web.get("/ping", self._ping),
                web.get("/api/v2/buckets", self._buckets),
                web.post("/api/v2/write", self._write),
                web.post("/api/v2/query", self._query),
            ]
        )
        return app

    def _error(self, status: int, code: str, message: str) -> web.Response:
        headers = {"Retry-After": "4"} if status == 503 else None
        return web.json_response({"code": code, "message": message}, status=status, headers=headers)

    def _refusal(self, request: web.Request) -> web.Response | None:
        if self.down:
            return self._error(503, "unavailable", "service unavailable")
        if request.headers.get("Authorization") != f"Token {self.token}":
            return self._error(401, "unauthorized", "unauthorized access")
        return None

    async def _ping(self, request: web.Request) -> web.Response:
        if self.down:
            return self._error(503, "unavailable", "service unavailable")
        return web.Response(status=204, headers={"X-Influxdb-Version": "v2.7.11"})

    async def _buckets(self, request: web.Request) -> web.Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        if request.query.get("org") != self.org:
            return self._error(
                404, "not found", f'organization name "{request.query.get("org")}" not found'
            )
        name = request.query.get("name")
        buckets = (
            [
                {
                    "id": "0123456789abcdef",
                    "name": self.bucket,
                    "orgID": "fedcba9876543210",
                    "type": "user",
                    "retentionRules": [{"type": "expire", "everySeconds": 0}],
                }
            ]
            if name == self.bucket
            else []
        )
        return web.json_response({"buckets": buckets})

    async def _write(self, request: web.Request) -> web.Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        query = request.query
        if query.get("org") != self.org:
            return self._error(
                404, "not found", f'organization name "{query.get("org")}" not found'
            )
        if query.get("bucket") != self.bucket:
            return self._error(404, "not found", f'bucket "{query.get("bucket")}" not found')
        if query.get("precision") != "ns":
            return self._error(400, "invalid", "this stand-in expects precision=ns")
        if not request.content_type.startswith("text/plain"):
            return self._error(400, "invalid", f"unexpected content type {request.content_type}")
        body = (await request.read()).decode()
        lines = [line for line in body.split("\n") if line]
        self.writes.append({"lines": lines, "query": dict(query)})
        refused = 0
        for line in lines:
            measurement, tags, fields, time_ns = parse_line(line)
            if measurement in self.refuse:
                refused += 1
                continue
            key = (measurement, tuple(sorted(tags.items())), time_ns)
            self.points[key] = {**tags, **fields}
        if refused:
            return self._error(
                400, "invalid", f"partial write: points refused by the stand-in dropped={refused}"
            )
        return web.Response(status=204)

    async def _query(self, request: web.Request) -> web.Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        if request.query.get("org") != self.org:
            return self._error(404, "not found", "organization not found")
        body = orjson.loads(await request.read())
        flux: str = body["query"]
        self.queries.append(flux)
        if _flux_string(r"from\(bucket: ", flux) != self.bucket:
            return self._error(404, "not found", "bucket not found")
        times = re.findall(r'time\(v: "([^"]+)"\)', flux)
        start, stop = _parse_time(times[0]), _parse_time(times[1])
        measurement = _flux_string(r"r\._measurement == ", flux)
        entity_id = _flux_string(r"r\.entity_id == ", flux)
        if entity_id == "refuse me":
            return self._error(400, "invalid", "compilation failed: refused by the stand-in")
        limit_match = re.search(r"limit\(n: (\d+)\)", flux)
        assert limit_match is not None
        rows = [
            (key, values)
            for key, values in self.points.items()
            if start <= key[2] < stop
            and (measurement is None or key[0] == measurement)
            and (entity_id is None or values.get("entity_id") == entity_id)
        ]
        rows.sort(key=lambda item: item[0][2], reverse=True)
        rows = rows[: int(limit_match.group(1))]
        return web.Response(
            body=self._csv(rows, times[0], times[1]), content_type="text/csv", charset="utf-8"
        )

    @staticmethod
    def _csv(
        rows: list[tuple[tuple[str, tuple[tuple[str, str], ...], int], dict[str, Any]]],
        start: str,
        stop: str,
    ) -> bytes:
        """Annotated CSV as InfluxDB 2.x writes a pivoted, ungrouped table."""
        keys = sorted({name for _, values in rows for name in values})
        columns = ["result", "table", "_start", "_stop", "_time", "_measurement", *keys]
        types = ["string", "long", "dateTime:RFC3339", "dateTime:RFC3339", "dateTime:RFC3339"]
        types += ["string"] + ["double" if key in NUMBER_FIELDS else "string" for key in keys]

        def cell(value: Any) -> str:
            if value is None:
                return ""
            text = repr(value) if isinstance(value, float) else str(value)
            if any(char in text for char in ',"\n\r'):
                return '"' + text.replace('"', '""') + '"'
            return text

        lines = [
            "#datatype," + ",".join(types),
            "#group," + ",".join("false" for _ in columns),
            "#default,_result" + "," * (len(columns) - 1),
            "," + ",".join(columns),
        ]
        for (measurement, _, time_ns), values in rows:
            cells = ["", "0", start, stop, rfc3339_ns(time_ns), measurement]
            cells += [cell(values.get(key)) for key in keys]
            lines.append("," + ",".join(cells))
        return ("\r\n".join(lines) + "\r\n\r\n").encode()
