"""Normalization shared by the enrichment and the storage."""

from __future__ import annotations

from typing import Any

import pytest

from ha_ingestor_services.normalize import normalize, numeric_value


def envelope(entity_id: Any, state: Any, attributes: Any = None) -> dict[str, Any]:
    return {"data": {"entity_id": entity_id, "state": state, "attributes": attributes or {}}}


@pytest.mark.parametrize(
    ("state", "value"),
    [
        ("22.5", 22.5),
        ("-3", -3.0),
        ("1e3", 1000.0),
        (" 7 ", 7.0),
        ("nan", None),
        ("inf", None),
        ("1_000", None),
        ("on", None),
        ("", None),
        (None, None),
        ("9" * 80, None),
    ],
)
def test_numeric_value(state: Any, value: float | None) -> None:
    assert numeric_value(state) == value


@pytest.mark.parametrize(
    ("entity_id", "state", "boolean"),
    [
        ("switch.kettle", "on", True),
        ("binary_sensor.door", "off", False),
        ("light.hall", "unavailable", None),
        ("cover.garage", "open", True),
        ("lock.front", "unlocked", False),
        ("person.anna", "not_home", False),
        ("sensor.mode", "on", None),  # a sensor's "on" means nothing in general
    ],
)
def test_boolean_only_where_the_domain_says(
    entity_id: str, state: str, boolean: bool | None
) -> None:
    assert normalize(envelope(entity_id, state))["boolean"] is boolean


def test_full_result() -> None:
    result = normalize(
        envelope(
            "sensor.outdoor_temp",
            "11.5",
            {"unit_of_measurement": "°C", "device_class": "temperature"},
        )
    )
    assert result == {
        "domain": "sensor",
        "object_id": "outdoor_temp",
        "value": 11.5,
        "boolean": None,
        "unit": "°C",
        "device_class": "temperature",
    }


def test_odd_shapes_give_nothing() -> None:
    assert (
        normalize({"data": "x"})
        == normalize({})
        == {
            "domain": None,
            "object_id": None,
            "value": None,
            "boolean": None,
            "unit": None,
            "device_class": None,
        }
    )
    assert normalize(envelope("sensor.x", "1", {"unit_of_measurement": 5}))["unit"] is None
