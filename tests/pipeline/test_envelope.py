"""Tests for the wire formats: EventValidator, envelopes, batches, errors and results."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custom_components.ha_ingestor.pipeline.envelope import (
    DEFAULT_MAX_EVENT_BYTES,
    PAYLOAD_TOO_LARGE,
    SOURCE,
    VALIDATION_ERROR,
    EncodedEvent,
    EnvelopeContext,
    EventValidator,
    ValidationError,
    batch_body,
    error_response,
    new_event_id,
    parse_results,
    to_rfc3339,
    utc_now_iso,
)

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


@pytest.fixture
def validator() -> EventValidator:
    return EventValidator(envelope_context=CONTEXT)


def decode(encoded: EncodedEvent) -> dict[str, Any]:
    envelope = orjson.loads(encoded.payload)
    assert isinstance(envelope, dict)
    return envelope


# --------------------------------------------------------------------------- ValidationError


def test_validation_error_attributes_and_message() -> None:
    err = ValidationError("data.entity_id", "is missing", "string")
    assert isinstance(err, ValueError)
    assert err.field == "data.entity_id"
    assert err.issue == "is missing"
    assert err.expected == "string"
    assert err.code == VALIDATION_ERROR
    assert str(err) == "data.entity_id: is missing (expected string)"
    assert err.message == str(err)


def test_validation_error_without_expected_and_custom_code() -> None:
    err = ValidationError("event", "is too big", code=PAYLOAD_TOO_LARGE)
    assert err.expected is None
    assert err.code == PAYLOAD_TOO_LARGE
    assert str(err) == "event: is too big"
    assert err.details() == {"field": "event", "issue": "is too big"}
    assert err.to_error() == {
        "code": PAYLOAD_TOO_LARGE,
        "message": "event: is too big",
        "details": {"field": "event", "issue": "is too big"},
    }


def test_to_error_matches_the_design_error_details() -> None:
    """The contract's error: {"code", "message", "details": {"field", "issue", "expected"}}."""
    err = ValidationError("entity_id", "has type int", "string")
    error = err.to_error()
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == "VALIDATION_ERROR"
    assert error["message"] == "entity_id: has type int (expected string)"
    assert error["details"] == {"field": "entity_id", "issue": "has type int", "expected": "string"}
    # JSON-safe as it is.
    assert orjson.loads(orjson.dumps(error)) == error


# ------------------------------------------------------------------ required fields: validate


