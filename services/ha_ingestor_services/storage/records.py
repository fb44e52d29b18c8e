"""One stored event: how an envelope becomes a record, and a record an answered event.

Every backend stores the same `Record` (docs/ARCHITECTURE.md, "Storage schema"):
measurement = event type; tags entity_id, domain, device_class, unit, source,
instance_id; fields state, value, old_state, attributes (JSON text), event_data (JSON
text, for events other than state changes), event_id, context_id, weather_*,
processing_time_ms; time = the event's own time in nanoseconds.

Home Assistant's times have microsecond precision, so the nanosecond digits below it are
free: they hold a number derived from the event id (0..999). A resent event gets the
same time again and overwrites itself in InfluxDB, while two different events of one
entity in the same microsecond stay two points (999 times in 1000). Answers show the
time to the microsecond, as it came in.

Every backend answers queries with `StoredEvent`, so the shape does not depend on the
backend.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypedDict

import orjson

from ha_ingestor_pipeline.envelope import ValidationError
from ha_ingestor_services.normalize import Normalized, normalize

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# InfluxDB's time range (int64 ns, with its two reserved extremes); SQLite keeps the same.
MIN_TIME_NS = -9_223_372_036_854_775_806
MAX_TIME_NS = 9_223_372_036_854_775_806
_NS_PER_S = 1_000_000_000

TAGS = ("entity_id", "domain", "device_class", "unit", "source", "instance_id")
# The longest tag value kept (envelopes.py checks received envelopes the same way; an
# enrichment's ``normalized`` part is checked here): see MAX_TAG_LENGTH there.
MAX_TAG_LENGTH = 255


class Record(NamedTuple):
    """One event as stored; the field order is the SQLite column order."""

    event_id: str
    time_ns: int
    event_type: str
    entity_id: str | None
    domain: str | None
    device_class: str | None
    unit: str | None
    source: str | None
    instance_id: str | None
    state: str | None
    value: float | None
    old_state: str | None
    attributes: str  # JSON object text
    event_data: str | None  # JSON object text, None when empty
    context_id: str | None
    weather_temp_c: float | None
    weather_humidity: float | None
    weather_condition: str | None
    weather_pressure_hpa: float | None
    processing_time_ms: float | None


class StoredEvent(TypedDict):
    """An event as ``GET /api/v1/events`` answers it, whatever the backend."""

    event_id: str
    timestamp: str
    event_type: str
    entity_id: str | None
    domain: str | None
    device_class: str | None
    unit: str | None
    source: str | None
    instance_id: str | None
    state: str | None
    value: float | None
    old_state: str | None
    attributes: dict[str, Any]
    event_data: dict[str, Any]
    context_id: str | None
    weather_temp_c: float | None
    weather_humidity: float | None
    weather_condition: str | None
    weather_pressure_hpa: float | None
    processing_time_ms: float | None


# -- time -----------------------------------------------------------------------------


def datetime_to_ns(moment: datetime) -> int:
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * _NS_PER_S + delta.microseconds * 1000


def ns_to_rfc3339(time_ns: int) -> str:
    """RFC 3339 UTC text to the microsecond (the event-id digits dropped)."""
    moment = EPOCH + timedelta(microseconds=time_ns // 1000)
    return moment.isoformat().replace("+00:00", "Z")


def event_time_ns(timestamp: str, event_id: str) -> int:
    """The stored time of an event: its own time plus the event-id digits below 1 µs."""
    try:
        moment = datetime.fromisoformat(timestamp)
        base = datetime_to_ns(moment)
    except (ValueError, OverflowError):
        raise ValidationError("timestamp", "is not a valid timestamp", "RFC 3339") from None
    time_ns = base - base % 1000 + zlib.crc32(event_id.encode()) % 1000
    if not MIN_TIME_NS <= time_ns <= MAX_TIME_NS:
        raise ValidationError(
            "timestamp", "is outside the range storage can keep", "years 1678 to 2261"
        )
    return time_ns


# -- envelope to record -----------------------------------------------------------------


def _text(value: object) -> str | None:
    """Text for a tag or text field; empty text counts as absent (InfluxDB drops it)."""
    return value if type(value) is str and value else None


def _number(value: object) -> float | None:
    """A finite float; ints become floats so InfluxDB sees one field type."""
    if type(value) is float:  # the usual case first: this runs several times per event
        return value if math.isfinite(value) else None
    if type(value) is int:
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def _valid_normalized(raw: object) -> Normalized | None:
    """The enrichment's ``normalized`` part when every key has its type, else None."""
    if type(raw) is not dict and not isinstance(raw, dict):
        return None
    # Each key read once (this runs for every enriched event).
    domain = raw.get("domain")
    object_id = raw.get("object_id")
    unit = raw.get("unit")
    device_class = raw.get("device_class")
    for text in (domain, object_id, unit, device_class):
        if text is not None and not isinstance(text, str):
            return None
    value = raw.get("value")
    number = None
    if value is not None:
        number = _number(value)
        if number is None:
            return None
    boolean = raw.get("boolean")
    if boolean is not None and not isinstance(boolean, bool):
        return None
    return {
        "domain": domain,
        "object_id": object_id,
        "value": number,
        "boolean": boolean,
        "unit": unit,
        "device_class": device_class,
    }


