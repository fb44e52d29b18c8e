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
# InfluxDB refuses a point whose series key (measurement and tags, as written) is over
# 64 KiB; sent anyway, it fails its whole write, which is then bisected.
MAX_SERIES_KEY_BYTES = 64 * 1024 - 1

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
_ESCAPE_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESCAPE_KEY = str.maketrans(
    {",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"}
)


def _tag(key: str, value: str | None) -> str:
    """``,key=value`` as Point writes a tag ('' for none; the keys need no escaping)."""
    if value is None or value == "":
        return ""
    if _KEY_SPECIAL.search(value):
        value = value.translate(_ESCAPE_KEY)
    if value.endswith("\\"):
        value += " "
    return f",{key}={value}"


def _string(key: str, value: str | None) -> str:
    """``,key="value"`` as Point writes a string field ('' for none)."""
    if value is None:
        return ""
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if '"' in value:
        value = value.replace('"', '\\"')
    return f',{key}="{value}"'


def _float(key: str, value: float | None) -> str:
    """``,key=value`` as Point writes a float field ('' for none)."""
    if value is None or not math.isfinite(value):
        return ""
    text = str(value)
    return f",{key}={text[:-2] if text.endswith('.0') else text}"


# The measurement and tags, written once per series (and what InfluxDB cannot keep of
# them): a house has a few hundred series, and writing the tags out was a third of a
# line's cost. Keyed by the record's event type and tags; emptied when full.
SERIES_CACHE_SIZE = 2048
_series: dict[tuple[str | None, ...], tuple[str, str | None]] = {}


def _series_of(record: Record) -> tuple[str, str | None]:
    """(the record's series key as written, why InfluxDB cannot keep it or None)."""
    key = record[2:9]  # event_type and the tags, entity_id to instance_id
    found = _series.get(key)
    if found is None:
        found = (series_key(record), _series_problem(record))
        if len(_series) >= SERIES_CACHE_SIZE:
            _series.clear()
        _series[key] = found
    return found


def _fields(record: Record) -> str:
    """The field set as Point writes it: sorted by key, without the first comma."""
    (
        event_id,
        _time_ns,
        _event_type,
        _entity_id,
        _domain,
        _device_class,
        _unit,
        _source,
        _instance_id,
        state,
        value,
        old_state,
        attributes,
        event_data,
        context_id,
        weather_temp_c,
        weather_humidity,
        weather_condition,
        weather_pressure_hpa,
        processing_time_ms,
    ) = record
    fields = "".join(
        (
            _string("attributes", attributes),
            _string("context_id", context_id),
            _string("event_data", event_data),
            _string("event_id", event_id),
            _string("old_state", old_state),
            _float("processing_time_ms", processing_time_ms),
            _string("state", state),
            _float("value", value),
            _string("weather_condition", weather_condition),
            _float("weather_humidity", weather_humidity),
            _float("weather_pressure_hpa", weather_pressure_hpa),
            _float("weather_temp_c", weather_temp_c),
        )
    )
    return fields[1:]


def to_line(record: Record) -> str:
    """``to_point(record).to_line_protocol()``, built directly (see the module doc).

    Tags and fields in Point's order (sorted by key); ``attributes`` is never none, so
    the field list never starts empty.
    """
    return f"{_series_of(record)[0]} {_fields(record)} {record.time_ns}"


def line_or_problem(record: Record) -> tuple[str | None, str | None]:
    """(`to_line`, None), or (None, `influx_problem`) when InfluxDB cannot keep it."""
    series, problem = _series_of(record)
    if problem is None:
        problem = _text_problem(record)
    if problem is not None:
        return None, problem
    return f"{series} {_fields(record)} {record.time_ns}", None


def influx_problem(record: Record) -> str | None:
    """Why InfluxDB cannot keep ``record`` as it is, or None."""
    return _series_of(record)[1] or _text_problem(record)


def _text_problem(record: Record) -> str | None:
    for field in _TEXT_FIELDS:
        value = getattr(record, field)
        # A character is at most 4 bytes in UTF-8: most texts need no encoding to know.
        if (
            value is not None
            and len(value) * 4 > MAX_STRING_FIELD_BYTES
            and len(value.encode()) > MAX_STRING_FIELD_BYTES
        ):
            return f"{field}: is over {MAX_STRING_FIELD_BYTES} bytes, InfluxDB's string limit"
    return None


def _series_problem(record: Record) -> str | None:
    if record.event_type.startswith("#"):
        return "event_type: starts with '#', which line protocol reads as a comment"
    if record.event_type.endswith("\\"):
        return "event_type: ends with a backslash, which a line protocol measurement cannot keep"
    for tag in TAGS:
        value = getattr(record, tag)
        if value is not None and value.endswith("\\"):
            return f"{tag}: ends with a backslash, which a line protocol tag cannot keep"
    return _series_key_problem(record)


def series_key(record: Record) -> str:
    """The measurement and tags, escaped as `to_line` writes them (the series key)."""
    measurement = record.event_type
    if _MEASUREMENT_SPECIAL.search(measurement):
        measurement = measurement.translate(_ESCAPE_MEASUREMENT)
    return measurement + "".join(_tag(tag, getattr(record, tag)) for tag in sorted(TAGS))


def _series_key_problem(record: Record) -> str | None:
    # A character is at most 4 bytes in UTF-8 and 2 characters once escaped: most
    # records are far below the limit without writing the key out.
    length = len(record.event_type) + sum(len(getattr(record, tag) or "") + 16 for tag in TAGS)
    if length * 8 <= MAX_SERIES_KEY_BYTES:
        return None
    size = len(series_key(record).encode())
    if size > MAX_SERIES_KEY_BYTES:
        return f"series key (measurement and tags) is {size} bytes, over InfluxDB's 64 KiB limit"
    return None
