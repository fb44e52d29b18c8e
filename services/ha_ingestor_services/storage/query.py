"""``GET /api/v1/events``: its query parameters, checked with voluptuous.

Times are RFC 3339 (``2025-01-31T12:00:00Z``) or relative to now: ``now``,
``30s ago``, ``15m ago``, ``1h ago``, ``2d ago``, ``1w ago`` (units may be spelled out:
``2 hours ago``), or Flux's ``-1h``. Without a range the last 24 hours are searched;
with only a start the range ends now; with only an end it starts 24 hours earlier.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import voluptuous as vol

from ha_ingestor_pipeline.envelope import (
    EVENTS_PATH,
    VALIDATION_ERROR,
    ValidationError,
    to_rfc3339,
)
from ha_ingestor_services.contract import RequestError
from ha_ingestor_services.envelopes import MAX_ENTITY_ID_LENGTH, MAX_EVENT_TYPE_LENGTH
from ha_ingestor_services.openapi import error_responses, json_content

from .backends.base import EventQuery
from .records import MAX_TIME_NS, MIN_TIME_NS, datetime_to_ns

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
DEFAULT_RANGE_NS = 24 * 3600 * 10**9

_UNITS_S = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86_400,
    "day": 86_400,
    "w": 604_800,
    "week": 604_800,
}
_RELATIVE = re.compile(r"^(\d{1,9}(?:\.\d{1,9})?)\s*([a-z]+?)s?\s+ago$")
_FLUX_STYLE = re.compile(r"^-(\d{1,9}(?:\.\d{1,9})?)([a-z]+?)s?$")  # "-1h", as in Flux


def parse_time(text: str, now_ns: int) -> int:
    """Nanoseconds since the epoch from RFC 3339 or a relative time; `vol.Invalid` if neither."""
    value = text.strip().lower()
    if value == "now":
        return now_ns
    match = _RELATIVE.match(value) or _FLUX_STYLE.match(value)
    if match:
        unit = _UNITS_S.get(match.group(2))
        if unit is None:
            raise vol.Invalid(f"unknown unit {match.group(2)!r} (use s, m, h, d or w)")
        return now_ns - int(float(match.group(1)) * unit * 10**9)
    try:
        moment = datetime.fromisoformat(to_rfc3339(text.strip(), "time"))
    except ValidationError as err:
        raise vol.Invalid(
            f"{err.issue}; expected RFC 3339 or a relative time like '1h ago'"
        ) from None
    return datetime_to_ns(moment)


def _text(max_length: int) -> vol.All:
    return vol.All(str, vol.Length(min=1, max=max_length))


_SCHEMA = vol.Schema(
    {
        vol.Optional("start_time"): str,
        vol.Optional("end_time"): str,
        vol.Optional("entity_id"): _text(MAX_ENTITY_ID_LENGTH),
        vol.Optional("event_type"): _text(MAX_EVENT_TYPE_LENGTH),
        vol.Optional("limit", default=str(DEFAULT_LIMIT)): vol.All(
            vol.Match(r"^\s*\d{1,9}\s*$", msg="not a whole number"),
            vol.Coerce(int),
            vol.Range(min=1, max=MAX_LIMIT),
        ),
    },
    extra=vol.PREVENT_EXTRA,
)


def _bad(field: str, issue: str, expected: str) -> RequestError:
    return RequestError(
        400,
        VALIDATION_ERROR,
        f"{field}: {issue} (expected {expected})",
        {"field": field, "issue": issue, "expected": expected},
    )


def _expected(field: str) -> str:
    return {
        "start_time": "RFC 3339 or a relative time like '1h ago'",
        "end_time": "RFC 3339 or a relative time like '1h ago'",
        "limit": f"a whole number from 1 to {MAX_LIMIT}",
        "entity_id": f"1 to {MAX_ENTITY_ID_LENGTH} characters",
        "event_type": f"1 to {MAX_EVENT_TYPE_LENGTH} characters",
    }.get(field, "one of start_time, end_time, entity_id, event_type, limit")


def parse_query(
    params: Mapping[str, str],
    repeated: Mapping[str, int],
    now_ns: Callable[[], int] = time.time_ns,
) -> EventQuery:
    """An `EventQuery` from the URL's parameters; `RequestError` 400 naming what is wrong."""
    for key, count in repeated.items():
        if count > 1:
            raise _bad(key, "is given more than once", "at most one value")
    try:
        checked: dict[str, Any] = _SCHEMA(dict(params))
    except vol.Invalid as err:
        field = str(err.path[0]) if err.path else "query"
        issue = "is not a known parameter" if "extra keys" in err.error_message else err.msg
        raise _bad(field, issue, _expected(field)) from None
    now = now_ns()
    times: dict[str, int] = {}
    for field in ("start_time", "end_time"):
        if field in checked:
            try:
                times[field] = parse_time(checked[field], now)
            except vol.Invalid as err:
                raise _bad(field, err.msg, _expected(field)) from None
            if not MIN_TIME_NS <= times[field] <= MAX_TIME_NS:
                raise _bad(field, "is out of range", "a time between the years 1678 and 2261")
    # Stored times carry event-id digits below the microsecond (see records.py): an end
    # time names its whole microsecond.
    end = min(MAX_TIME_NS, times.get("end_time", now) + 999)
    start = times.get("start_time", max(MIN_TIME_NS, end - DEFAULT_RANGE_NS))
    if start > end:
        raise _bad("start_time", "is after end_time", "start_time at or before end_time")
    return EventQuery(
        start_ns=start,
        end_ns=end,
        entity_id=checked.get("entity_id"),
        event_type=checked.get("event_type"),
        limit=checked["limit"],
    )


