"""Fuzzing the enrichment's event endpoints through the real app, forwarding to a real
receiver: malformed, oversized and mistyped bodies never get a 5xx (except the
deliberate 503 while storage is down), and every valid event of a batch is stored.

Hypothesis draws the bodies up front (deterministically); the test then sends them to
the running servers, which live on the test's event loop.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ha_ingestor_services.limits import Limits
from tests.pipeline.fault_server import FaultServer
from tests.services.auth_fuzz import fuzz_authorization
from tests.services.conftest import AUTH

from .conftest import OWM_KEY, StartEnrichment, WeatherAPI
from .helpers import HA_WEATHER, HOME

MAX_EVENTS = 20
JSON_AUTH = {**AUTH, "Content-Type": "application/json"}
MAX_BODY = 48 * 1024
_DELETE = object()

_text = st.text(st.characters(codec="utf-8"), max_size=12)
_json: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_text, children, max_size=3),
    max_leaves=8,
)

# A valid envelope, with what varies between real ones.
_valid = st.fixed_dictionaries(
    {
        "entity_id": st.sampled_from(
            ["sensor.temperature", "binary_sensor.door", "switch.kettle", "light.hall"]
        ),
        "state": st.none() | st.sampled_from(["on", "off", "22.5", "-3", "nan", "unknown", ""]),
        "attributes": st.dictionaries(_text, _json, max_size=3),
        "timestamp": st.sampled_from(
            ["2026-11-26T20:15:00Z", "2026-11-26T21:15:00.5+01:00", "2026-11-26T20:15:00.1z"]
        ),
        "location": st.sampled_from([HOME, None, {"latitude": -33.9, "longitude": 151.2}]),
        "weather": st.sampled_from([None, HA_WEATHER, {"condition": "unavailable"}]),
    }
)

_PATHS: list[tuple[str, ...]] = [
    ("event_id",),
    ("timestamp",),
    ("source",),
    ("correlation_id",),
    ("data",),
    ("data", "event_type"),
    ("data", "entity_id"),
    ("data", "state"),
    ("data", "old_state"),
    ("data", "attributes"),
    ("data", "context"),
    ("data", "data"),
    ("context",),
    ("context", "instance_id"),
    ("context", "location"),
    ("context", "location", "latitude"),
    ("context", "location", "longitude"),
    ("context", "weather"),
    ("context", "weather", "temperature_c"),
]
_mutation = st.tuples(
    st.sampled_from(_PATHS),
    st.just(_DELETE)
    | _json
    | st.sampled_from(["", " ", "x" * 300, "not.a date", "sensor", "1e999", 1e308, -91, 181]),
)
# An event: its fields, and the mutations that (probably) break it.
_event = st.tuples(_valid, st.lists(_mutation, max_size=3))


def _build(fields: dict[str, Any], event_id: str) -> dict[str, Any]:
    fields = copy.deepcopy(fields)  # sampled values are shared; mutations must not be
    context: dict[str, Any] = {"instance_id": "fuzz"}
    if fields["location"] is not None:
        context["location"] = fields["location"]
    if fields["weather"] is not None:
        context["weather"] = fields["weather"]
    return {
        "event_id": event_id,
        "timestamp": fields["timestamp"],
        "source": "ha_ingestor",
        "data": {
            "event_type": "state_changed",
            "entity_id": fields["entity_id"],
            "state": fields["state"],
            "attributes": fields["attributes"],
            "old_state": None,
            "context": {"id": "c", "user_id": None, "parent_id": None},
        },
        "context": context,
    }


def _mutate(event: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    target: Any = event
    for key in path[:-1]:
        if not isinstance(target, dict) or not isinstance(target.get(key), dict):
            target[key] = {} if isinstance(target, dict) else None
        target = target[key]
    if not isinstance(target, dict):
        return
    if value is _DELETE:
        target.pop(path[-1], None)
    else:
        target[path[-1]] = copy.deepcopy(value)


# What gets sent: ("batch" | "single", body bytes, ids of the events known to be valid,
# and whether the body is within the limits, so its valid events must be stored).
Case = tuple[str, bytes, list[str], bool]

_case = st.one_of(
    st.tuples(st.just("batch"), st.lists(_event, max_size=MAX_EVENTS + 4)),
    st.tuples(st.just("single"), st.lists(_event, min_size=1, max_size=1)),
    st.tuples(st.just("raw"), st.binary(max_size=64) | _json.map(orjson.dumps)),
    st.tuples(st.just("wrapped"), _json),  # {"events": <anything>}
    st.tuples(st.just("big"), st.integers(min_value=MAX_BODY, max_value=2 * MAX_BODY)),
)


def _cases(count: int) -> list[Any]:
    drawn: list[Any] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(_case)
    def collect(case: Any) -> None:
        drawn.append(case)

    collect()
    return drawn


def _materialize(drawn: list[Any]) -> list[Case]:
    ids = itertools.count()
    cases: list[Case] = []
    for kind, payload in drawn:
        if kind in ("batch", "single"):
            events, valid = [], []
            for fields, mutations in payload:
                event = _build(fields, f"fuzz-{next(ids)}")
                for path, value in mutations:
                    _mutate(event, path, value)
                if not mutations:
                    valid.append(event["event_id"])
                events.append(event)
            raw = orjson.dumps({"events": events} if kind == "batch" else events[0])
            within = len(raw) <= MAX_BODY and len(events) <= MAX_EVENTS
            cases.append((kind, raw, valid, within))
        elif kind == "raw":
            cases.append(("batch", payload, [], False))
        elif kind == "wrapped":
            cases.append(("batch", orjson.dumps({"events": payload}), [], False))
        else:  # a body over the size limit
            cases.append(("batch", b'{"events": ["' + b"x" * payload + b'"]}', [], False))
    return cases


def _check_error_body(body: dict[str, Any]) -> None:
    assert body["success"] is False
    assert isinstance(body["error"]["code"], str)
    assert isinstance(body["error"]["message"], str)


async def test_fuzz_event_endpoints(
    start_enrichment: StartEnrichment,
    storage: FaultServer,
    weather_api: WeatherAPI,
    client: aiohttp.ClientSession,
) -> None:
    enrichment = await start_enrichment(
        storage_urls=(storage.url,),
        weather_provider="openweathermap",
        openweathermap_api_key=OWM_KEY,
        openweathermap_url=weather_api.url,
        limits=Limits(max_body_bytes=MAX_BODY, max_batch_events=MAX_EVENTS),
    )
    cases = _materialize(_cases(250))
    seen: dict[int, int] = {}
    for kind, body, valid, within in cases:
        path = "/api/v1/events/batch" if kind == "batch" else "/api/v1/events"
        async with client.post(enrichment.url + path, data=body, headers=JSON_AUTH) as response:
            status = response.status
            answer = orjson.loads(await response.read())
        seen[status] = seen.get(status, 0) + 1
        assert status < 500, (body[:300], answer)
        if status != 200:
            _check_error_body(answer)
            assert not (valid and within), answer
            continue
        results = {result["event_id"]: result for result in answer["results"]}
        for event_id in valid:
            assert results[event_id]["status"] == "stored", (event_id, results[event_id], body)
        stored_here = [r["event_id"] for r in answer["results"] if r["status"] == "stored"]
        assert set(stored_here) <= set(storage.stored_ids)
    # Every valid event of every answered batch is in storage, enriched.
    sent_valid = {event_id for _, _, valid, within in cases if within for event_id in valid}
    assert sent_valid <= set(storage.stored_ids)
    assert all("processing" in event for event in storage.received)
    # The fuzz reaches every kind of answer, not just the first check.
    assert {200, 400, 413, 422} <= set(seen), seen


async def test_fuzz_while_storage_is_down(
    start_enrichment: StartEnrichment, storage: FaultServer, client: aiohttp.ClientSession
) -> None:
    """Only the deliberate 503 (with Retry-After) for batches that hold a valid event."""
    enrichment = await start_enrichment(
        storage_urls=(storage.url,),
        limits=Limits(max_body_bytes=MAX_BODY, max_batch_events=MAX_EVENTS),
    )
    await storage.refuse()
    for kind, body, valid, within in _materialize(_cases(80)):
        path = "/api/v1/events/batch" if kind == "batch" else "/api/v1/events"
        async with client.post(enrichment.url + path, data=body, headers=JSON_AUTH) as response:
            status = response.status
            answer = orjson.loads(await response.read())
            retry_after = response.headers.get("Retry-After")
        if status == 503:
            assert retry_after is not None
            assert answer["error"]["code"] == "SERVICE_UNAVAILABLE"
        else:
            assert status < 500, (body[:300], answer)
        if valid and within:
            assert status == 503, answer  # never "stored" while storage is down
        if status == 200:
            assert all(result["status"] == "rejected" for result in answer["results"])


async def test_fuzz_authorization_header(
    start_enrichment: StartEnrichment, storage: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    enrichment = await start_enrichment(storage_urls=(storage.url,))
    await fuzz_authorization(enrichment.url, caplog, 150)
