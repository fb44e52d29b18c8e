"""Envelopes as the integration sends them."""

from __future__ import annotations

import itertools
from typing import Any

HOME = {"latitude": 52.3731, "longitude": 4.8922, "elevation": 0, "time_zone": "Europe/Amsterdam"}
HA_WEATHER = {
    "entity_id": "weather.home",
    "condition": "rainy",
    "temperature_c": 11.5,
    "humidity": 87,
    "pressure_hpa": 1008,
}
_ids = itertools.count()


def envelope(
    *,
    entity_id: str = "sensor.temperature",
    state: str | None = "22.5",
    attributes: dict[str, Any] | None = None,
    location: dict[str, Any] | None = HOME,
    weather: dict[str, Any] | None = None,
    event_id: str | None = None,
    timestamp: str = "2026-11-26T20:15:00.123456+00:00",
) -> dict[str, Any]:
    context: dict[str, Any] = {"instance_id": "home-1"}
    if location is not None:
        context["location"] = location
    if weather is not None:
        context["weather"] = weather
    return {
        "event_id": event_id or f"evt-{next(_ids):08d}",
        "timestamp": timestamp,
        "source": "ha_ingestor",
        "correlation_id": "corr-1",
        "data": {
            "event_type": "state_changed",
            "entity_id": entity_id,
            "state": state,
            "attributes": attributes
            if attributes is not None
            else {"unit_of_measurement": "°C", "device_class": "temperature"},
            "old_state": "22.4",
            "context": {"id": "ctx-1", "user_id": None, "parent_id": None},
        },
        "context": context,
    }


def batch(*envelopes: dict[str, Any]) -> dict[str, Any]:
    return {"events": list(envelopes)}
