"""Our home_assistant layout against Home Assistant's own influxdb integration.

Runs Home Assistant's event-to-json conversion (its default settings) and ours on the
same generated states and compares the points: measurement, tags, fields, time, and the
line influxdb-client's `Point` writes of Home Assistant's point (what its API v2 sends).
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from influxdb_client import Point

from ha_ingestor_services.envelopes import check_envelope
from ha_ingestor_services.storage.backends.ha_layout import (
    NO_FIELDS,
    NO_STATE,
    HaPoint,
    ha_line,
    ha_point,
    ha_problem,
    one_line,
)
from ha_ingestor_services.storage.records import datetime_to_ns, to_record

from .conftest import envelope

influxdb = pytest.importorskip("homeassistant.components.influxdb")
core = pytest.importorskip("homeassistant.core")
# Older releases (2025.4 among them) keep line breaks and a field "time" as they are
# (InfluxDB refuses a field "time"); ours is the later behaviour, compared on that leg.
_SINGLE_LINE = hasattr(influxdb, "_single_line")

_words = st.sampled_from(
    ["12", "-3.5", " 7 ", "1_000", "nan", "inf", "1e400", "12.5 W", "v1.2.3", "abc", "", "a\nb"]
)
_texts = _words | st.text(max_size=8)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)
_names = st.sampled_from(
    ["unit_of_measurement", "device_class", "value", "state", "time", "time_", "x", "x_str"]
) | st.text(max_size=5)
_units = st.sampled_from(["°C", "W", "kWh", "%", "", "a b,c"]) | _json
_states = (
    st.sampled_from(
        [
            *("on", "off", "home", "not_home", "open", "closed", "locked", "unlocked"),
            *("above_horizon", "below_horizon", "unknown", "unavailable", ""),
        ]
    )
    | _texts
)


def _one_line_everywhere(state: str, attributes: dict[str, Any]) -> bool:
    texts = [state, *(value for value in attributes.values() if isinstance(value, str))]
    return "time" not in attributes and all(one_line(text) == text for text in texts)


@functools.cache
def _their_conversion() -> Any:
    """Home Assistant's event-to-json function for a configuration with no options."""
    return influxdb._generate_event_to_json(influxdb.CONFIG_SCHEMA({"influxdb": {}})["influxdb"])


def _both(
    entity_id: str, state: str, attributes: dict[str, Any], when: datetime
) -> tuple[dict[str, Any] | None, HaPoint | str]:
    """Home Assistant's point of the state change, and ours."""
    new_state = core.State(entity_id, state, attributes)
    event = core.Event(
        "state_changed",
        {"entity_id": entity_id, "old_state": None, "new_state": new_state},
        time_fired_timestamp=when.timestamp(),
    )
    theirs: dict[str, Any] | None = _their_conversion()(event)
    # What the integration sends: the same state, as JSON.
    ours_event = envelope(entity_id, state, event_id="e-1")
    ours_event["timestamp"] = orjson.dumps(event.time_fired, option=orjson.OPT_UTC_Z).decode()[1:-1]
    ours_event["data"]["attributes"] = orjson.loads(
        orjson.dumps(new_state.attributes, default=str, option=orjson.OPT_NON_STR_KEYS)
    )
    return theirs, ha_point(to_record(check_envelope(ours_event)))


def test_line_breaks_and_time_as_newer_releases_write_them() -> None:
    """On a release that keeps them (2025.4), the documented differences and no other."""
    attributes = {"unit_of_measurement": "°C\n", "note": "a\nb", "time": "07:00"}
    theirs, ours = _both("sensor.t", "x\r\ny", attributes, datetime(2025, 1, 1, tzinfo=UTC))
    assert theirs is not None
    assert isinstance(ours, HaPoint)
    expected = {
        key: one_line(value) if isinstance(value, str) else value
        for key, value in theirs["fields"].items()
    }
    if "time" in expected:
        expected["time_"] = expected.pop("time")
    assert (
        ours.fields
        == expected
        == {
            "state": "x y",
            "note_str": "a b",
            "time_str": "07:00",
            "time_": 700.0,
        }
    )
    assert ours.measurement == one_line(theirs["measurement"]) == "°C"


@settings(max_examples=400, deadline=None)
@given(
    entity_id=st.from_regex(r"\A[a-z][a-z0-9]{0,5}\.[a-z0-9]{1,8}\Z"),
    state=_states,
    attributes=st.dictionaries(_names, _json, max_size=6),
    unit=st.none() | _units,
    when=st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
)
def test_the_same_points_as_home_assistant(
    entity_id: str, state: str, attributes: dict[str, Any], unit: Any, when: datetime
) -> None:
    if unit is not None:
        attributes = {"unit_of_measurement": unit, **attributes}
    if not _SINGLE_LINE:
        assume(_one_line_everywhere(state, attributes))
    theirs, ours = _both(entity_id, state, attributes, when)
    if theirs is None:
        assert ours == NO_STATE
        return
    # Point (both clients) leaves out non-finite floats.
    fields = {
        key: value
        for key, value in theirs["fields"].items()
        if not isinstance(value, float) or math.isfinite(value)
    }
    if not fields:
        assert ours == NO_FIELDS
        return
    assert isinstance(ours, HaPoint)
    assert ours.measurement == str(theirs["measurement"])
    assert {"domain": ours.domain, "entity_id": ours.object_id} == theirs["tags"]
    assert ours.fields == fields
    assert ours.time_ns == datetime_to_ns(theirs["time"])
    if ha_problem(ours) is None:
        assert ha_line(ours) == Point.from_dict(theirs).to_line_protocol()