def _parameter(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def openapi_paths() -> dict[str, Any]:
    time_text = "RFC 3339, or relative: 'now', '30m ago', '1h ago', '2d ago', '1w ago', '-1h'"
    event = {
        "type": "object",
        "required": ["event_id", "timestamp", "event_type"],
        "properties": {
            "event_id": {"type": "string"},
            "timestamp": {"type": "string", "format": "date-time"},
            "event_type": {"type": "string"},
            **{
                key: {"type": ["string", "null"]}
                for key in (
                    "entity_id",
                    "domain",
                    "device_class",
                    "unit",
                    "source",
                    "instance_id",
                    "state",
                    "old_state",
                    "context_id",
                    "weather_condition",
                )
            },
            **{
                key: {"type": ["number", "null"]}
                for key in (
                    "value",
                    "weather_temp_c",
                    "weather_humidity",
                    "weather_pressure_hpa",
                    "processing_time_ms",
                )
            },
            "attributes": {"type": "object"},
            "event_data": {"type": "object"},
        },
    }
    return {
        EVENTS_PATH: {
            "get": {
                "summary": "Stored events in a time range, newest first",
                "description": (
                    "Answers a store in the ha_ingestor layout; with influx_layout "
                    "home_assistant it is refused with 400 (query InfluxDB itself)."
                ),
                "parameters": [
                    _parameter(
                        "start_time",
                        f"Earliest event time ({time_text}); default 24 h before end_time",
                        {"type": "string"},
                    ),
                    _parameter(
                        "end_time",
                        f"Latest event time ({time_text}); default now",
                        {"type": "string"},
                    ),
                    _parameter(
                        "entity_id",
                        "Only this entity",
                        {"type": "string", "minLength": 1, "maxLength": MAX_ENTITY_ID_LENGTH},
                    ),
                    _parameter(
                        "event_type",
                        "Only this event type",
                        {"type": "string", "minLength": 1, "maxLength": MAX_EVENT_TYPE_LENGTH},
                    ),
                    _parameter(
                        "limit",
                        f"Most events answered (default {DEFAULT_LIMIT})",
                        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "The events, newest first",
                        "content": json_content(
                            {
                                "type": "object",
                                "required": ["events"],
                                "properties": {"events": {"type": "array", "items": event}},
                            }
                        ),
                    },
                    **error_responses(400, 401, 403, 503),
                },
            }
        }
    }
