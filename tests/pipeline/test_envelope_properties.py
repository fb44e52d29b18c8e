"""The wire formats, properties: EventValidator.encode and to_rfc3339 over generated input."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custom_components.ha_ingestor.pipeline.envelope import (
    PAYLOAD_TOO_LARGE,
    SOURCE,
    VALIDATION_ERROR,
    EncodedEvent,
    EventValidator,
    ValidationError,
    to_rfc3339,
)
from tests.pipeline.envelopes import (
    CONTEXT,
    ENVELOPE_KEYS,
    JSON_VALUES,
    PROPERTY,
    UTC_Z,
    WILD_SCALARS,
    WILD_VALUES,
    decode,
)

# ------------------------------------------------------------------- property: validator

OFFSETS = st.builds(
    timezone,
    st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23)),
)
AWARE_DATETIMES = st.datetimes(timezones=OFFSETS)
# A day inside datetime's range: these are turned to UTC while the test data is drawn,
# which overflows at year 1 with a positive offset (and at 9999 with a negative one).
IN_UTC_RANGE = st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30), timezones=OFFSETS)
TIMES = (
    AWARE_DATETIMES
    | st.datetimes()
    | AWARE_DATETIMES.map(datetime.isoformat)
    | IN_UTC_RANGE.map(lambda d: d.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z")
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
    | IN_UTC_RANGE.map(lambda d: d.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z")
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
