"""Points in the layout of Home Assistant's own ``influxdb`` integration (its defaults).

With ``influx_layout = "home_assistant"`` the InfluxDB backends write each state change
as Home Assistant's integration would, so dashboards and queries made on its data keep
working (docs/ARCHITECTURE.md, "Storage schema"):

- measurement: the ``unit_of_measurement`` attribute, else the entity id;
- tags: ``domain`` and ``entity_id`` (the object id, without the domain);
- fields: ``value`` (float) for a state that reads as a number, ``state`` (text) for
  one that does not, both for on/off-like states (``on`` is 1, ``off`` 0); then each
  attribute: as a float when it reads as one, else as text under ``<name>_str`` plus
  a float of its digits when it ends in a number like ``12.5 W``; a name already taken
  gets a ``_`` appended; the unit is left out when it is the measurement; a field
  ``time`` is renamed ``time_``; line breaks in texts become spaces; non-finite floats
  are left out;
- time: the event's own time, to the microsecond (no event-id digits).

Only ``state_changed`` events with a state map to it; `ha_point` says why any other
record is not written (see `SKIP_REASONS`). Written as influxdb-client's `Point` writes
the same point (the tests compare with Home Assistant's own conversion and `Point`).
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

import orjson

from ha_ingestor_services.storage.records import Record

from .line_protocol import (
    _ESCAPE_KEY,
    _ESCAPE_MEASUREMENT,
    _KEY_SPECIAL,
    _MEASUREMENT_SPECIAL,
    MAX_SERIES_KEY_BYTES,
    MAX_STRING_FIELD_BYTES,
    _float,
    _string,
    _tag,
)

STATE_CHANGED = "state_changed"
UNIT = "unit_of_measurement"
# Why a record is not written in this layout (counted in the backend's stats).
NOT_A_STATE_CHANGE = "not_state_changed"
NO_STATE = "no_state"  # unknown, unavailable, empty, or the entity was removed
NO_FIELDS = "no_fields"  # nothing left to write (a state like "nan", no attributes)
SKIP_REASONS = (NOT_A_STATE_CHANGE, NO_STATE, NO_FIELDS)

_NOT_WRITTEN = frozenset({"unknown", "unavailable", ""})
# Home Assistant's state_as_number: states that count as 1 and as 0.
_ONE = frozenset({"on", "locked", "above_horizon", "open", "home"})
_ZERO = frozenset({"off", "unlocked", "below_horizon", "closed", "not_home"})
# A text "ending in a number" (at most one dot in all), and what is not part of it.
_NUMBER_INSIDE = re.compile(r"[^.]*\d+\.?\d+[^.]*")
_NOT_DECIMAL = re.compile(r"[^\d.]+")


class HaPoint(NamedTuple):
    measurement: str
    domain: str
    object_id: str
    fields: dict[str, float | str]
    time_ns: int


def one_line(text: str) -> str:
    """Line breaks (any `str.splitlines` knows) as spaces; a final one is dropped."""
    return " ".join(text.splitlines())


def _as_float(value: Any) -> float | None:
    """``float(value)``, or None where Python cannot read it as one."""
    try:
        return float(value)
    except (ValueError, TypeError):
        return None


def ha_point(record: Record) -> HaPoint | str:
    """The record's point, or the reason (one of `SKIP_REASONS`) it has none."""
    if record.event_type != STATE_CHANGED or record.entity_id is None:
        return NOT_A_STATE_CHANGE
    state = record.state
    if state is None or state in _NOT_WRITTEN:
        return NO_STATE
    attributes: dict[str, Any] = orjson.loads(record.attributes)
    fields: dict[str, float | str] = {}
    number = _as_float(state)
    if number is None:
        fields["state"] = one_line(state)
        if state in _ONE:
            number = 1.0
        elif state in _ZERO:
            number = 0.0
    if number is not None:
        fields["value"] = number  # even NaN: it takes the name until the end
    unit = attributes.get(UNIT)
    unit_is_measurement = unit is not None and unit != ""
    measurement = unit if unit_is_measurement else record.entity_id
    measurement = one_line(measurement) if isinstance(measurement, str) else str(measurement)
    for name, value in attributes.items():
        if name == UNIT and unit_is_measurement:
            continue
        key = f"{name}_" if name in fields else name
        number = _as_float(value)
        if number is None:
            text = one_line(str(value))
            fields[f"{key}_str"] = text
            if _NUMBER_INSIDE.fullmatch(text):
                number = float(_NOT_DECIMAL.sub("", text))
        if number is not None:
            fields[key] = number
        kept = fields.get(key)
        if isinstance(kept, float) and not math.isfinite(kept):
            del fields[key]
    if "time" in fields:  # InfluxDB reserves "time"
        key = "time_"
        while key in fields:
            key += "_"
        fields[key] = fields.pop("time")
    value = fields.get("value")
    if isinstance(value, float) and not math.isfinite(value):
        del fields["value"]  # as `Point` leaves it out
    if not fields:
        return NO_FIELDS
    domain, _, object_id = record.entity_id.partition(".")
    return HaPoint(measurement, domain, object_id, fields, record.time_ns - record.time_ns % 1000)


def _key(name: str) -> str:
    return name.translate(_ESCAPE_KEY) if _KEY_SPECIAL.search(name) else name


def _measurement(point: HaPoint) -> str:
    name = point.measurement
    return name.translate(_ESCAPE_MEASUREMENT) if _MEASUREMENT_SPECIAL.search(name) else name


def ha_line(point: HaPoint) -> str:
    """The point's line protocol, as `Point.from_dict` of the same point writes it."""
    fields = "".join(
        _string(_key(name), value) if isinstance(value, str) else _float(_key(name), value)
        for name, value in sorted(point.fields.items())
    )
    tags = _tag("domain", point.domain) + _tag("entity_id", point.object_id)
    return f"{_measurement(point)}{tags} {fields[1:]} {point.time_ns}"


def ha_problem(point: HaPoint) -> str | None:
    """Why InfluxDB cannot keep ``point`` as it is, or None."""
    name = point.measurement
    if not name or name.startswith("#") or name.endswith("\\"):
        return f"measurement {name!r} cannot be written in line protocol"
    for tag in (point.domain, point.object_id):
        if not tag or tag.endswith("\\"):
            return f"tag value {tag!r} cannot be written in line protocol"
    for key, value in point.fields.items():
        if not key or key.endswith("\\"):
            return f"attribute field name {key!r} cannot be written in line protocol"
        if isinstance(value, str) and len(value.encode()) > MAX_STRING_FIELD_BYTES:
            return f"{key}: is over {MAX_STRING_FIELD_BYTES} bytes, InfluxDB's string limit"
    series = _measurement(point) + _tag("domain", point.domain) + _tag("entity_id", point.object_id)
    if len(series.encode()) > MAX_SERIES_KEY_BYTES:
        return "series key (measurement and tags) is over InfluxDB's 64 KiB limit"
    return None
