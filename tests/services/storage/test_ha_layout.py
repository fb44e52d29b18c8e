"""The home_assistant layout: the points of Home Assistant's own influxdb integration.

test_ha_layout_parity.py compares them with Home Assistant's own conversion.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ha_ingestor_services.envelopes import check_envelope
from ha_ingestor_services.storage.backends.ha_layout import (
    NO_FIELDS,
    NO_STATE,
    NOT_A_STATE_CHANGE,
    HaPoint,
    ha_line,
    ha_point,
    ha_problem,
)
from ha_ingestor_services.storage.records import datetime_to_ns, to_record

from .conftest import envelope

WHEN = datetime(2025, 3, 1, 12, 30, 45, 123456, tzinfo=UTC)


def point_of(
    entity_id: str, state: str | None, attributes: dict[str, Any], **kwargs: Any
) -> HaPoint | str:
    event = envelope(entity_id, state, when=WHEN, **kwargs)
    event["data"]["attributes"] = attributes
    return ha_point(to_record(check_envelope(event)))


def test_a_sensor_with_a_unit() -> None:
    point = point_of(
        "sensor.living_room",
        "21.5",
        {"unit_of_measurement": "°C", "device_class": "temperature", "friendly_name": "Room"},
    )
    assert point == HaPoint(
        "°C",
        "sensor",
        "living_room",
        {
            "value": 21.5,
            "device_class_str": "temperature",
            "friendly_name_str": "Room",
        },
        datetime_to_ns(WHEN),
    )
    assert isinstance(point, HaPoint)
    assert ha_line(point) == (
        "°C,domain=sensor,entity_id=living_room "
        'device_class_str="temperature",friendly_name_str="Room",value=21.5 '
        f"{datetime_to_ns(WHEN)}"
    )


def test_states_and_attributes() -> None:
    point = point_of(
        "binary_sensor.door",
        "on",
        {
            "power": "12.5 W",
            "value": 3,
            "state": "x",
            "time": 5,
            "flag": True,
            "nothing": None,
            "tags": ["a", 1],
            "hot": "inf",
            "unit_of_measurement": "",
            "note": "two\nlines",
        },
    )
    assert isinstance(point, HaPoint)
    assert point.measurement == "binary_sensor.door"
    assert point.fields == {
        "state": "on",
        "value": 1.0,
        "power_str": "12.5 W",
        "power": 12.5,
        "value_": 3.0,
        "state__str": "x",  # "state" is taken: "state_", not a number: "state__str"
        "time_": 5.0,
        "flag": 1.0,
        "nothing_str": "None",
        "tags_str": "['a', 1]",
        "unit_of_measurement_str": "",
        "note_str": "two lines",
    }
    assert point.time_ns % 1000 == 0


def test_what_is_not_written() -> None:
    for state in ("unknown", "unavailable", "", None):
        assert point_of("sensor.a", state, {}) == NO_STATE
    assert point_of("light.a", None, {}, event_type="call_service") == NOT_A_STATE_CHANGE
    assert point_of("sensor.a", "nan", {}) == NO_FIELDS


def test_problems() -> None:
    good = point_of("sensor.a", "1", {})
    assert isinstance(good, HaPoint)
    assert ha_problem(good) is None
    assert ha_problem(good._replace(measurement="#x")) is not None
    assert ha_problem(good._replace(fields={"": 1.0})) is not None
    assert ha_problem(good._replace(fields={"a": "x" * 70_000})) is not None