@pytest.mark.parametrize(
    ("raw", "field", "issue", "expected"),
    [
        # The event itself.
        (None, "event", "has type NoneType", "object"),
        ("state_changed", "event", "has type str", "object"),
        ([("event_type", "x")], "event", "has type list", "object"),
        (42, "event", "has type int", "object"),
        # event_type: missing, None, wrong type, empty, blank.
        (without(custom_event(), "event_type"), "event_type", "is required", "string"),
        (custom_event(event_type=None), "event_type", "is required", "string"),
        (custom_event(event_type=7), "event_type", "has type int", "string"),
        (custom_event(event_type=b"x"), "event_type", "has type bytes", "string"),
        (custom_event(event_type=["x"]), "event_type", "has type list", "string"),
        (custom_event(event_type=""), "event_type", "is empty", "non-empty string"),
        (custom_event(event_type="  \t"), "event_type", "is empty", "non-empty string"),
        # time_fired: missing, None, wrong type, empty, unparsable, naive.
        (without(custom_event(), "time_fired"), "time_fired", "is required", "RFC 3339 date-time"),
        (
            custom_event(time_fired=None),
            "time_fired",
            "has type NoneType",
            "RFC 3339 date-time string",
        ),
        (
            custom_event(time_fired=1_700_000_000),
            "time_fired",
            "has type int",
            "RFC 3339 date-time string",
        ),
        (
            custom_event(time_fired=1.7e9),
            "time_fired",
            "has type float",
            "RFC 3339 date-time string",
        ),
        (
            custom_event(time_fired=date(2024, 3, 1)),
            "time_fired",
            "has type date",
            "RFC 3339 date-time string",
        ),
        (custom_event(time_fired=""), "time_fired", "is not a valid timestamp", None),
        (custom_event(time_fired="yesterday"), "time_fired", "is not a valid timestamp", None),
        (
            custom_event(time_fired="2024-13-01T00:00:00Z"),
            "time_fired",
            "is not a valid timestamp",
            None,
        ),
        (
            custom_event(time_fired="2024-03-01T12:00:00"),
            "time_fired",
            "has no time zone",
            "RFC 3339 date-time with offset",
        ),
        (
            custom_event(time_fired=datetime(2024, 3, 1, 12)),
            "time_fired",
            "has no time zone",
            "RFC 3339 date-time with offset",
        ),
        # data: missing, None, wrong type.
        (without(custom_event(), "data"), "data", "is required", "object"),
        (custom_event(data=None), "data", "is required", "object"),
        (custom_event(data=[1, 2]), "data", "has type list", "object"),
        (custom_event(data="x"), "data", "has type str", "object"),
        (custom_event(data=0), "data", "has type int", "object"),
    ],
)
def test_validate_rejects(
    validator: EventValidator, raw: object, field: str, issue: str, expected: str | None
) -> None:
    with pytest.raises(ValidationError) as info:
        validator.validate(raw)
    err = info.value
    assert err.field == field
    assert err.issue == issue
    if expected is not None:
        assert err.expected == expected
    else:
        assert err.expected  # always says what was expected
    assert err.code == VALIDATION_ERROR
    assert err.to_error()["details"]["field"] == field
    # build and encode reject it the same way.
    with pytest.raises(ValidationError) as again:
        validator.encode(raw)  # type: ignore[arg-type]
    assert (again.value.field, again.value.issue) == (field, issue)


@pytest.mark.parametrize(
    "entity_id",
    [None, 5, "", "sensortemperature", ["sensor.x"]],
    ids=["missing", "int", "empty", "no-dot", "list"],
)
def test_state_changed_requires_an_entity_id(validator: EventValidator, entity_id: object) -> None:
    raw = state_changed()
    if entity_id is None:
        del raw["data"]["entity_id"]
    else:
        raw["data"]["entity_id"] = entity_id
    with pytest.raises(ValidationError) as info:
        validator.validate(raw)
    assert info.value.field == "data.entity_id"
    assert info.value.expected == "'domain.object_id'"


def test_empty_data_is_fine_for_other_events(validator: EventValidator) -> None:
    envelope = validator.build(custom_event(event_type="homeassistant_start", data={}))
    assert envelope["data"]["data"] == {}


def test_empty_data_is_not_fine_for_state_changed(validator: EventValidator) -> None:
    with pytest.raises(ValidationError, match=r"data\.entity_id"):
        validator.validate(state_changed() | {"data": {}})


def test_validate_accepts_any_mapping(validator: EventValidator) -> None:
    raw = MappingProxyType(custom_event(data=MappingProxyType({"a": 1})))
    validator.validate(raw)
    envelope = decode(validator.encode(raw))
    assert envelope["data"]["data"] == {"a": 1}


@pytest.mark.parametrize(
    ("new_state", "field"),
    [
        ("on", "data.new_state"),
        (["on"], "data.new_state"),
        ({"state": "on", "attributes": ["x"]}, "data.new_state.attributes"),
        ({"state": "on", "attributes": "x"}, "data.new_state.attributes"),
    ],
)
def test_malformed_new_state(validator: EventValidator, new_state: object, field: str) -> None:
    raw = state_changed()
    raw["data"]["new_state"] = new_state
    validator.validate(raw)  # validate checks the outline only
    with pytest.raises(ValidationError) as info:
        validator.build(raw)
    assert info.value.field == field


