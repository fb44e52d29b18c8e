"""Records as InfluxDB line protocol, exactly as influxdb-client's `Point` writes them.

`to_point` builds the record's `Point`: the reference. `to_line` writes the very same
text without the `Point`: measured here, ``Point.to_line_protocol()`` costs about 75 µs
per event (29 ``str.translate`` calls with dict tables), which alone would cap an
InfluxDB ingest near 4,000 events/s on this machine; `to_line` takes a few µs by
escaping only text that holds a character to escape. A property test checks that both
agree byte for byte on arbitrary records (tests/services/storage/test_line_protocol.py).

Both InfluxDB backends send these lines (API v1 posts them to ``/write``, API v2 hands
them to influxdb-client's write API). `influx_problem` names what InfluxDB cannot keep
faithfully, so such an event is rejected on its own instead of failing its batch.
"""

from __future__ import annotations

import math
import re
from typing import Any

from influxdb_client.client.write.point import Point as _UntypedPoint
from influxdb_client.domain.write_precision import WritePrecision

from ha_ingestor_services.storage.records import TAGS, Record

# InfluxDB 1.x refuses string field values over 64 KiB; 2.x accepts more, but one
# limit for both keeps the backends interchangeable.
MAX_STRING_FIELD_BYTES = 64 * 1024

_TEXT_FIELDS = (
    "state",
    "old_state",
    "attributes",
    "event_data",
    "event_id",
    "context_id",
    "weather_condition",
)
_NUMBER_FIELDS = (
    "value",
    "weather_temp_c",
    "weather_humidity",
    "weather_pressure_hpa",
    "processing_time_ms",
)


# influxdb-client has no type hints; its Point is used through Any.
Point: Any = _UntypedPoint


def to_point(record: Record) -> Any:
    """The record as influxdb-client's `Point`."""
    point = Point(record.event_type)
    for tag in TAGS:
        value = getattr(record, tag)
        if value is not None:
            point.tag(tag, value)
    for field in _TEXT_FIELDS:
        value = getattr(record, field)
        if value is not None:
            point.field(field, value)
    for field in _NUMBER_FIELDS:
        value = getattr(record, field)
        if value is not None:
            point.field(field, value)  # always float: one field type per measurement
    return point.time(record.time_ns, WritePrecision.NS)


def point_line(record: Record) -> str:
    """The line as `Point` writes it (the reference `to_line` must match)."""
    line: str = to_point(record).to_line_protocol()
    return line


# Point's escaping rules (influxdb_client.client.write.point).
_MEASUREMENT_SPECIAL = re.compile(r"[, \n\t\r]")
_KEY_SPECIAL = re.compile(r"[,= \n\t\r]")
_STRING_SPECIAL = re.compile(r'["\\]')
_ESCAPE_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESCAPE_KEY = str.maketrans(
    {",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"}
)
_ESCAPE_STRING = str.maketrans({'"': r"\"", "\\": r"\\"})

# Point writes tags and fields sorted by key.
_SORTED_TAGS = tuple(sorted(TAGS))
_SORTED_FIELDS = tuple(sorted(_TEXT_FIELDS + _NUMBER_FIELDS))
_NUMBERS = frozenset(_NUMBER_FIELDS)


def _tag_value(value: str) -> str:
    if _KEY_SPECIAL.search(value):
        value = value.translate(_ESCAPE_KEY)
    return value + " " if value.endswith("\\") else value


def _float(value: float) -> str:
    text = str(value)
    return text[:-2] if text.endswith(".0") else text


def to_line(record: Record) -> str:
    """``to_point(record).to_line_protocol()``, built directly (see the module doc)."""
    measurement = record.event_type
    if _MEASUREMENT_SPECIAL.search(measurement):
        measurement = measurement.translate(_ESCAPE_MEASUREMENT)
    parts = [measurement]
    for tag in _SORTED_TAGS:
        value = getattr(record, tag)
        if value is not None and value != "":
            parts.append(f",{tag}={_tag_value(value)}")
    parts.append(" ")
    separator = ""
    for field in _SORTED_FIELDS:
        value = getattr(record, field)
        if value is None:
            continue
        if field in _NUMBERS:
            if not math.isfinite(value):
                continue
            parts.append(f"{separator}{field}={_float(value)}")
        else:
            if _STRING_SPECIAL.search(value):
                value = value.translate(_ESCAPE_STRING)
            parts.append(f'{separator}{field}="{value}"')
        separator = ","
    if not separator:
        return ""
    parts.append(f" {record.time_ns}")
    return "".join(parts)


def influx_problem(record: Record) -> str | None:
    """Why InfluxDB cannot keep ``record`` as it is, or None."""
    if record.event_type.startswith("#"):
        return "event_type: starts with '#', which line protocol reads as a comment"
    for field in _TEXT_FIELDS:
        value = getattr(record, field)
        if value is not None and len(value.encode()) > MAX_STRING_FIELD_BYTES:
            return f"{field}: is over {MAX_STRING_FIELD_BYTES} bytes, InfluxDB's string limit"
    for tag in TAGS:
        value = getattr(record, tag)
        if value is not None and value.endswith("\\"):
            return f"{tag}: ends with a backslash, which a line protocol tag cannot keep"
    return None
