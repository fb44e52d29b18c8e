"""Fuzzing the storage endpoints through the real app, on SQLite and on a real influxd.

Malformed, oversized and mistyped bodies and query strings never get a 5xx, and every
valid event of a batch within the limits is stored (found again through the query API).
Hypothesis draws the cases up front, deterministically; they are then sent to servers
running on the test's own event loop.
"""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ha_ingestor_services.limits import Limits
from tests.services.auth_fuzz import fuzz_authorization
from tests.services.conftest import AUTH

from .conftest import StartStorage, get_events

MAX_EVENTS = 15
MAX_BODY = 64 * 1024
_GONE = object()

_any_text = st.text(max_size=16)
_json: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | _any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_any_text, inner, max_size=3),
    max_leaves=6,
)
# Text InfluxDB keeps as a tag or measurement: no leading '#', no trailing backslash
# (both are rejected on their own, see line_protocol.influx_problem).
_name = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20).filter(
    lambda text: text.strip() and not text.startswith("#") and not text.endswith("\\")
)
_object_id = _name.filter(lambda text: " " not in text)
_timestamp = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2035, 1, 1),
    timezones=st.sampled_from([UTC]),
)

_valid = st.fixed_dictionaries(
    {
        "domain": st.sampled_from(["sensor", "light", "binary_sensor", "x-y"]),
        "object_id": _object_id,
        "event_type": st.just("state_changed") | _name,
        "state": st.none() | _any_text | st.sampled_from(["on", "22.5", "-1e3", "nan"]),
        "attributes": st.dictionaries(_any_text, _json, max_size=3),
        "timestamp": _timestamp,
        "enriched": st.none()
        | st.dictionaries(st.sampled_from(["normalized", "weather", "processing"]), _json),
    }
)
_PATHS = [
    ("event_id",),
    ("timestamp",),
    ("source",),
    ("data",),
    ("data", "event_type"),
    ("data", "entity_id"),
    ("data", "state"),
    ("data", "attributes"),
    ("data", "context"),
    ("data", "data"),
    ("context",),
    ("context", "weather"),
    ("context", "location", "latitude"),
]
_breakage = st.tuples(
    st.sampled_from(_PATHS),
    st.just(_GONE) | _json | st.sampled_from(["", "x" * 300, "1500-01-01T00:00:00Z", 1e308]),
)
_event = st.tuples(_valid, st.lists(_breakage, max_size=2))
_case = st.one_of(
    st.tuples(st.just("batch"), st.lists(_event, max_size=MAX_EVENTS + 3)),
    st.tuples(st.just("raw"), st.binary(max_size=40) | _json.map(orjson.dumps)),
    st.tuples(st.just("wrapped"), _json),
    st.tuples(st.just("big"), st.integers(MAX_BODY, 2 * MAX_BODY)),
)
_query = st.dictionaries(
    st.sampled_from(["start_time", "end_time", "entity_id", "event_type", "limit", "other"]),
    st.sampled_from(["now", "1h ago", "2 days ago", "0", "-1", "10001", "1e3", "abc"]) | _any_text,
    max_size=4,
)


def _draw(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    drawn: list[Any] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: Any) -> None:
        drawn.append(value)

    collect()
    return drawn


def _envelope(fields: dict[str, Any], number: int) -> dict[str, Any]:
    # Each event in a microsecond of its own: two events of one entity in the same
    # microsecond are one point in InfluxDB 1 time in 1000 (storage/records.py).
    moment = fields["timestamp"].replace(microsecond=number % 1_000_000)
    envelope: dict[str, Any] = {
        "event_id": f"fuzz-{number}",
        "timestamp": moment.isoformat(),
        "source": "ha_ingestor",
        "data": {
            "event_type": fields["event_type"],
            "entity_id": f"{fields['domain']}.{fields['object_id']}",
            "state": fields["state"],
            "old_state": None,
            "attributes": copy.deepcopy(fields["attributes"]),
            "context": {"id": "c", "user_id": None, "parent_id": None},
        },
        "context": {"instance_id": "fuzz", "weather": {"condition": "fog", "humidity": 99}},
    }
    envelope.update(copy.deepcopy(fields["enriched"] or {}))
    return envelope