def test_malformed_old_state(validator: EventValidator) -> None:
    raw = state_changed()
    raw["data"]["old_state"] = 22.4
    with pytest.raises(ValidationError) as info:
        validator.encode(raw)
    assert info.value.field == "data.old_state"
    assert info.value.issue == "has type float"


# ----------------------------------------------------------------------------- time_fired


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (TIME_FIRED, TIME_FIRED_TEXT),
        (datetime(2024, 3, 1, tzinfo=UTC), "2024-03-01T00:00:00Z"),
        (datetime(2024, 3, 1, 2, tzinfo=timezone(timedelta(hours=2))), "2024-03-01T00:00:00Z"),
        (
            datetime(2024, 2, 29, 19, 15, tzinfo=timezone(timedelta(hours=-4, minutes=-45))),
            "2024-03-01T00:00:00Z",
        ),
        ("2024-03-01T00:00:00Z", "2024-03-01T00:00:00Z"),
        ("2024-03-01T00:00:00z", "2024-03-01T00:00:00Z"),
        ("2024-03-01T00:00:00+00:00", "2024-03-01T00:00:00Z"),
        ("2024-03-01T00:00:00-00:00", "2024-03-01T00:00:00Z"),
        ("2024-03-01T05:30:00+05:30", "2024-03-01T00:00:00Z"),
        ("2024-02-29T16:00:00-08:00", "2024-03-01T00:00:00Z"),
        ("2024-03-01T01:00:00.123456+01:00", "2024-03-01T00:00:00.123456Z"),
        ("2024-03-01T01:00:00.5+01:00", "2024-03-01T00:00:00.500000Z"),
        ("2024-03-01 01:00:00+01:00", "2024-03-01T00:00:00Z"),  # RFC 3339 allows a space
        ("2023-12-31T23:30:00-01:00", "2024-01-01T00:30:00Z"),  # crosses the year
    ],
)
def test_to_rfc3339_normalizes_to_utc_z(value: object, expected: str) -> None:
    assert to_rfc3339(value, "time_fired") == expected
    assert UTC_Z.match(expected)


def test_aware_non_utc_datetime_keeps_its_instant() -> None:
    tz = timezone(timedelta(hours=9))
    moment = datetime(2024, 3, 1, 9, 0, 0, tzinfo=tz)
    text = to_rfc3339(moment, "t")
    assert datetime.fromisoformat(text) == moment


