"""Normalization of an envelope's state, shared by the enrichment and the storage.

The enrichment adds the result to each envelope (``normalized``); the storage computes
it itself for envelopes that came straight from Home Assistant (the integration sends
to storage directly while the enrichment is down), so both paths store the same thing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypedDict


class Normalized(TypedDict):
    domain: str | None
    object_id: str | None
    value: float | None  # the state as a number, when it is one
    boolean: bool | None  # on/off-like states, where the domain says what they mean
    unit: str | None
    device_class: str | None


# What a state means as a boolean, per domain. Only where the domain defines it:
# "on" of a sensor's text state means nothing in general.
_ON_OFF = {"on": True, "off": False}
BOOLEAN_STATES: dict[str, dict[str, bool]] = {
    **dict.fromkeys(
        (
            "automation",
            "binary_sensor",
            "fan",
            "humidifier",
            "input_boolean",
            "light",
            "remote",
            "schedule",
            "script",
            "siren",
            "switch",
        ),
        _ON_OFF,
    ),
    "cover": {"open": True, "closed": False},
    "valve": {"open": True, "closed": False},
    "lock": {"locked": True, "unlocked": False},
    "device_tracker": {"home": True, "not_home": False},
    "person": {"home": True, "not_home": False},
}


# What an ASCII character that starts a finite float() can be (float also reads
# whitespace-padded text). Text states ("on", "home") fail this check without paying
# for float()'s exception; non-ASCII starts (other digits, spaces) still go to float().
_NUMBER_START = frozenset("0123456789+-. \t\n\r\x0b\x0c")
_EMPTY: dict[str, Any] = {}  # read only: the default for missing mappings


def numeric_value(state: object) -> float | None:
    """A finite float from a state's text ("22.5", "-3", "1e3"), else None."""
    if not isinstance(state, str) or not state or len(state) > 64:
        return None
    if state[0] not in _NUMBER_START and state[0].isascii():
        return None
    try:
        value = float(state)
    except ValueError:
        return None
    # float() also reads "nan", "inf" and "1_000", which no sensor means as a number.
    if not math.isfinite(value) or "_" in state:
        return None
    return value


def _text_attribute(attributes: Mapping[str, Any], key: str) -> str | None:
    value = attributes.get(key)
    return value if isinstance(value, str) and value else None


def normalize(envelope: Mapping[str, Any]) -> Normalized:
    """Domain and object id, numeric value, boolean meaning, unit and device class."""
    data = envelope.get("data")
    # `type(...) is dict` first: isinstance against the Mapping ABC is slow per event.
    if type(data) is not dict and not isinstance(data, Mapping):
        data = _EMPTY
    entity_id = data.get("entity_id")
    domain: str | None = None
    object_id: str | None = None
    if isinstance(entity_id, str) and "." in entity_id:
        domain, _, object_id = entity_id.partition(".")
    state = data.get("state")
    attributes = data.get("attributes")
    if type(attributes) is not dict and not isinstance(attributes, Mapping):
        attributes = _EMPTY
    boolean: bool | None = None
    if domain is not None and isinstance(state, str):
        boolean = BOOLEAN_STATES.get(domain, _EMPTY).get(state)
    return {
        "domain": domain,
        "object_id": object_id,
        "value": numeric_value(state),
        "boolean": boolean,
        "unit": _text_attribute(attributes, "unit_of_measurement"),
        "device_class": _text_attribute(attributes, "device_class"),
    }
