"""Checking received event envelopes (docs/ARCHITECTURE.md, Contracts, "Event envelope").

Written out by hand rather than as a voluptuous schema: this runs once per event on the
ingest path, and an equivalent voluptuous schema measured 84 µs per envelope here
against a few µs for these checks (see docs/ARCHITECTURE.md). Voluptuous still checks
the request-level shapes (query parameters, settings), where speed does not matter.

`check_envelope` raises the pipeline's `ValidationError` naming the field, what is
wrong and what was expected; the error becomes the event's ``rejected`` result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeGuard

from ha_ingestor_pipeline.envelope import ValidationError, to_rfc3339

MAX_EVENT_ID_LENGTH = 128
MAX_EVENT_TYPE_LENGTH = 255
MAX_ENTITY_ID_LENGTH = 255
# Every text that becomes an InfluxDB tag (source, instance id, unit, device class; the
# entity id above) is capped: InfluxDB refuses a series key over 64 KiB, and one huge
# tag made every write of its batch fail and be bisected (issue 10).
MAX_TAG_LENGTH = 255


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _require_mapping(value: object, field: str) -> Mapping[str, Any]:
    if type(value) is dict or isinstance(value, Mapping):
        return value
    raise ValidationError(field, f"has type {_type_name(value)}", "object")


def _optional_text(
    data: Mapping[str, Any], key: str, field: str, max_length: int | None = None
) -> None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ValidationError(field, f"has type {_type_name(value)}", "string or null")
    if max_length is not None and value is not None and len(value) > max_length:
        raise ValidationError(field, f"is {len(value)} characters long", f"at most {max_length}")


def _check_tag_attributes(attributes: Mapping[str, Any]) -> None:
    """The attributes that become tags (unit, device class); other types are ignored."""
    for key in ("unit_of_measurement", "device_class"):
        value = attributes.get(key)
        if isinstance(value, str) and len(value) > MAX_TAG_LENGTH:
            raise ValidationError(
                f"data.attributes.{key}",
                f"is {len(value)} characters long",
                f"at most {MAX_TAG_LENGTH}",
            )


def short_tags(attributes: dict[str, Any] | None) -> bool:
    """`_check_tag_attributes` passes (the quick way: most attributes hold neither)."""
    if attributes is None:
        return True
    unit = attributes.get("unit_of_measurement")
    device_class = attributes.get("device_class")
    return (type(unit) is not str or len(unit) <= MAX_TAG_LENGTH) and (
        type(device_class) is not str or len(device_class) <= MAX_TAG_LENGTH
    )


def _text(value: object, field: str, max_length: int) -> str:
    if not isinstance(value, str):
        if value is None:
            raise ValidationError(field, "is required", "string")
        raise ValidationError(field, f"has type {_type_name(value)}", "string")
    if not value.strip():
        raise ValidationError(field, "is empty", "non-empty string")
    if len(value) > max_length:
        raise ValidationError(field, f"is {len(value)} characters long", f"at most {max_length}")
    return value


def check_entity_id(value: object, field: str = "data.entity_id") -> str:
    """An entity id of the form ``domain.object_id``."""
    entity_id = _text(value, field, MAX_ENTITY_ID_LENGTH)
    domain, dot, object_id = entity_id.partition(".")
    if not dot or not domain or not object_id or " " in entity_id:
        raise ValidationError(field, "is malformed", "'domain.object_id'")
    return entity_id


def _check_number(value: object, field: str, low: float, high: float) -> None:
    if value is None:
        return
    # The usual case first, without the isinstance calls: a JSON number in range (NaN
    # and infinities fail the comparison and get the full check below).
    if (type(value) is float or type(value) is int) and low <= value <= high:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(field, f"has type {_type_name(value)}", "number or null")
    if not math.isfinite(value) or not low <= value <= high:
        raise ValidationError(field, "is out of range", f"a number from {low} to {high}")


def _check_context(raw: object) -> None:
    context = _require_mapping(raw, "context")
    _optional_text(context, "instance_id", "context.instance_id", MAX_TAG_LENGTH)
    location = context.get("location")
    if location is not None:
        location = _require_mapping(location, "context.location")
        _check_number(location.get("latitude"), "context.location.latitude", -90, 90)
        _check_number(location.get("longitude"), "context.location.longitude", -180, 180)
        _check_number(location.get("elevation"), "context.location.elevation", -1e5, 1e5)
        _optional_text(location, "time_zone", "context.location.time_zone")
    weather = context.get("weather")
    if weather is not None:
        _require_mapping(weather, "context.weather")


def _in_range(value: object, low: float, high: float) -> bool:
    """`_check_number`'s usual case: none, or a plain float or int within the range."""
    return value is None or ((type(value) is float or type(value) is int) and low <= value <= high)