class _NoOffset(tzinfo):
    """A tzinfo that does not know its offset: the datetime is naive in effect."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


def test_tzinfo_without_offset_counts_as_naive() -> None:
    with pytest.raises(ValidationError) as info:
        to_rfc3339(datetime(2024, 3, 1, tzinfo=_NoOffset()), "time_fired")
    assert info.value.issue == "has no time zone"


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-2))),
    ],
)
def test_times_that_leave_the_calendar_in_utc_are_validation_errors(value: object) -> None:
    with pytest.raises(ValidationError) as info:
        to_rfc3339(value, "time_fired")
    assert info.value.field == "time_fired"


def test_to_rfc3339_uses_the_given_field_name() -> None:
    with pytest.raises(ValidationError) as info:
        to_rfc3339("nope", "payload.when")
    assert info.value.field == "payload.when"


def test_utc_now_iso_is_utc_z_now() -> None:
    before = datetime.now(UTC)
    text = utc_now_iso()
    after = datetime.now(UTC)
    assert text.endswith("Z")
    assert before <= datetime.fromisoformat(text) <= after


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


# ------------------------------------------------------------------- property: validator

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
OFFSETS = st.builds(
    timezone,
    st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23)),
)
AWARE_DATETIMES = st.datetimes(timezones=OFFSETS)
TIMES = (
    AWARE_DATETIMES
    | st.datetimes()
    | AWARE_DATETIMES.map(datetime.isoformat)
    | AWARE_DATETIMES.map(lambda d: d.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z")
    | st.text(max_size=30)
    | WILD_SCALARS
)
ENTITY_IDS = st.from_regex(r"[a-z][a-z0-9_]{0,10}\.[a-z0-9_]{1,16}", fullmatch=True)
STATES = st.none() | st.fixed_dictionaries(
    {"state": st.none() | st.text(max_size=20)},
    optional={
        "attributes": st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4) | WILD_VALUES
    },
)
STATE_CHANGED_DATA = st.fixed_dictionaries(
    {},
    optional={
        "entity_id": ENTITY_IDS | WILD_SCALARS,
        "new_state": STATES | WILD_VALUES,
        "old_state": STATES | WILD_VALUES,
    },
)
VALID_TIMES = (
    AWARE_DATETIMES
    | AWARE_DATETIMES.map(datetime.isoformat)
    | AWARE_DATETIMES.map(lambda d: d.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z")
)
EVENT_TYPES = st.sampled_from(["state_changed", "call_service", "automation_triggered"])
FIELDS = ("event_type", "time_fired", "data", "context")


@st.composite
def raw_events(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly well-formed events with at most a couple of fields broken or missing."""
    event_type = draw(EVENT_TYPES)
    if event_type == "state_changed":
        data: object = draw(STATE_CHANGED_DATA.map(lambda d: {"entity_id": "light.a", **d}))
    else:
        data = draw(st.dictionaries(st.text(max_size=8), JSON_VALUES | WILD_VALUES, max_size=4))
    raw: dict[str, Any] = {
        "event_type": event_type,
        "time_fired": draw(VALID_TIMES),
        "data": data,
        "context": draw(st.none() | st.dictionaries(st.text(max_size=8), JSON_VALUES)),
    }
    broken = draw(st.lists(st.sampled_from(FIELDS), max_size=2, unique=True))
    for name in broken:
        if draw(st.booleans()):
            del raw[name]
        else:
            raw[name] = draw(
                {
                    "event_type": st.sampled_from(["", " "]) | st.text(max_size=12),
                    "time_fired": TIMES,
                    "data": st.dictionaries(st.text(max_size=8), WILD_VALUES, max_size=4)
                    | WILD_VALUES,
                    "context": WILD_VALUES,
                }[name]
                | WILD_SCALARS
            )
    return raw


ANY_RAW = raw_events() | raw_events() | raw_events() | WILD_VALUES | st.builds(object)


@settings(PROPERTY, suppress_health_check=[HealthCheck.too_slow])
@given(raw=ANY_RAW)
def test_encode_returns_an_envelope_or_raises_validation_error(raw: object) -> None:
    validator = EventValidator(envelope_context=CONTEXT)
    # Anything but ValidationError escapes and fails the test.
    outcome: EncodedEvent | ValidationError
    try:
        outcome = validator.encode(raw)  # type: ignore[arg-type]
    except ValidationError as err:
        outcome = err
    if isinstance(outcome, ValidationError):
        assert outcome.field
        assert outcome.issue
        assert outcome.code in {VALIDATION_ERROR, PAYLOAD_TOO_LARGE}
        assert orjson.loads(orjson.dumps(outcome.to_error()))["code"] == outcome.code
        return
    encoded = outcome
    envelope = orjson.loads(encoded.payload)
    assert isinstance(envelope, dict)
    assert set(envelope) >= ENVELOPE_KEYS
    assert envelope["event_id"] == encoded.event_id
    assert uuid.UUID(envelope["event_id"]).version == 4
    assert UTC_Z.match(envelope["timestamp"])
    assert envelope["source"] == SOURCE
    assert envelope["context"] == CONTEXT
    assert isinstance(raw, Mapping)
    assert envelope["data"]["event_type"] == raw["event_type"]
    assert len(encoded.payload) <= validator.max_event_bytes