def _weather(envelope: Mapping[str, Any]) -> Mapping[str, Any]:
    """The enrichment's weather, else the weather Home Assistant sent in the context."""
    weather = envelope.get("weather")
    if isinstance(weather, dict):
        return weather
    context = envelope.get("context")
    weather = context.get("weather") if isinstance(context, dict) else None
    return weather if isinstance(weather, dict) else {}


def _json_object(value: object, field: str) -> str | None:
    if not value:
        return None
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError as err:  # e.g. an integer too large for JSON
        raise ValidationError(
            field, f"cannot be stored as JSON: {err}", "JSON-safe values"
        ) from None


def to_record(envelope: Mapping[str, Any]) -> Record:
    """Map a checked envelope (`envelopes.check_envelope`) to its record.

    The optional parts the enrichment adds (``normalized``, ``weather``, ``processing``)
    are used when their types are right and ignored otherwise; the state is normalized
    here when ``normalized`` is missing (the integration sent straight to storage).
    Raises `ValidationError` for what no backend can keep.
    """
    event_id: str = envelope["event_id"]
    data: Mapping[str, Any] = envelope["data"]
    normalized = _valid_normalized(envelope.get("normalized")) or normalize(envelope)
    weather = _weather(envelope)
    processing = envelope.get("processing")
    context = envelope.get("context")
    state_context = data.get("context")
    return build_record(
        event_id,
        envelope["timestamp"],
        data["event_type"],
        data.get("entity_id"),
        normalized,
        envelope.get("source"),
        context.get("instance_id") if isinstance(context, dict) else None,
        data.get("state"),
        data.get("old_state"),
        data.get("attributes"),
        data.get("data"),
        state_context.get("id") if isinstance(state_context, dict) else None,
        weather,
        processing.get("processing_time_ms") if isinstance(processing, dict) else None,
    )


def build_record(
    event_id: str,
    timestamp: str,
    event_type: str,
    entity_id: object,
    normalized: Normalized,
    source: object,
    instance_id: object,
    state: str | None,
    old_state: str | None,
    attributes: dict[str, Any] | None,
    event_data: object,
    context_id: object,
    weather: Mapping[str, Any],
    processing_time_ms: object,
) -> Record:
    """The record of a checked envelope's parts (`to_record`, and storage's typed
    decoding); raises `ValidationError` for what no backend can keep."""
    # Positional (in `Record`'s field order): a third of the cost of keywords here.
    record = Record(
        event_id,
        event_time_ns(timestamp, event_id),
        event_type,
        _text(entity_id),
        _text(normalized["domain"]),
        _text(normalized["device_class"]),
        _text(normalized["unit"]),
        _text(source),
        _text(instance_id),
        # An empty state is kept as none: InfluxDB 2.x's CSV answers cannot tell them apart.
        state or None,
        normalized["value"],
        old_state or None,
        _json_object(attributes, "data.attributes") or "{}",
        _json_object(event_data, "data.data"),
        _text(context_id),
        _number(weather.get("temperature_c")),
        _number(weather.get("humidity")),
        _text(weather.get("condition")),
        _number(weather.get("pressure_hpa")),
        _number(processing_time_ms),
    )
    for tag in record[3:9]:  # the tags: entity_id to instance_id
        if tag is not None and len(tag) > MAX_TAG_LENGTH:
            _long_tag(record)
    return record


def _long_tag(record: Record) -> None:
    """Raise the `ValidationError` that names the first tag over `MAX_TAG_LENGTH`."""
    for tag in TAGS:
        value = getattr(record, tag)
        if value is not None and len(value) > MAX_TAG_LENGTH:
            raise ValidationError(
                tag, f"is {len(value)} characters long", f"at most {MAX_TAG_LENGTH}"
            )


# -- record to answer -----------------------------------------------------------------


def _object(text: object) -> dict[str, Any]:
    if not isinstance(text, str) or not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def stored_event(values: Mapping[str, Any], time_ns: int) -> StoredEvent:
    """The answered shape from a backend's row (column name → value)."""

    def text(key: str) -> str | None:
        value = values.get(key)
        return value if isinstance(value, str) and value != "" else None

    def number(key: str) -> float | None:
        return _number(values.get(key))

    return {
        "event_id": values.get("event_id") or "",
        "timestamp": ns_to_rfc3339(time_ns),
        "event_type": values.get("event_type") or "",
        "entity_id": text("entity_id"),
        "domain": text("domain"),
        "device_class": text("device_class"),
        "unit": text("unit"),
        "source": text("source"),
        "instance_id": text("instance_id"),
        # A state may be "" (unlike a tag), so it is kept as it is.
        "state": text("state"),
        "value": number("value"),
        "old_state": text("old_state"),
        "attributes": _object(values.get("attributes")),
        "event_data": _object(values.get("event_data")),
        "context_id": text("context_id"),
        "weather_temp_c": number("weather_temp_c"),
        "weather_humidity": number("weather_humidity"),
        "weather_condition": text("weather_condition"),
        "weather_pressure_hpa": number("weather_pressure_hpa"),
        "processing_time_ms": number("processing_time_ms"),
    }
