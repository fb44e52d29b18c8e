"""The per-event fast paths answer exactly what the long ways answer.

`to_rfc3339` (pipeline core) recognizes text already in its answered form without
parsing it; `check_envelope` checks the usual envelope in one quick pass. Each is
compared here with the long way on generated input, including near
misses (other lengths, separators, fractions, zones, invalid dates), and its cache
stays bounded.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ha_ingestor_pipeline import envelope as envelope_module
from ha_ingestor_pipeline.envelope import ValidationError, to_rfc3339
from ha_ingestor_services import envelopes as envelopes_module
from ha_ingestor_services.envelopes import check_envelope

_parsed = envelope_module._to_rfc3339_parsed


def _outcome(function: object, *args: object) -> tuple[str, object]:
    try:
        return ("ok", function(*args))  # type: ignore[operator]
    except ValidationError as err:
        return ("error", (err.code, err.message, err.details()))
    except Exception as err:  # e.g. the long way's TypeError for a naive time: the same
        return ("exception", (type(err), str(err)))


_moments = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]
    ),
)


@st.composite
def _texts(draw: st.DrawFn) -> str:
    """Timestamps in and near the canonical form."""
    moment = draw(_moments)
    text = moment.isoformat()
    variant = draw(st.integers(0, 9))
    if variant == 0:
        text = text.replace("+00:00", "Z")
    elif variant == 1:
        text = moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    elif variant == 2:  # a fraction of zeros, which isoformat leaves out
        text = moment.astimezone(UTC).replace(microsecond=0).isoformat()[:19] + ".000000Z"
    elif variant == 3:  # lower-case z, space separator, comma fraction
        text = moment.astimezone(UTC).isoformat().replace("+00:00", "z")
        text = draw(st.sampled_from([text, text.replace("T", " "), text.replace(".", ",")]))
    elif variant == 4:  # one character changed somewhere
        canonical = moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
        index = draw(st.integers(0, len(canonical) - 1))
        char = draw(st.sampled_from(list("0123456789:-.TZz +٣")))
        text = canonical[:index] + char + canonical[index + 1 :]
    elif variant == 5:  # fewer fraction digits, or more
        canonical = moment.astimezone(UTC).replace(microsecond=0).isoformat()[:19]
        text = canonical + "." + draw(st.text("0123456789", min_size=1, max_size=9)) + "Z"
    elif variant == 6:
        text = draw(st.text(min_size=18, max_size=28))
    return text


@settings(max_examples=3000)
@given(_texts())
@example("2026-11-26T19:00:00Z")
@example("2026-11-26T19:00:00.123000Z")
@example("2026-11-26T19:00:00.000000Z")
@example("2026-02-30T19:00:00Z")
@example("2026-11-26T24:00:00Z")
@example("2026-11-26T19:00:60Z")
@example("2026-11-26 19:00:00Z")
@example("2026-11-26T19:00:00.12345٣Z")
@example("2026-11-26T19:00:00,123456Z")
@example("2026-11-26T19:00Z")
@example("0001-01-01T00:00:00Z")
@example("9999-12-31T23:59:59.999999Z")
def test_to_rfc3339_fast_path_answers_as_the_long_way(text: str) -> None:
    assert _outcome(to_rfc3339, text, "timestamp") == _outcome(_parsed, text, "timestamp")
    # Twice: the second time the seconds may come from the cache.
    assert _outcome(to_rfc3339, text, "timestamp") == _outcome(_parsed, text, "timestamp")


@given(_moments)
def test_to_rfc3339_datetimes_unchanged(moment: datetime) -> None:
    assert _outcome(to_rfc3339, moment, "t") == _outcome(_parsed, moment, "t")


def test_fast_path_caches_stay_bounded() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for second in range(10_000):
        text = (start + timedelta(seconds=second)).isoformat().replace("+00:00", "Z")
        assert to_rfc3339(text, "t") == text
    assert len(envelope_module._CANONICAL_SECONDS) <= envelope_module._CANONICAL_SECONDS_MAX


# -- check_envelope: the quick check against the long way ---------------------------

_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-200, 200)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["", " ", "\u2003", "x", "a.b", "a. b", ".b", "a.", "sensor.t", "on"])
    | st.text(max_size=6)
)
_values = st.recursive(
    _leaf,
    lambda children: st.lists(children, max_size=2)
    | st.dictionaries(st.text(max_size=4), children, max_size=2),
    max_leaves=6,
)


def _maybe(strategy: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return strategy | _values


def _valid() -> dict[str, Any]:
    return {
        "event_id": "0b6f6a5e-1",
        "timestamp": "2026-11-26T10:00:00.500000Z",
        "source": "ha_ingestor",
        "correlation_id": None,
        "data": {
            "event_type": "state_changed",
            "entity_id": "sensor.temperature",
            "state": "22.5",
            "attributes": {"unit_of_measurement": "°C"},
            "old_state": None,
            "context": {"id": "c", "user_id": None, "parent_id": None},
            "data": None,
        },
        "context": {
            "instance_id": "home",
            "location": {"latitude": 52.1, "longitude": 4.3, "elevation": 2, "time_zone": "UTC"},
            "weather": {"condition": "rainy"},
        },
    }


_PATHS = [
    "event_id",
    "timestamp",
    "source",
    "correlation_id",
    "data",
    "data.event_type",
    "data.entity_id",
    "data.state",
    "data.old_state",
    "data.attributes",
    "data.context",
    "data.data",
    "context",
    "context.instance_id",
    "context.location",
    "context.location.latitude",
    "context.location.longitude",
    "context.location.elevation",
    "context.location.time_zone",
    "context.weather",
]
_REMOVE = object()
_replacements = (
    _values
    | _texts()
    | st.just(_REMOVE)
    | st.sampled_from(["call_service", "x" * 128, "x" * 129, "sensor." + "t" * 248])
    | st.floats(-2e5, 2e5)
    | st.integers(-2 * 10**5, 2 * 10**5)
)


@st.composite
def _envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """A valid envelope with none, one or a few parts replaced or removed."""
    raw = _valid()
    for path in draw(st.lists(st.sampled_from(_PATHS), max_size=3)):
        *parents, last = path.split(".")
        target: Any = raw
        for key in parents:
            target = target.get(key) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            continue
        value = draw(_replacements)
        if value is _REMOVE:
            target.pop(last, None)
        else:
            target[last] = value
    return raw


@settings(max_examples=3000, deadline=None)
@given(_envelopes())
def test_check_envelope_quick_check_answers_as_the_long_way(raw: dict[str, object]) -> None:
    assert _outcome(check_envelope, raw) == _outcome(envelopes_module._check_fully, raw)
    quick = envelopes_module._quick_check(raw)
    if quick is not None:
        assert _outcome(envelopes_module._check_fully, raw) == ("ok", quick)


@pytest.mark.parametrize(
    "entity_id",
    ["sensor.t", "a.", ".b", "a. b", "a..b", "a", "", " ", "\u2003.x", "x" * 256, None, 1],
)
@pytest.mark.parametrize("event_type", ["state_changed", "call_service", "", " ", None])
def test_usual_names_pass_only_what_the_long_way_accepts(
    event_type: object, entity_id: object
) -> None:
    raw = _valid()
    raw["data"].update(event_type=event_type, entity_id=entity_id)
    if envelopes_module.usual_names(event_type, entity_id):
        assert _outcome(envelopes_module._check_fully, raw)[0] == "ok"
    else:
        assert envelopes_module._quick_check(raw) is None
