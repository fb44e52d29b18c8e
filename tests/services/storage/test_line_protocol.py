"""The fast line protocol writer says exactly what influxdb-client's `Point` says."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ha_ingestor_services.envelopes import check_envelope
from ha_ingestor_services.storage.backends.line_protocol import point_line, to_line
from ha_ingestor_services.storage.records import MAX_TIME_NS, MIN_TIME_NS, Record, to_record

from .conftest import envelope

# Every character Point escapes somewhere, and then some.
_tricky = st.text(st.sampled_from(list(',= "\\\n\t\r#x.é€😀')) | st.characters(), max_size=12)
_text = st.none() | _tricky
_number = (
    st.none()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.0, -0.0, 1.0, 1e16, 1e-7, 87.0, 2.5])
)

_records = st.builds(
    Record,
    event_id=_tricky.filter(bool),
    time_ns=st.integers(MIN_TIME_NS, MAX_TIME_NS),
    event_type=_tricky.filter(bool),
    entity_id=_text,
    domain=_text,
    device_class=_text,
    unit=_text,
    source=_text,
    instance_id=_text,
    state=_text,
    value=_number,
    old_state=_text,
    attributes=_tricky,
    event_data=_text,
    context_id=_text,
    weather_temp_c=_number,
    weather_humidity=_number,
    weather_condition=_text,
    weather_pressure_hpa=_number,
    processing_time_ms=_number,
)


@pytest.mark.filterwarnings("ignore:The measurement name:SyntaxWarning")
@settings(max_examples=200, deadline=None)
@given(_records)
def test_to_line_matches_point(record: Record) -> None:
    assert to_line(record) == point_line(record)


def test_a_typical_event() -> None:
    record = to_record(check_envelope(envelope("sensor.living,room=1", "21.0")))
    line = to_line(record)
    assert line == point_line(record)
    assert line.startswith("state_changed,device_class=temperature,domain=sensor,")
    assert "entity_id=sensor.living\\,room\\=1," in line
    assert ',state="21.0",value=21,' in line
    assert line.endswith(f" {record.time_ns}")
