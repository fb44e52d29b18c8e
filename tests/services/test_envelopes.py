"""The envelope checks every received event goes through."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ha_ingestor_pipeline.envelope import ValidationError
from ha_ingestor_services.envelopes import check_envelope


def valid() -> dict[str, Any]:
    return {
        "event_id": "0b6f6a5e-1",
        "timestamp": "2026-11-26T10:00:00.5-05:00",
        "source": "ha_ingestor",
        "correlation_id": None,
        "data": {
            "event_type": "state_changed",
            "entity_id": "sensor.temperature",
            "state": "22.5",
            "attributes": {"unit_of_measurement": "°C"},
            "old_state": None,
            "context": {"id": "c", "user_id": None, "parent_id": None},
        },
        "context": {
            "instance_id": "home",
            "location": {"latitude": 52.1, "longitude": 4.3, "elevation": 2, "time_zone": "UTC"},
            "weather": {"condition": "rainy"},
        },
    }


def test_valid_envelope_is_returned_with_utc_timestamp() -> None:
    raw = valid()
    checked = check_envelope(raw)
    assert checked["timestamp"] == "2026-11-26T15:00:00.500000Z"
    assert checked["data"] is raw["data"]
    assert raw["timestamp"] == "2026-11-26T10:00:00.5-05:00"  # the input is left alone


def test_other_event_types_need_no_entity() -> None:
    raw = {
        "event_id": "x",
        "timestamp": "2026-11-26T10:00:00Z",
        "data": {"event_type": "call_service", "data": {"domain": "light"}},
    }
    assert check_envelope(raw)["data"]["event_type"] == "call_service"


def mutate(path: str, value: Any) -> dict[str, Any]:
    raw = valid()
    *parents, last = path.split(".")
    target = raw
    for key in parents:
        target = target[key]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "field", "expected"),
    [
        ("event_id", KeyError, "event_id", "string"),
        ("event_id", 12, "event_id", "string"),
        ("event_id", "  ", "event_id", "non-empty string"),
        ("event_id", "x" * 129, "event_id", "at most 128"),
        ("timestamp", KeyError, "timestamp", "RFC 3339 date-time"),
        ("timestamp", "2026-11-26T10:00:00", "timestamp", "RFC 3339 date-time with offset"),
        ("timestamp", 1700000000, "timestamp", "RFC 3339 date-time string"),
        ("source", 5, "source", "string or null"),
        ("data", KeyError, "data", "object"),
        ("data", [], "data", "object"),
        ("data.event_type", "", "data.event_type", "non-empty string"),
        ("data.entity_id", KeyError, "data.entity_id", "string"),
        ("data.entity_id", "sensor", "data.entity_id", "'domain.object_id'"),
        ("data.entity_id", "sensor. x", "data.entity_id", "'domain.object_id'"),
        ("data.state", 22.5, "data.state", "string or null"),
        ("data.attributes", "x", "data.attributes", "object"),
        ("context", "home", "context", "object"),
        ("context.location.latitude", 91, "context.location.latitude", "a number from -90 to 90"),
        ("context.location.longitude", "4", "context.location.longitude", "number or null"),
        ("context.location.elevation", True, "context.location.elevation", "number or null"),
        (
            "context.location.latitude",
            float("nan"),
            "context.location.latitude",
            "a number from -90 to 90",
        ),
        ("context.weather", [], "context.weather", "object"),
    ],
)
def test_each_broken_field_is_named(path: str, value: Any, field: str, expected: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check_envelope(mutate(path, value))
    assert caught.value.field == field
    assert caught.value.expected == expected


def test_not_an_object() -> None:
    with pytest.raises(ValidationError, match="event: has type list"):
        check_envelope([])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "event_id": json_values | st.text(min_size=1, max_size=40),
            "timestamp": json_values | st.just("2026-11-26T10:00:00Z"),
            "data": json_values
            | st.fixed_dictionaries(
                {"event_type": json_values | st.just("state_changed")},
                optional={"entity_id": json_values | st.just("a.b"), "state": json_values},
            ),
            "context": json_values,
        },
    )
    | json_values
)
def test_anything_either_passes_or_is_a_validation_error(raw: Any) -> None:
    error: ValidationError | None = None
    try:
        checked = check_envelope(raw)
    except ValidationError as err:
        error = err
    if error is None:
        assert checked["timestamp"].endswith("Z")
    else:
        assert error.field
        assert error.to_error()["code"] == "VALIDATION_ERROR"
