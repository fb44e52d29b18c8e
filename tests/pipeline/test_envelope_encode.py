"""The wire formats, encoding: the envelope built from a raw event and its JSON bytes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson
import pytest

from custom_components.ha_ingestor.pipeline.envelope import (
    DEFAULT_MAX_EVENT_BYTES,
    PAYLOAD_TOO_LARGE,
    SOURCE,
    VALIDATION_ERROR,
    EncodedEvent,
    EventValidator,
    ValidationError,
    new_event_id,
)
from tests.pipeline.envelopes import (
    CONTEXT,
    ENVELOPE_KEYS,
    TIME_FIRED_TEXT,
    custom_event,
    decode,
    state_changed,
    without,
)

# ------------------------------------------------------------------------------ envelope


def test_state_changed_is_flattened(validator: EventValidator) -> None:
    envelope = validator.build(state_changed())
    assert set(envelope) == ENVELOPE_KEYS
    assert envelope["source"] == SOURCE == "ha_ingestor"
    assert envelope["timestamp"] == TIME_FIRED_TEXT
    assert envelope["context"] == CONTEXT
    assert envelope["data"] == {
        "event_type": "state_changed",
        "entity_id": "sensor.temperature",
        "state": "22.5",
        "attributes": {"unit_of_measurement": "°C", "device_class": "temperature"},
        "old_state": "22.4",
        "context": {"id": "ctx-1", "user_id": "user-1", "parent_id": None},
    }
    assert "data" not in envelope["data"]


def test_entity_removed_new_state_none(validator: EventValidator) -> None:
    envelope = validator.build(state_changed(new=None, old="on"))
    data = envelope["data"]
    assert data["entity_id"] == "sensor.temperature"
    assert data["state"] is None
    assert data["attributes"] == {}
    assert data["old_state"] == "on"


def test_new_entity_old_state_none(validator: EventValidator) -> None:
    envelope = validator.build(state_changed(new="on", old=None))
    data = envelope["data"]
    assert data["state"] == "on"
    assert data["old_state"] is None


def test_missing_state_keys_mean_none(validator: EventValidator) -> None:
    raw = state_changed()
    raw["data"] = {"entity_id": "light.kitchen"}  # neither new_state nor old_state
    data = validator.build(raw)["data"]
    assert (data["state"], data["old_state"], data["attributes"]) == (None, None, {})


def test_state_without_attributes_and_non_text_state(validator: EventValidator) -> None:
    raw = state_changed()
    raw["data"]["new_state"] = {"state": 21.5}
    raw["data"]["old_state"] = {"state": None}
    data = validator.build(raw)["data"]
    assert data["state"] == "21.5"
    assert data["attributes"] == {}
    assert data["old_state"] is None


def test_state_whose_text_fails_is_a_validation_error(validator: EventValidator) -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    raw = state_changed()
    raw["data"]["new_state"] = {"state": Unprintable(), "attributes": {}}
    with pytest.raises(ValidationError) as info:
        validator.encode(raw)
    assert info.value.field == "data.new_state.state"


def test_attributes_are_copied_not_shared(validator: EventValidator) -> None:
    raw = state_changed(attributes={"a": 1})
    envelope = validator.build(raw)
    envelope["data"]["attributes"]["b"] = 2
    assert raw["data"]["new_state"]["attributes"] == {"a": 1}


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (
            {"id": "c", "user_id": "u", "parent_id": "p", "extra": 1},
            {"id": "c", "user_id": "u", "parent_id": "p"},
        ),
        ({"id": "c"}, {"id": "c", "user_id": None, "parent_id": None}),
        (None, {"id": None, "user_id": None, "parent_id": None}),
        ("ctx", {"id": None, "user_id": None, "parent_id": None}),
    ],
)
def test_event_context(
    validator: EventValidator, context: object, expected: dict[str, Any]
) -> None:
    raw = state_changed(context=context)
    assert validator.build(raw)["data"]["context"] == expected
    raw = custom_event(context=context)
    assert validator.build(raw)["data"]["context"] == expected


def test_missing_event_context(validator: EventValidator) -> None:
    raw = without(state_changed(), "context")
    assert validator.build(raw)["data"]["context"] == {
        "id": None,
        "user_id": None,
        "parent_id": None,
    }


def test_other_events_keep_data_under_data(validator: EventValidator) -> None:
    raw = custom_event()
    envelope = validator.build(raw)
    assert envelope["data"] == {
        "event_type": "call_service",
        "context": {"id": None, "user_id": None, "parent_id": None},
        "data": {"domain": "light", "service": "turn_on", "service_data": {"brightness": 200}},
    }
    assert "state" not in envelope["data"]
    assert "attributes" not in envelope["data"]
    # A copy: later changes to the raw event do not leak into the envelope.
    raw["data"]["domain"] = "switch"
    assert envelope["data"]["data"]["domain"] == "light"


def test_other_events_lift_a_text_entity_id(validator: EventValidator) -> None:
    envelope = validator.build(custom_event(event_type="my_event", data={"entity_id": "light.a"}))
    assert envelope["data"]["entity_id"] == "light.a"
    assert envelope["data"]["data"] == {"entity_id": "light.a"}
    envelope = validator.build(custom_event(event_type="my_event", data={"entity_id": ["a", "b"]}))
    assert "entity_id" not in envelope["data"]
    assert envelope["data"]["data"] == {"entity_id": ["a", "b"]}


def test_state_changed_is_matched_exactly(validator: EventValidator) -> None:
    """Only "state_changed" is flattened; a look-alike type keeps its data as is."""
    raw = state_changed(event_type="state_changed_custom")
    envelope = validator.build(raw)
    assert envelope["data"]["data"]["new_state"]["state"] == "22.5"
    assert "state" not in envelope["data"]


def test_timestamp_is_the_event_time_never_now(validator: EventValidator) -> None:
    long_ago = datetime(2001, 9, 9, 1, 46, 40, tzinfo=UTC)
    envelope = decode(validator.encode(state_changed(time_fired=long_ago)))
    assert envelope["timestamp"] == "2001-09-09T01:46:40Z"
    envelope = decode(validator.encode(custom_event(time_fired="2001-09-09T03:46:40+02:00")))
    assert envelope["timestamp"] == "2001-09-09T01:46:40Z"


def test_event_id_is_a_random_uuid4(validator: EventValidator) -> None:
    ids = [validator.encode(state_changed()).event_id for _ in range(500)]
    assert len(set(ids)) == len(ids)
    for event_id in ids[:50]:
        parsed = uuid.UUID(event_id)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == event_id  # canonical lower-case text


def test_new_event_id() -> None:
    ids = {new_event_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(uuid.UUID(i).version == 4 for i in ids)


def test_given_event_id_is_kept(validator: EventValidator) -> None:
    fixed = "7b0b1f36-2a39-4a5c-9a44-2d8d2bc5f3c1"
    encoded = validator.encode(state_changed(), event_id=fixed)
    assert encoded.event_id == fixed
    assert decode(encoded)["event_id"] == fixed
    assert validator.build(state_changed(), event_id=fixed)["event_id"] == fixed


def test_envelope_context_defaults_to_empty() -> None:
    envelope = decode(EventValidator().encode(state_changed()))
    assert envelope["context"] == {}
    assert EventValidator().max_event_bytes == DEFAULT_MAX_EVENT_BYTES


def test_no_correlation_id_in_a_single_envelope(validator: EventValidator) -> None:
    assert "correlation_id" not in decode(validator.encode(state_changed()))


# -------------------------------------------------------------------------------- encode


def test_encode_round_trips_with_orjson(validator: EventValidator) -> None:
    raw = state_changed()
    built = validator.build(raw, event_id="00000000-0000-4000-8000-000000000000")
    encoded = validator.encode(raw, event_id="00000000-0000-4000-8000-000000000000")
    assert isinstance(encoded, EncodedEvent)
    assert isinstance(encoded.payload, bytes)
    assert orjson.loads(encoded.payload) == built
    assert encoded.event_id == built["event_id"]


def test_encoded_event_is_frozen() -> None:
    encoded = EncodedEvent("id", b"{}")
    with pytest.raises(AttributeError):
        encoded.event_id = "other"  # type: ignore[misc]


def test_encode_serializes_common_python_values(validator: EventValidator) -> None:
    when = datetime(2024, 3, 1, 12, tzinfo=UTC)
    attributes = {
        "when": when,
        "tuple": (1, 2),
        "nested": {"list": [1.5, None, True]},
        "set": {3},
        "nan": float("nan"),
    }
    envelope = decode(validator.encode(state_changed(attributes=attributes)))
    attrs = envelope["data"]["attributes"]
    assert attrs["when"] == "2024-03-01T12:00:00+00:00"
    assert attrs["tuple"] == [1, 2]
    assert attrs["nested"] == {"list": [1.5, None, True]}
    assert attrs["set"] == "{3}"  # not JSON: falls back to its text
    assert attrs["nan"] is None  # NaN is not JSON: null


def test_encode_falls_back_to_text_for_unknown_objects(validator: EventValidator) -> None:
    class Thing:
        def __str__(self) -> str:
            return "a thing"

    envelope = decode(validator.encode(custom_event(data={"thing": Thing()})))
    assert envelope["data"]["data"] == {"thing": "a thing"}


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("cannot print")


def _self_referencing() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    return loop


def _deep(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    "data",
    [
        {"nested": {(1, 2): "tuple key"}},
        {"big": 2**70},
        {"bad": _Unprintable()},
        {"text": "\ud800"},  # a lone surrogate is not UTF-8
        {"loop": _self_referencing()},
        {"deep": _deep(300)},
    ],
    ids=["tuple-key", "int-over-64-bit", "unprintable", "surrogate", "loop", "deep"],
)
def test_unserializable_data_is_a_validation_error(
    validator: EventValidator, data: dict[Any, Any]
) -> None:
    with pytest.raises(ValidationError) as info:
        validator.encode(custom_event(data=data))
    err = info.value
    assert err.field == "data"
    assert err.code == VALIDATION_ERROR
    assert err.issue.startswith("cannot be serialized")
    assert err.expected == "JSON-safe values"


class _Key(StrEnum):
    MODE = "mode"


def test_attribute_keys_that_are_not_plain_strings_become_text(validator: EventValidator) -> None:
    # Home Assistant's own JSON does the same; orjson 3.11 refuses even str subclasses
    # as keys without being told.
    attributes = {1: "one", _Key.MODE: "auto", type("Sub", (str,), {})("sub"): True}
    encoded = validator.encode(state_changed(attributes=attributes))  # type: ignore[arg-type]
    envelope = orjson.loads(encoded.payload)
    assert envelope["data"]["attributes"] == {"1": "one", "mode": "auto", "sub": True}


def test_attribute_keys_json_cannot_hold_are_a_validation_error(
    validator: EventValidator,
) -> None:
    with pytest.raises(ValidationError, match="cannot be serialized"):
        validator.encode(state_changed(attributes={(1, 2): "x"}))  # type: ignore[dict-item]


def test_ten_megabyte_attribute_is_payload_too_large(validator: EventValidator) -> None:
    blob = "x" * (10 * 1024 * 1024)
    with pytest.raises(ValidationError) as info:
        validator.encode(state_changed(attributes={"blob": blob}))
    err = info.value
    assert err.code == PAYLOAD_TOO_LARGE == "payload_too_large"
    assert err.field == "event"
    assert err.expected == f"at most {DEFAULT_MAX_EVENT_BYTES} bytes"
    assert str(DEFAULT_MAX_EVENT_BYTES) in err.issue
    assert err.to_error()["code"] == "payload_too_large"
    # build alone does not check the size.
    assert validator.build(state_changed(attributes={"blob": blob}))["data"]["attributes"]


def test_size_limit_is_configurable_and_inclusive() -> None:
    fixed = "00000000-0000-4000-8000-000000000000"
    size = len(EventValidator().encode(state_changed(), event_id=fixed).payload)

    exact = EventValidator(max_event_bytes=size).encode(state_changed(), event_id=fixed)
    assert len(exact.payload) == size

    with pytest.raises(ValidationError) as info:
        EventValidator(max_event_bytes=size - 1).encode(state_changed(), event_id=fixed)
    assert info.value.code == PAYLOAD_TOO_LARGE
    assert f"is {size} bytes" in info.value.issue

    big = EventValidator(max_event_bytes=20 * 1024 * 1024)
    blob = "x" * (10 * 1024 * 1024)
    envelope = decode(big.encode(state_changed(attributes={"blob": blob})))
    assert envelope["data"]["attributes"]["blob"] == blob
