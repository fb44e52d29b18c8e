"""The usual batch body decoded straight into records (docs/ARCHITECTURE.md, "Typed decoding").

`decode_batch` reads a ``{"events": [...]}`` body with msgspec into typed structs and
builds each event's `Record` from them, without the dicts of a JSON parse, the checked
copy of each envelope, or the lookups of `to_record`. It answers exactly the records
`to_record(check_envelope(event))` gives, or None as soon as anything is not the usual
case: JSON msgspec refuses, a part of another type, an event `check_envelope`'s quick
check would not pass or `to_record` would refuse, an empty or over-long batch. None
sends the body the long way (``web.read_json``, ``check_envelope``, ``to_record``), which
answers each event by itself and names every problem. Each test here is one of the long
way's, in the same or a stricter form, and keys the structs do not name are skipped, as
the long way ignores them; tests/services/storage/test_batch_decode.py holds the two
together on generated input.
"""

from __future__ import annotations

from typing import Any, cast

import msgspec

from ha_ingestor_pipeline.envelope import ValidationError, to_rfc3339
from ha_ingestor_services.contract import DecodedBatch
from ha_ingestor_services.envelopes import (
    MAX_EVENT_ID_LENGTH,
    plain_text,
    short_tags,
    usual_location,
    usual_names,
)
from ha_ingestor_services.normalize import Normalized, normalize

from .records import Record, build_record


class _Normalized(msgspec.Struct):
    """The enrichment's ``normalized`` part, every key of its type (`_valid_normalized`)."""

    domain: str | None = None
    object_id: str | None = None
    value: float | None = None  # an int comes as a float, as `_number` makes it
    boolean: bool | None = None
    unit: str | None = None
    device_class: str | None = None


class _Processing(msgspec.Struct):
    processing_time_ms: Any = None


class _StateContext(msgspec.Struct):
    id: Any = None


class _Data(msgspec.Struct):
    event_type: Any = None
    entity_id: Any = None
    state: str | None = None
    old_state: str | None = None
    attributes: dict[str, Any] | None = None
    context: _StateContext | None = None
    data: dict[str, Any] | None = None


class _Location(msgspec.Struct):
    latitude: Any = None
    longitude: Any = None
    elevation: Any = None
    time_zone: str | None = None


class _Context(msgspec.Struct):
    instance_id: str | None = None
    location: _Location | None = None
    weather: dict[str, Any] | None = None


class _Envelope(msgspec.Struct):
    data: _Data
    event_id: Any = None
    timestamp: Any = None
    source: str | None = None
    correlation_id: str | None = None
    context: _Context | None = None
    normalized: _Normalized | None = None
    weather: dict[str, Any] | None = None
    processing: _Processing | None = None


class _Batch(msgspec.Struct):
    events: list[_Envelope]
    correlation_id: Any = None


_DECODER = msgspec.json.Decoder(_Batch)


def decode_batch(body: bytes, max_events: int) -> DecodedBatch | None:
    """The records of every event of ``body`` (see the module docstring), or None."""
    try:
        batch = _DECODER.decode(body)
    except msgspec.DecodeError:  # msgspec.ValidationError included
        return None
    if not 0 < len(batch.events) <= max_events:
        return None
    records: list[Any] = []
    try:
        for envelope in batch.events:
            record = _record(envelope)
            if record is None:
                return None
            records.append(record)
    except (ValidationError, OverflowError):
        # `to_record`'s refusals, which the long way names per event; an integer too large
        # for a float (the long way's JSON parse refuses it).
        return None
    return DecodedBatch(records, batch.correlation_id)


def _record(envelope: _Envelope) -> Record | None:
    """`to_record(check_envelope(envelope))`, or None where the quick check would fail."""
    event_id = envelope.event_id
    if not plain_text(event_id, MAX_EVENT_ID_LENGTH) or envelope.timestamp is None:
        return None
    timestamp = to_rfc3339(envelope.timestamp, "timestamp")  # raises as check_envelope does
    data, context = envelope.data, envelope.context
    entity_id, attributes = data.entity_id, data.attributes
    if not usual_names(data.event_type, entity_id) or not short_tags(attributes):
        return None
    if context is not None and context.location is not None:
        location = context.location
        if not usual_location(location.latitude, location.longitude, location.elevation):
            return None
    if envelope.normalized is None:  # straight from Home Assistant: normalized here
        normalized = normalize(
            {"data": {"entity_id": entity_id, "state": data.state, "attributes": attributes}}
        )
    else:  # every key of its type, as `_valid_normalized` asks
        normalized = cast("Normalized", msgspec.structs.asdict(envelope.normalized))
    weather = envelope.weather
    if weather is None:
        weather = context.weather if context is not None and context.weather is not None else {}
    state_context, processing = data.context, envelope.processing
    return build_record(
        event_id,
        timestamp,
        data.event_type,
        entity_id,
        normalized,
        envelope.source,
        context.instance_id if context is not None else None,
        data.state,
        data.old_state,
        attributes,
        data.data,
        state_context.id if state_context is not None else None,
        weather,
        processing.processing_time_ms if processing is not None else None,
    )