def usual_location(latitude: object, longitude: object, elevation: object) -> bool:
    """The quick check of a location's numbers: each none or a plain number in range."""
    return (
        _in_range(latitude, -90, 90)
        and _in_range(longitude, -180, 180)
        and _in_range(elevation, -1e5, 1e5)
    )


def plain_text(value: object, max_length: int) -> TypeGuard[str]:
    """`_text`'s accepted case, for an exact str."""
    return type(value) is str and 0 < len(value) <= max_length and not value.isspace()


def usual_names(event_type: object, entity_id: object) -> bool:
    """The quick check of the event type and the entity id: plain text, and where there is
    an entity id (always for a state change) the form ``domain.object_id`` without spaces."""
    if not plain_text(event_type, MAX_EVENT_TYPE_LENGTH):
        return False
    if event_type != "state_changed" and entity_id is None:
        return True
    if not plain_text(entity_id, MAX_ENTITY_ID_LENGTH) or " " in entity_id:
        return False
    domain, dot, object_id = entity_id.partition(".")
    return bool(dot and domain and object_id)


def _quick_check(envelope: dict[str, Any]) -> dict[str, Any] | None:
    """`check_envelope`'s answer for the usual envelope, or None to take the long way.

    Every test here is one of the long way's checks in a stricter form (exact types,
    plain dicts), so whatever it lets through the long way accepts with the same
    answer; anything else (every error included) goes the long way, which names it.
    """
    if not plain_text(envelope.get("event_id"), MAX_EVENT_ID_LENGTH):
        return None
    if "timestamp" not in envelope:
        return None
    try:
        timestamp = to_rfc3339(envelope["timestamp"], "timestamp")
    except ValidationError:
        return None
    source = envelope.get("source")
    correlation_id = envelope.get("correlation_id")
    if (source is not None and (type(source) is not str or len(source) > MAX_TAG_LENGTH)) or (
        correlation_id is not None and type(correlation_id) is not str
    ):
        return None
    data = envelope.get("data")
    if type(data) is not dict:
        return None
    if not usual_names(data.get("event_type"), data.get("entity_id")):
        return None
    state = data.get("state")
    old_state = data.get("old_state")
    if (state is not None and type(state) is not str) or (
        old_state is not None and type(old_state) is not str
    ):
        return None
    for key in ("attributes", "context", "data"):
        value = data.get(key)
        if value is not None and type(value) is not dict:
            return None
    if not short_tags(data.get("attributes")):
        return None
    context = envelope.get("context")
    if context is not None:
        if type(context) is not dict:
            return None
        instance_id = context.get("instance_id")
        if instance_id is not None and (
            type(instance_id) is not str or len(instance_id) > MAX_TAG_LENGTH
        ):
            return None
        location = context.get("location")
        if location is not None:
            if type(location) is not dict:
                return None
            time_zone = location.get("time_zone")
            if not (
                usual_location(
                    location.get("latitude"), location.get("longitude"), location.get("elevation")
                )
                and (time_zone is None or type(time_zone) is str)
            ):
                return None
        weather = context.get("weather")
        if weather is not None and type(weather) is not dict:
            return None
    checked = envelope.copy()
    checked["timestamp"] = timestamp
    return checked


def check_envelope(raw: object) -> dict[str, Any]:
    """Check one envelope; return it with ``timestamp`` normalized to RFC 3339 UTC.

    The result is a new top-level dict (nested values are shared with ``raw``).
    """
    if type(raw) is dict:
        checked = _quick_check(raw)
        if checked is not None:
            return checked
    return _check_fully(raw)


def _check_fully(raw: object) -> dict[str, Any]:
    """`check_envelope` the long way, which names the first problem it finds."""
    envelope = _require_mapping(raw, "event")
    _text(envelope.get("event_id"), "event_id", MAX_EVENT_ID_LENGTH)
    if "timestamp" not in envelope:
        raise ValidationError("timestamp", "is required", "RFC 3339 date-time")
    timestamp = to_rfc3339(envelope["timestamp"], "timestamp")
    _optional_text(envelope, "source", "source", MAX_TAG_LENGTH)
    _optional_text(envelope, "correlation_id", "correlation_id")
    data = _require_mapping(envelope.get("data"), "data")
    event_type = _text(data.get("event_type"), "data.event_type", MAX_EVENT_TYPE_LENGTH)
    if event_type == "state_changed" or data.get("entity_id") is not None:
        check_entity_id(data.get("entity_id"))
    _optional_text(data, "state", "data.state")
    _optional_text(data, "old_state", "data.old_state")
    for key in ("attributes", "context", "data"):
        if data.get(key) is not None:
            _require_mapping(data[key], f"data.{key}")
    if data.get("attributes") is not None:
        _check_tag_attributes(data["attributes"])
    if envelope.get("context") is not None:
        _check_context(envelope["context"])
    checked = dict(envelope)
    checked["timestamp"] = timestamp
    return checked
