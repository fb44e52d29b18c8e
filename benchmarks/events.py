"""Realistic raw Home Assistant events (~1 KB state_changed) for the benchmarks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

_BASE = datetime(2026, 11, 26, 19, 0, tzinfo=UTC)
_ATTRIBUTES = {
    "state_class": "measurement",
    "unit_of_measurement": "°C",
    "device_class": "temperature",
    "friendly_name": "Living room temperature sensor",
}


def _state(entity_id: str, value: str, when: datetime, context: dict[str, Any]) -> dict[str, Any]:
    stamp = when.isoformat()
    return {
        "entity_id": entity_id,
        "state": value,
        "attributes": dict(_ATTRIBUTES),  # each state has its own, as in Home Assistant
        "last_changed": stamp,
        "last_reported": stamp,
        "last_updated": stamp,
        "context": context,
    }


def state_changed(index: int, padding: int = 0) -> dict[str, Any]:
    """The raw form the integration hands to the outbox for one state change.

    As Home Assistant serializes it, such an event is ~1.1 KB; its envelope is ~460 B
    (the envelope drops the repeated state bookkeeping). ``padding`` adds an attribute
    of that many characters, for envelopes of a given size.
    """
    entity_id = f"sensor.temperature_{index % 100}"
    when = _BASE + timedelta(microseconds=index * 1000)
    context = {"id": f"01JDXYZ{index:019d}", "user_id": None, "parent_id": None}
    return {
        "event_type": "state_changed",
        "time_fired": when,
        "context": context,
        "data": {
            "entity_id": entity_id,
            "old_state": _state(entity_id, f"{20 + index % 50 / 10:.1f}", when, context),
            "new_state": _state(entity_id, f"{20 + (index + 1) % 50 / 10:.1f}", when, context)
            | ({"attributes": {**_ATTRIBUTES, "note": "x" * padding}} if padding else {}),
        },
    }


def stream(count: int, start: int = 0) -> Iterator[dict[str, Any]]:
    for index in range(start, start + count):
        yield state_changed(index)
