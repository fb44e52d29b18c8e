"""EventEncoder: Home Assistant events into envelopes, directly or through the validator.

The direct path for ``state_changed`` must give exactly the bytes `EventValidator`
gives for the same event (apart from the random event id), and must leave every odd
event to the validator's judgement.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

import orjson
import pytest
from homeassistant.core import Context, Event, State

from custom_components.ha_ingestor.listener import EventEncoder, RecordedChange
from custom_components.ha_ingestor.pipeline.envelope import (
    PAYLOAD_TOO_LARGE,
    STATE_CHANGED_NAMESPACE,
    VALIDATION_ERROR,
    EncodedEvent,
    EnvelopeContext,
    EventValidator,
    ValidationError,
    state_event_id,
)

CONTEXT: EnvelopeContext = {
    "instance_id": "abc123",
    "location": {"latitude": 52.5, "longitude": 13.4, "elevation": 34, "time_zone": "UTC"},
    "weather": {"entity_id": "weather.home", "condition": "rainy", "temperature_c": 11.5},
}
ATTRIBUTES = {"unit_of_measurement": "°C", "device_class": "temperature", "friendly_name": "T"}


def _encoder(**validator: Any) -> EventEncoder:
    encoder = EventEncoder(EventValidator(**validator))
    encoder.set_context(CONTEXT)
    return encoder


def _state_changed(
    new: State | None,
    old: State | None,
    *,
    entity_id: object = "sensor.t",
    timestamp: float | None = None,
    context: Context | None = None,
) -> Event[Any]:
    data = {"entity_id": entity_id, "old_state": old, "new_state": new}
    return Event("state_changed", data, time_fired_timestamp=timestamp, context=context)


def _without_id(encoded: EncodedEvent) -> bytes:
    assert encoded.payload.count(encoded.event_id.encode()) == 1
    return encoded.payload.replace(encoded.event_id.encode(), b"<id>")


def _generic(encoder: EventEncoder, event: Event[Any]) -> EncodedEvent:
    return encoder._encode_generic(event)


@pytest.mark.parametrize(
    ("new", "old", "timestamp", "context"),
    [
        (State("sensor.t", "22.5", ATTRIBUTES), State("sensor.t", "22.4", ATTRIBUTES), None, None),
        # A whole second: no fraction in the timestamp, in both paths.
        (State("sensor.t", "1", {}), None, 1_800_000_000.0, Context(user_id="u", parent_id="p")),
        (None, State("sensor.t", "gone", ATTRIBUTES), 1_800_000_000.123456, None),
        (
            State(
                "sensor.t",
                "on",
                {"when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "nested": {"a": [1, 2.5]}},
            ),
            None,
            None,
            None,
        ),
    ],
)
def test_direct_path_gives_the_validators_bytes(
    new: State | None, old: State | None, timestamp: float | None, context: Context | None
) -> None:
    encoder = _encoder()
    event = _state_changed(new, old, timestamp=timestamp, context=context)
    direct = encoder(event)
    assert _without_id(direct) == _without_id(_generic(encoder, event))
    envelope = orjson.loads(direct.payload)
    assert envelope["event_id"] == direct.event_id
    assert envelope["timestamp"].endswith("Z")
    assert envelope["context"] == CONTEXT
    assert envelope["data"]["state"] == (None if new is None else new.state)
    assert envelope["data"]["old_state"] == (None if old is None else old.state)


def test_a_state_changes_id_is_derived_from_it() -> None:
    """uuid5 over entity id, the new state's last_updated (as the envelope writes it) and
    the state: the same change always gets the same id, on either path."""
    encoder = _encoder()
    state = State("sensor.t", "1", last_updated=datetime(2026, 5, 1, 8, 0, 0, 5, tzinfo=UTC))
    event = _state_changed(state, None, timestamp=state.last_updated_timestamp)
    expected = str(
        uuid.uuid5(uuid.UUID(STATE_CHANGED_NAMESPACE), "sensor.t\n2026-05-01T08:00:00.000005Z\n1")
    )
    assert state_event_id("sensor.t", "2026-05-01T08:00:00.000005Z", "1") == expected
    assert {encoder(event).event_id for _ in range(3)} == {expected}
    assert _generic(encoder, event).event_id == expected
    assert orjson.loads(encoder(event).payload)["timestamp"] == "2026-05-01T08:00:00.000005Z"
    assert (
        str(
            uuid.uuid5(
                uuid.NAMESPACE_URL, "https://github.com/ha-ingestor/ha-ingestor/state_changed"
            )
        )
        == STATE_CHANGED_NAMESPACE
    )


def test_other_changes_and_events_get_other_ids() -> None:
    encoder = _encoder()
    when = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
    ids = {
        encoder(
            _state_changed(State(entity, value, last_updated=moment), None, entity_id=entity)
        ).event_id
        for entity, value, moment in [
            ("sensor.t", "1", when),
            ("sensor.t", "2", when),
            ("sensor.u", "1", when),
            ("sensor.t", "1", when + timedelta(microseconds=1)),
        ]
    }
    assert len(ids) == 4
    # A removal (no new state) and other event types: random ids.
    removal = _state_changed(None, State("sensor.t", "1"))
    assert len({encoder(removal).event_id for _ in range(10)}) == 10
    other = Event("call_service", {"domain": "light"})
    assert len({encoder(other).event_id for _ in range(10)}) == 10


def test_a_recorded_change_is_encoded_as_the_live_one() -> None:
    encoder = _encoder()
    old = State("sensor.t", "22.4", ATTRIBUTES)
    new = State("sensor.t", "22.5", ATTRIBUTES)
    live = orjson.loads(
        encoder(_state_changed(new, old, timestamp=new.last_updated_timestamp)).payload
    )
    change: RecordedChange = (
        "sensor.t",
        "22.5",
        orjson.dumps(ATTRIBUTES),
        new.last_updated_timestamp,
        "22.4",
    )
    recorded = orjson.loads(encoder(change).payload)
    # The recorder keeps no context: its ids are null; everything else is the same.
    assert recorded["data"].pop("context") == {"id": None, "user_id": None, "parent_id": None}
    live["data"].pop("context")
    assert recorded == live


@pytest.mark.parametrize("entity_id", [None, 5, "no_dot", ""])
def test_odd_entity_ids_are_judged_by_the_validator(entity_id: object) -> None:
    encoder = _encoder()
    with pytest.raises(ValidationError) as caught:
        encoder(_state_changed(State("sensor.t", "1"), None, entity_id=entity_id))
    assert caught.value.code == VALIDATION_ERROR
    assert caught.value.field == "data.entity_id"


def test_attributes_that_cannot_be_serialized_are_a_validation_error() -> None:
    encoder = _encoder()
    with pytest.raises(ValidationError) as caught:
        encoder(_state_changed(State("sensor.t", "1", {(1, 2): "tuple key"}), None))
    assert caught.value.field == "data"
    assert "cannot be serialized" in caught.value.issue


def test_attribute_keys_of_a_str_subclass_are_encoded_as_text() -> None:
    # Home Assistant's state attributes may use StrEnum keys; orjson 3.11 (the newest Home
    # Assistant's) refuses them unless told, which sent every such event to dead letters.
    class Key(StrEnum):
        MODE = "mode"

    encoded = _encoder()(_state_changed(State("climate.t", "heat", {Key.MODE: "auto"}), None))
    assert orjson.loads(encoded.payload)["data"]["attributes"] == {"mode": "auto"}


def test_the_size_limit_holds_on_the_direct_path() -> None:
    encoder = _encoder(max_event_bytes=1024)
    with pytest.raises(ValidationError) as caught:
        encoder(_state_changed(State("sensor.t", "1", {"big": "x" * 2000}), None))
    assert caught.value.code == PAYLOAD_TOO_LARGE
    assert len(encoder(_state_changed(State("sensor.t", "1"), None)).payload) <= 1024


def test_a_new_context_applies_to_the_next_event() -> None:
    encoder = _encoder()
    event = _state_changed(State("sensor.t", "1"), None)
    encoder.set_context({"instance_id": "other"})
    assert orjson.loads(encoder(event).payload)["context"] == {"instance_id": "other"}
    # Set on the validator directly (as the forward_event action's code could): noticed too.
    encoder.validator.envelope_context = {"instance_id": "third"}
    assert orjson.loads(encoder(event).payload)["context"] == {"instance_id": "third"}


class _EventInBerlin(Event[Any]):
    """An event whose time is not in UTC (the bus never makes one; the validator copes)."""

    @property
    def time_fired(self) -> datetime:  # type: ignore[override]
        return datetime(2026, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))


def test_a_time_not_in_utc_goes_through_the_validator() -> None:
    encoder = _encoder()
    data = {"entity_id": "sensor.t", "old_state": None, "new_state": State("sensor.t", "1")}
    envelope = orjson.loads(encoder(_EventInBerlin("state_changed", data)).payload)
    assert envelope["timestamp"] == "2026-06-01T10:00:00Z"


def test_other_event_types_keep_their_data() -> None:
    encoder = _encoder()
    event = Event("call_service", {"domain": "light", "service": "turn_on"})
    envelope = orjson.loads(encoder(event).payload)
    assert envelope["data"]["event_type"] == "call_service"
    assert envelope["data"]["data"] == {"domain": "light", "service": "turn_on"}
    assert envelope["context"] == CONTEXT