def _break(envelope: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    target: Any = envelope
    for key in path[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    if value is _GONE:
        target.pop(path[-1], None)
    else:
        target[path[-1]] = copy.deepcopy(value)


# A body, the ids of its valid events and of its broken ones whose id is intact (both
# empty when the body is past the limits).
Body = tuple[bytes, list[str], list[str]]


def _bodies(drawn: list[Any]) -> list[Body]:
    ids = itertools.count()
    bodies: list[Body] = []
    for kind, payload in drawn:
        if kind == "batch":
            events, valid, broken = [], [], []
            for fields, breakages in payload:
                number = next(ids)
                event_id = f"fuzz-{number}"
                envelope = _envelope(fields, number)
                for path, value in breakages:
                    _break(envelope, path, value)
                if not breakages:
                    valid.append(event_id)
                elif envelope.get("event_id") == event_id:
                    broken.append(event_id)
                events.append(envelope)
            body = orjson.dumps({"events": events})
            within = len(body) <= MAX_BODY and 0 < len(events) <= MAX_EVENTS
            bodies.append((body, valid, broken) if within else (body, [], []))
        elif kind == "raw":
            bodies.append((payload, [], []))
        elif kind == "wrapped":
            bodies.append((orjson.dumps({"events": payload}), [], []))
        else:
            bodies.append((b'{"events": ["' + b"y" * payload + b'"]}', [], []))
    return bodies


async def _fuzz(
    url: str,
    client: aiohttp.ClientSession,
    bodies: list[Body],
    queries: list[dict[str, str]],
) -> None:
    expected: set[str] = set()
    rejected: set[str] = set()
    for body, valid, broken in bodies:
        async with client.post(
            f"{url}/api/v1/events/batch",
            data=body,
            headers={**AUTH, "Content-Type": "application/json"},
        ) as response:
            assert response.status < 500, await response.text()
            answer = await response.json()
        if valid:
            assert response.status == 200, answer
            results = {result["event_id"]: result for result in answer["results"]}
            for event_id in valid:
                assert results[event_id]["status"] == "stored", results[event_id]
            expected.update(valid)
        if (valid or broken) and response.status == 200:
            # Each broken event has its own outcome: stored (the breakage was harmless)
            # or rejected with a code and a message, and a rejected one is not stored.
            results = {result["event_id"]: result for result in answer["results"]}
            for event_id in broken:
                result = results[event_id]
                assert result["status"] in ("stored", "rejected"), result
                if result["status"] == "rejected":
                    assert result["error"]["code"], result
                    assert result["error"]["message"], result
                    rejected.add(event_id)
                else:
                    expected.add(event_id)
    for params in queries:
        async with client.get(f"{url}/api/v1/events", params=params, headers=AUTH) as response:
            assert response.status in (200, 400), (params, await response.text())
    status, answer = await get_events(
        client,
        url,
        start_time="1999-01-01T00:00:00Z",
        end_time="2036-01-01T00:00:00Z",
        limit=10_000,
    )
    assert status == 200
    stored = {event["event_id"] for event in answer["events"]}
    assert expected <= stored, expected - stored
    assert not rejected & stored, rejected & stored
    assert len(expected) > 20  # the cases did hold valid events
    assert rejected  # ... and broken ones


async def test_fuzz_sqlite(start_storage: StartStorage, client: aiohttp.ClientSession) -> None:
    url, _ = await start_storage(
        limits=Limits(max_body_bytes=MAX_BODY, max_batch_events=MAX_EVENTS)
    )
    await _fuzz(url, client, _bodies(_draw(_case, 120)), _draw(_query, 60))


async def test_fuzz_influxdb_v1(
    start_storage: StartStorage, client: aiohttp.ClientSession, influx_settings: dict[str, Any]
) -> None:
    url, _ = await start_storage(
        limits=Limits(max_body_bytes=MAX_BODY, max_batch_events=MAX_EVENTS), **influx_settings
    )
    await _fuzz(url, client, _bodies(_draw(_case, 120)), _draw(_query, 60))


async def test_fuzz_authorization_header(
    start_storage: StartStorage, caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = await start_storage()
    await fuzz_authorization(url, caplog, 150)
