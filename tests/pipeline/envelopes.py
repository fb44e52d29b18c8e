"""Helpers of the wire-format tests (test_envelope*.py): events, the envelope context and
Hypothesis strategies."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import settings
from hypothesis import strategies as st

from custom_components.ha_ingestor.pipeline.envelope import EncodedEvent, EnvelopeContext

# Deterministic property runs: the same examples every time, no example database.
PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, database=None)

ENVELOPE_KEYS = {"event_id", "timestamp", "source", "data", "context"}
UTC_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?Z$")

TIME_FIRED = datetime(2024, 3, 1, 12, 30, 15, 250000, tzinfo=UTC)
TIME_FIRED_TEXT = "2024-03-01T12:30:15.250000Z"

CONTEXT: EnvelopeContext = {
    "instance_id": "home-1",
    "location": {"latitude": 52.37, "longitude": 4.89, "elevation": 2.0, "time_zone": "UTC"},
    "weather": {
        "entity_id": "weather.home",
        "condition": "rainy",
        "temperature_c": 11.5,
        "humidity": 87,
        "pressure_hpa": 1008,
    },
}


def state_changed(
    entity_id: str = "sensor.temperature",
    new: str | None = "22.5",
    old: str | None = "22.4",
    attributes: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A raw state_changed event in the shape the listener hands over."""
    attrs = {"unit_of_measurement": "°C", "device_class": "temperature"}
    if attributes is not None:
        attrs = attributes
    raw: dict[str, Any] = {
        "event_type": "state_changed",
        "time_fired": TIME_FIRED,
        "data": {
            "entity_id": entity_id,
            "new_state": None
            if new is None
            else {"entity_id": entity_id, "state": new, "attributes": attrs},
            "old_state": None
            if old is None
            else {"entity_id": entity_id, "state": old, "attributes": {}},
        },
        "context": {"id": "ctx-1", "user_id": "user-1", "parent_id": None},
    }
    raw.update(extra)
    return raw


def custom_event(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "event_type": "call_service",
        "time_fired": TIME_FIRED,
        "data": {"domain": "light", "service": "turn_on", "service_data": {"brightness": 200}},
    }
    raw.update(overrides)
    return raw


def without(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k != key}


def decode(encoded: EncodedEvent) -> dict[str, Any]:
    envelope = orjson.loads(encoded.payload)
    assert isinstance(envelope, dict)
    return envelope


# Hypothesis strategies: values JSON can hold.
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
# Anything at all, including what JSON cannot hold.
WILD_SCALARS = (
    JSON_SCALARS
    | st.integers()
    | st.floats()
    | st.binary(max_size=8)
    | st.builds(object)
    | st.datetimes()
    | st.dates()
    | st.sets(st.integers(), max_size=3)
)
WILD_VALUES = st.recursive(
    WILD_SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=8) | st.integers() | st.none(), children, max_size=4),
    max_leaves=20,
)
