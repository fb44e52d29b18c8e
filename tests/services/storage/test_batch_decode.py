"""Typed decoding (storage/batch_decode.py) answers exactly the long way's records.

For every generated event (a valid envelope with parts replaced or removed, enriched or
not) `decode_batch` either gives the record `to_record(check_envelope(event))` gives, or
None, which sends the body the long way. The usual events, from the integration and from
the enrichment, must not need the long way.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from benchmarks.services import batches
from ha_ingestor_pipeline.envelope import ValidationError
from ha_ingestor_services.envelopes import check_envelope
from ha_ingestor_services.normalize import normalize
from ha_ingestor_services.storage.batch_decode import decode_batch
from ha_ingestor_services.storage.records import Record, to_record
from tests.services.test_fast_paths import _envelopes, _replacements, _values

MAX_EVENTS = 5000


def _long_way(event: object) -> Record | None:
    try:
        return to_record(check_envelope(event))
    except ValidationError:
        return None


def _body(events: list[Any], **extra: Any) -> bytes:
    try:
        return orjson.dumps({"events": events, **extra})
    except TypeError:  # text orjson cannot write (lone surrogates): not a body anyone sends
        assume(False)
        raise


def _enriched(event: dict[str, Any]) -> dict[str, Any]:
    """Shaped as the enrichment forwards it (enrichment/service.py: `enrich`)."""
    return {
        **event,
        "normalized": normalize(event),
        "weather": {"temperature_c": 11.5, "humidity": 87, "condition": "rainy"},
        "processing": {"processing_time_ms": 0.8, "processor_version": "0.1.0"},
    }


# Parts of the enrichment's, and the tags' limits (255 characters), beyond `_envelopes`.
_MORE_PATHS = [
    "normalized",
    "normalized.domain",
    "normalized.value",
    "normalized.boolean",
    "normalized.unit",
    "normalized.device_class",
    "weather",
    "weather.temperature_c",
    "weather.condition",
    "processing",
    "processing.processing_time_ms",
    "source",
    "context.instance_id",
    "data.attributes.unit_of_measurement",
    "data.attributes.device_class",
]
_more = _replacements | st.sampled_from(["x" * 255, "x" * 256, "sensor." + "t" * 249])


@st.composite
def _events(draw: st.DrawFn) -> dict[str, Any]:
    """`_envelopes`, enriched or not, with more parts replaced."""
    event = draw(_envelopes())
    if draw(st.booleans()):
        event = _enriched(event)
    for path in draw(st.lists(st.sampled_from(_MORE_PATHS), max_size=2)):
        *parents, last = path.split(".")
        target: Any = event
        for key in parents:
            target = target.get(key) if isinstance(target, dict) else None
        if isinstance(target, dict):
            target[last] = draw(_more)
    return event


@settings(max_examples=3000, deadline=None)
@given(_events())
def test_decoded_records_are_the_long_ways(event: dict[str, Any]) -> None:
    body = _body([event])
    decoded = decode_batch(body, MAX_EVENTS)
    if decoded is not None:
        (sent,) = orjson.loads(body)["events"]  # what the long way reads: the parsed body
        record = _long_way(sent)
        assert record is not None, "decoded an event the long way refuses"
        assert decoded.items == [record]


@settings(max_examples=300, deadline=None)
@given(st.lists(_events(), min_size=1, max_size=4), st.data())
def test_a_batch_decodes_only_when_every_event_does(
    events: list[dict[str, Any]], data: st.DataObject
) -> None:
    body = _body(events, correlation_id=data.draw(_values))
    decoded = decode_batch(body, MAX_EVENTS)
    alone = [decode_batch(_body([event]), MAX_EVENTS) for event in events]
    if any(each is None for each in alone):
        assert decoded is None
    else:
        assert decoded is not None
        assert decoded.items == [each.items[0] for each in alone if each is not None]
        assert decoded.correlation_id == orjson.loads(body)["correlation_id"]


@pytest.mark.parametrize("enriched", [False, True], ids=["from Home Assistant", "enriched"])
def test_the_usual_events_are_decoded(enriched: bool) -> None:
    """The integration's own envelopes (as benchmarks/ encodes them), enriched or not."""
    events = orjson.loads(batches(200, 0)[0])["events"]
    if enriched:
        events = [_enriched(check_envelope(event)) for event in events]
    decoded = decode_batch(orjson.dumps({"events": events}), MAX_EVENTS)
    assert decoded is not None
    assert decoded.items == [_long_way(event) for event in events]
    assert decoded.correlation_id is None


def _one(parts: str) -> bytes:
    return (
        '{"events": [{"event_id": "a", "timestamp": "2026-11-26T10:00:00Z", ' + parts + "}]}"
    ).encode()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{not json",
        b"[]",
        b'{"events": []}',
        b'{"events": {}}',
        b'{"events": [1]}',
        b'{"event": []}',
        b'{"events": [{"event_id": "a", "timestamp": "2026-11-26T10:00:00Z", "data": {}}]}',
        _one('"data": {"event_type": "e", "attributes": {"n": 1' + "0" * 30 + "}}"),
        _one(
            '"data": {"event_type": "e"}, "processing": {"processing_time_ms": 1' + "0" * 400 + "}"
        ),
    ],
    ids=[
        "empty",
        "not JSON",
        "not an object",
        "no events",
        "events not a list",
        "an event not an object",
        "no events key",
        "an event the long way refuses",
        "an integer JSON cannot keep",
        "an integer too large for a float",
    ],
)
def test_what_is_not_the_usual_case_goes_the_long_way(body: bytes) -> None:
    assert decode_batch(body, MAX_EVENTS) is None


def test_a_batch_over_the_limit_goes_the_long_way() -> None:
    """Which answers 413 for it (web.batch_events)."""
    body = batches(20, 0)[0]
    assert decode_batch(body, 20) is not None
    assert decode_batch(body, 19) is None
