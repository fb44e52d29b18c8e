"""The wire formats, validation: ValidationError, the required fields, time_fired."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from types import MappingProxyType

import orjson
import pytest

from custom_components.ha_ingestor.pipeline.envelope import (
    PAYLOAD_TOO_LARGE,
    VALIDATION_ERROR,
    EventValidator,
    ValidationError,
    to_rfc3339,
    utc_now_iso,
)
from tests.pipeline.envelopes import (
    TIME_FIRED,
    TIME_FIRED_TEXT,
    UTC_Z,
    custom_event,
    decode,
    state_changed,
    without,
)

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