@PROPERTY
@given(
    time_fired=AWARE_DATETIMES,
    as_text=st.booleans(),
    entity_id=ENTITY_IDS,
    state=st.none() | st.text(),
    old_state=st.none() | st.text(),
    attributes=st.dictionaries(st.text(), JSON_VALUES, max_size=6),
    context_id=st.none() | st.text(max_size=26),
)
def test_valid_state_changed_is_preserved_exactly(
    time_fired: datetime,
    as_text: bool,
    entity_id: str,
    state: str | None,
    old_state: str | None,
    attributes: dict[str, Any],
    context_id: str | None,
) -> None:
    validator = EventValidator(envelope_context=CONTEXT, max_event_bytes=10 * 1024 * 1024)
    raw = {
        "event_type": "state_changed",
        "time_fired": time_fired.isoformat() if as_text else time_fired,
        "data": {
            "entity_id": entity_id,
            "new_state": None
            if state is None
            else {"entity_id": entity_id, "state": state, "attributes": attributes},
            "old_state": None
            if old_state is None
            else {"entity_id": entity_id, "state": old_state, "attributes": {}},
        },
        "context": {"id": context_id, "user_id": None, "parent_id": None},
    }
    try:
        expected_time = time_fired.astimezone(UTC)
    except OverflowError:  # leaves the calendar in UTC: rejected, checked elsewhere
        with pytest.raises(ValidationError):
            validator.encode(raw)
        return
    envelope = decode(validator.encode(raw))
    data = envelope["data"]
    assert data["event_type"] == "state_changed"
    assert data["entity_id"] == entity_id
    assert data["state"] == state
    assert data["attributes"] == (attributes if state is not None else {})
    assert data["old_state"] == old_state
    assert data["context"] == {"id": context_id, "user_id": None, "parent_id": None}
    assert datetime.fromisoformat(envelope["timestamp"]) == expected_time
    assert envelope["timestamp"].endswith("Z")


@PROPERTY
@given(time_fired=AWARE_DATETIMES)
def test_rfc3339_text_and_datetime_agree(time_fired: datetime) -> None:
    try:
        expected = time_fired.astimezone(UTC)
    except OverflowError:
        return
    from_datetime = to_rfc3339(time_fired, "t")
    from_text = to_rfc3339(time_fired.isoformat(), "t")
    assert from_datetime == from_text
    assert UTC_Z.match(from_text)
    assert datetime.fromisoformat(from_text) == expected


# --------------------------------------------------------------------------------- batches


def test_batch_body_joins_encoded_envelopes(validator: EventValidator) -> None:
    encoded = [validator.encode(state_changed(entity_id=f"sensor.s{i}")) for i in range(3)]
    body = batch_body([e.payload for e in encoded])
    parsed = orjson.loads(body)
    assert list(parsed) == ["events"]
    assert [e["event_id"] for e in parsed["events"]] == [e.event_id for e in encoded]
    assert [e["data"]["entity_id"] for e in parsed["events"]] == [
        "sensor.s0",
        "sensor.s1",
        "sensor.s2",
    ]
    assert parsed["events"] == [orjson.loads(e.payload) for e in encoded]


def test_batch_body_empty_and_single() -> None:
    assert batch_body([]) == b'{"events":[]}'
    assert orjson.loads(batch_body([])) == {"events": []}
    assert orjson.loads(batch_body([b'{"a":1}'])) == {"events": [{"a": 1}]}


@settings(PROPERTY, max_examples=100)
@given(st.lists(JSON_VALUES, max_size=8))
def test_batch_body_is_valid_json_for_any_payloads(values: list[Any]) -> None:
    body = batch_body([orjson.dumps(v) for v in values])
    assert orjson.loads(body) == {"events": values}


# ------------------------------------------------------------------------------ responses


