"""The fast line protocol writer says exactly what influxdb-client's `Point` says."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ha_ingestor_services.envelopes import check_envelope
from ha_ingestor_services.storage.backends import line_protocol
from ha_ingestor_services.storage.backends.line_protocol import (
    influx_problem,
    line_or_problem,
    point_line,
    to_line,
)
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


@pytest.mark.filterwarnings("ignore:The measurement name:SyntaxWarning")
@settings(max_examples=200, deadline=None)
@given(_records, _tricky)
def test_line_or_problem_is_to_line_or_influx_problem(record: Record, other_id: str) -> None:
    problem = influx_problem(record)
    expected = (to_line(record), None) if problem is None else (None, problem)
    assert line_or_problem(record) == expected
    # A second event of the same series is written from the cached series part.
    again = record._replace(event_id=other_id or "x", time_ns=0)
    if problem is None and influx_problem(again) is None:
        assert line_or_problem(again) == (point_line(again), None)


def test_the_series_cache_is_bounded() -> None:
    record = to_record(check_envelope(envelope("sensor.a", "1")))
    for index in range(line_protocol.SERIES_CACHE_SIZE + 10):
        line, problem = line_or_problem(record._replace(entity_id=f"sensor.s{index}"))
        assert problem is None
        assert line == point_line(record._replace(entity_id=f"sensor.s{index}"))
        assert len(line_protocol._series) <= line_protocol.SERIES_CACHE_SIZE


def test_a_typical_event() -> None:
    record = to_record(check_envelope(envelope("sensor.living,room=1", "21.0")))
    line = to_line(record)
    assert line == point_line(record)
    assert line.startswith("state_changed,device_class=temperature,domain=sensor,")
    assert "entity_id=sensor.living\\,room\\=1," in line
    assert ',state="21.0",value=21,' in line
    assert line.endswith(f" {record.time_ns}")