def test_error_response_shape() -> None:
    err = ValidationError("entity_id", "has type int", "string")
    before = datetime.now(UTC)
    body = error_response(err.code, err.message, err.details(), correlation_id="corr-1")
    after = datetime.now(UTC)
    assert set(body) == {"success", "error", "timestamp", "correlation_id"}
    assert body["success"] is False
    assert body["error"] == {
        "code": "VALIDATION_ERROR",
        "message": "entity_id: has type int (expected string)",
        "details": {"field": "entity_id", "issue": "has type int", "expected": "string"},
    }
    assert body["correlation_id"] == "corr-1"
    assert body["timestamp"].endswith("Z")
    assert before <= datetime.fromisoformat(body["timestamp"]) <= after
    assert orjson.loads(orjson.dumps(body)) == body


def test_error_response_without_details_or_correlation() -> None:
    body = error_response("UNAUTHORIZED", "missing token")
    assert body["error"] == {"code": "UNAUTHORIZED", "message": "missing token"}
    assert body["correlation_id"] is None
    assert error_response("X", "y", {})["error"] == {"code": "X", "message": "y"}


def test_parse_results_well_formed() -> None:
    body = {
        "success": True,
        "results": [
            {"event_id": "a", "status": "stored"},
            {"event_id": "b", "status": "duplicate"},
            {
                "event_id": "c",
                "status": "rejected",
                "error": {
                    "code": "VALIDATION_ERROR",
                    "message": "entity_id: is missing",
                    "details": {"field": "entity_id", "issue": "is missing"},
                },
            },
        ],
    }
    assert parse_results(body) == {
        "a": {"event_id": "a", "status": "stored"},
        "b": {"event_id": "b", "status": "duplicate"},
        "c": {
            "event_id": "c",
            "status": "rejected",
            "error": {
                "code": "VALIDATION_ERROR",
                "message": "entity_id: is missing",
                "details": {"field": "entity_id", "issue": "is missing"},
            },
        },
    }


def test_parse_results_fills_in_a_partial_error() -> None:
    results = parse_results(
        {"results": [{"event_id": "a", "status": "rejected", "error": {"details": "x"}}]}
    )
    assert results == {
        "a": {
            "event_id": "a",
            "status": "rejected",
            "error": {"code": VALIDATION_ERROR, "message": ""},
        }
    }
    results = parse_results(
        {"results": [{"event_id": "a", "status": "rejected", "error": {"code": 413}}]}
    )
    assert results is not None
    assert results["a"]["error"] == {"code": "413", "message": ""}


def test_parse_results_ignores_an_error_that_is_not_an_object() -> None:
    results = parse_results({"results": [{"event_id": "a", "status": "rejected", "error": "x"}]})
    assert results == {"a": {"event_id": "a", "status": "rejected"}}


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "results",
        b'{"results": []}',
        {},
        {"success": True},
        {"results": None},
        {"results": {"event_id": "a", "status": "stored"}},
        {"results": "stored"},
    ],
)
def test_parse_results_missing(body: object) -> None:
    assert parse_results(body) is None


def test_parse_results_empty_list() -> None:
    assert parse_results({"results": []}) == {}


def test_parse_results_skips_malformed_and_unknown_entries() -> None:
    body = {
        "results": [
            None,
            "a",
            ["a", "stored"],
            {"status": "stored"},
            {"event_id": 1, "status": "stored"},
            {"event_id": None, "status": "stored"},
            {"event_id": "no-status"},
            {"event_id": "unknown", "status": "ok"},
            {"event_id": "upper", "status": "STORED"},
            {"event_id": "listy", "status": ["stored"]},
            {"event_id": "good", "status": "stored", "extra": 1},
        ]
    }
    assert parse_results(body) == {"good": {"event_id": "good", "status": "stored"}}


@settings(PROPERTY, max_examples=150)
@given(WILD_VALUES)
def test_parse_results_never_raises(body: object) -> None:
    parsed = parse_results({"results": body})
    if parsed is None:
        assert not isinstance(body, list)
        return
    for event_id, result in parsed.items():
        assert result["event_id"] == event_id
        assert result["status"] in {"stored", "duplicate", "rejected"}
