"""The HTTP views: health, stats and forwarding one event, behind Home Assistant's auth."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from homeassistant.setup import async_setup_component
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custom_components.ha_ingestor.const import (
    CONF_FALLBACK_TO_STORAGE,
    DOMAIN,
)
from custom_components.ha_ingestor.coordinator import build_snapshot
from custom_components.ha_ingestor.http import (
    FORWARD_URL,
    HEALTH_URL,
    MAX_FORWARD_BODY,
    STATS_URL,
    entry_health,
)
from tests.integration.common import make_entry, refuse, setup_entry, unload
from tests.pipeline.fault_server import EVENT_PATH, FaultServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from aiohttp.test_utils import TestClient
    from homeassistant.core import HomeAssistant
    from pytest_homeassistant_custom_component.common import MockConfigEntry, MockUser
    from pytest_homeassistant_custom_component.typing import ClientSessionGenerator


@pytest.fixture
async def entry(hass: HomeAssistant, storage_server: FaultServer) -> AsyncIterator[MockConfigEntry]:
    entry = await setup_entry(hass, make_entry(storage_server.url))
    yield entry
    await unload(hass, entry)


@pytest.fixture
async def client(hass: HomeAssistant, hass_client: ClientSessionGenerator) -> TestClient:
    assert await async_setup_component(hass, DOMAIN, {})  # registers the views
    return await hass_client()


@pytest.fixture
async def read_only_client(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    hass_read_only_access_token: str,
) -> TestClient:
    assert await async_setup_component(hass, DOMAIN, {})  # registers the views
    return await hass_client(hass_read_only_access_token)


def assert_error_body(body: dict[str, Any], code: str) -> None:
    """The contract's error shape."""
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert "timestamp" in body
    assert "correlation_id" in body


async def take_down(entry: MockConfigEntry, server: FaultServer, service: str) -> None:
    """Refuse connections and let two health checks see it (failures_to_down = 2)."""
    await refuse(server)
    registry = entry.runtime_data.runtime.registry
    await registry.check_service(service)
    await registry.check_service(service)
    assert not registry.is_available(service)


# -- auth --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"), [("get", HEALTH_URL), ("get", STATS_URL), ("post", FORWARD_URL)]
)
async def test_views_need_auth(
    hass_client_no_auth: ClientSessionGenerator,
    entry: MockConfigEntry,
    method: str,
    url: str,
) -> None:
    client = await hass_client_no_auth()
    response = await client.request(method, url, json={"event_type": "e"})
    assert response.status == 401


async def test_forward_is_for_admins_only(
    read_only_client: TestClient, entry: MockConfigEntry, storage_server: FaultServer
) -> None:
    response = await read_only_client.post(FORWARD_URL, json={"event_type": "e"})
    assert response.status == 403
    assert_error_body(await response.json(), "FORBIDDEN")
    assert storage_server.requests_to(EVENT_PATH) == []
    # Reading health and stats is fine for any signed-in user.
    assert (await read_only_client.get(HEALTH_URL)).status == 200
    assert (await read_only_client.get(STATS_URL)).status == 200


# -- health ------------------------------------------------------------------------------


async def test_health_healthy(client: TestClient, entry: MockConfigEntry) -> None:
    response = await client.get(HEALTH_URL)
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "healthy"
    health = body["entries"][entry.entry_id]
    assert health["title"] == entry.title
    assert health["status"] == "healthy"
    assert health["problems"] == []
    assert health["forwarder"] == {"state": "delivering", "paused": False}
    assert health["outbox"] == {
        "pending": 0,
        "oldest_pending_age_s": None,
        "dead_letters": 0,
        "dropped": 0,
    }
    storage = health["services"]["storage"]
    assert storage["status"] == "up"
    assert storage["circuit"] == "closed"
    assert storage["down_since"] is None
    assert [endpoint["breaker"] for endpoint in storage["endpoints"]] == ["closed"]


async def test_health_unhealthy_when_nothing_can_be_delivered(
    client: TestClient, entry: MockConfigEntry, storage_server: FaultServer
) -> None:
    await take_down(entry, storage_server, "storage")
    response = await client.get(HEALTH_URL)
    assert response.status == 503
    body = await response.json()
    assert body["status"] == "unhealthy"
    storage = body["entries"][entry.entry_id]["services"]["storage"]
    assert storage["status"] == "down"
    assert storage["down_since"] is not None
    assert storage["endpoints"][0]["available"] is False
    assert storage["endpoints"][0]["last_error"]


async def test_health_says_what_the_forwarder_waits_for(entry: MockConfigEntry) -> None:
    runtime = entry.runtime_data.runtime
    snapshot = replace(
        build_snapshot(runtime, time.time()),
        forwarder_state="waiting",
        problem_service="storage",
        problem_error="storage: HTTP 503: the database is away",
    )
    health = entry_health(runtime, snapshot)
    assert health["status"] == "unhealthy"
    assert health["problems"] == [
        "the forwarder is waiting for a service (storage: HTTP 503: the database is away)"
    ]


async def test_health_degraded_while_storage_takes_over(
    hass: HomeAssistant,
    client: TestClient,
    storage_server: FaultServer,
    enrichment_server: FaultServer,
) -> None:
    entry = await setup_entry(hass, make_entry(storage_server.url, enrichment_server.url))
    await take_down(entry, enrichment_server, "enrichment")
    response = await client.get(HEALTH_URL)
    assert response.status == 200
    health = (await response.json())["entries"][entry.entry_id]
    assert health["status"] == "degraded"
    assert "enrichment is down" in health["problems"]
    assert health["services"]["storage"]["status"] == "up"

    # Without the fallback nothing would be delivered.
    hass.config_entries.async_update_entry(entry, options={CONF_FALLBACK_TO_STORAGE: False})
    await hass.async_block_till_done()
    response = await client.get(HEALTH_URL)
    assert response.status == 503
    await unload(hass, entry)


async def test_health_paused_is_degraded(client: TestClient, entry: MockConfigEntry) -> None:
    entry.runtime_data.runtime.forwarder.pause()
    body = await (await client.get(HEALTH_URL)).json()
    assert body["status"] == "degraded"
    assert body["entries"][entry.entry_id]["problems"] == ["the forwarder is paused"]


async def test_health_refused_token_is_unhealthy(
    client: TestClient, entry: MockConfigEntry
) -> None:
    entry.runtime_data.runtime.forwarder._auth_failed.add("storage")
    response = await client.get(HEALTH_URL)
    assert response.status == 503
    health = (await response.json())["entries"][entry.entry_id]
    assert health["services"]["storage"]["auth_failed"] is True
    assert "storage refused the API token" in health["problems"]


async def test_health_backing_off_and_dropping_is_degraded(entry: MockConfigEntry) -> None:
    runtime = entry.runtime_data.runtime
    snapshot = replace(
        build_snapshot(runtime, time.time()), forwarder_state="backing_off", dropped=3
    )
    health = entry_health(runtime, snapshot)
    assert health["status"] == "degraded"
    assert health["problems"] == [
        "the forwarder is backing off after failed deliveries",
        "3 events were dropped at the outbox cap",
    ]


async def test_views_without_a_loaded_entry(
    hass: HomeAssistant, client: TestClient, entry: MockConfigEntry
) -> None:
    await unload(hass, entry)
    response = await client.get(HEALTH_URL)
    assert response.status == 503
    assert (await response.json())["status"] == "unhealthy"
    response = await client.get(STATS_URL)
    assert response.status == 503
    assert_error_body(await response.json(), "NOT_LOADED")
    response = await client.post(FORWARD_URL, json={"event_type": "e"})
    assert response.status == 503
    assert_error_body(await response.json(), "NOT_LOADED")

    # Naming an entry: 404 when there is none such, 503 when it is not loaded.
    for url in (HEALTH_URL, STATS_URL):
        response = await client.get(url, params={"entry_id": "nope"})
        assert response.status == 404
        assert_error_body(await response.json(), "ENTRY_NOT_FOUND")
        response = await client.get(url, params={"entry_id": entry.entry_id})
        assert response.status == 503
        assert_error_body(await response.json(), "ENTRY_NOT_LOADED")
    response = await client.post(FORWARD_URL, json={"event_type": "e", "config_entry_id": "nope"})
    assert response.status == 404


async def test_views_with_several_entries(
    hass: HomeAssistant,
    client: TestClient,
    storage_server: FaultServer,
    enrichment_server: FaultServer,
) -> None:
    first = await setup_entry(hass, make_entry(storage_server.url))
    second = await setup_entry(hass, make_entry(enrichment_server.url))
    body = await (await client.get(HEALTH_URL)).json()
    assert set(body["entries"]) == {first.entry_id, second.entry_id}
    body = await (await client.get(STATS_URL, params={"entry_id": second.entry_id})).json()
    assert set(body["entries"]) == {second.entry_id}

    response = await client.post(FORWARD_URL, json={"event_type": "e"})
    assert response.status == 400
    assert_error_body(await response.json(), "ENTRY_ID_REQUIRED")
    response = await client.post(
        FORWARD_URL, json={"event_type": "e", "config_entry_id": second.entry_id}
    )
    assert response.status == 200
    assert enrichment_server.stored_ids == [(await response.json())["results"][0]["event_id"]]
    await unload(hass, first, second)


# -- stats -------------------------------------------------------------------------------


async def test_stats(
    hass: HomeAssistant, client: TestClient, entry: MockConfigEntry, storage_server: FaultServer
) -> None:
    for value in range(3):
        hass.states.async_set("test.a", str(value))
    await hass.async_block_till_done()
    assert (await entry.runtime_data.runtime.forwarder.flush(10)).done

    response = await client.get(STATS_URL)
    assert response.status == 200
    body = await response.json()
    stats = body["entries"][entry.entry_id]
    assert stats["counters"]["delivered"] == 3
    assert stats["counters"]["delivered_storage"] == 3
    assert stats["rates"]["delivered_per_minute"] == 3.0
    assert stats["rates"]["success_rate"] == 100.0
    assert stats["latency_ms"]["samples"] == 3
    assert stats["latency_ms"]["p50"] is not None
    assert stats["latency_ms"]["p99"] >= stats["latency_ms"]["p50"]
    assert stats["last_delivery"] is not None
    assert stats["outbox"]["pending"] == 0
    assert stats["outbox"]["appended"] == 3
    assert stats["outbox"]["acked"] == 3
    assert stats["outbox"]["durability"] == "always"
    assert stats["forwarder"] == {"state": "delivering", "paused": False}
    assert stats["services"]["storage"]["requests"] >= 1
    assert stats["services"]["storage"]["outcomes"]["success"] >= 1


# -- forward -----------------------------------------------------------------------------


async def test_forward(
    client: TestClient,
    entry: MockConfigEntry,
    storage_server: FaultServer,
    hass_admin_user: MockUser,
) -> None:
    response = await client.post(
        FORWARD_URL,
        json={"event_type": "custom_event", "event_data": {"a": 1}, "entity_id": "sensor.x"},
    )
    assert response.status == 200
    body = await response.json()
    assert body["success"] is True
    assert body["metadata"] == {"service": "ha_ingestor", "route": "storage"}
    [result] = body["results"]
    assert result["status"] == "stored"
    assert storage_server.stored_ids == [result["event_id"]]
    envelope = storage_server.received[-1]
    assert envelope["correlation_id"] == body["correlation_id"]
    assert envelope["data"]["context"]["user_id"] == hass_admin_user.id


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b"{not json", 400, "MALFORMED_REQUEST", None),
        (b"", 400, "MALFORMED_REQUEST", None),
        (b"[1, 2]", 400, "MALFORMED_REQUEST", "body"),
        (b'"text"', 400, "MALFORMED_REQUEST", "body"),
        (b"{}", 422, "VALIDATION_ERROR", "event_type"),
        (b'{"event_type": 5, "extra": 1}', 422, "VALIDATION_ERROR", "extra"),
        (b'{"event_type": "e", "event_data": []}', 422, "VALIDATION_ERROR", "event_data"),
        (b'{"event_type": "e", "entity_id": "nope"}', 422, "VALIDATION_ERROR", "entity_id"),
        (b'{"event_type": "state_changed"}', 422, "VALIDATION_ERROR", "entity_id"),
        (b'{"event_type": "e", "config_entry_id": []}', 422, "VALIDATION_ERROR", "config_entry_id"),
    ],
)
async def test_forward_bad_input(
    client: TestClient,
    entry: MockConfigEntry,
    storage_server: FaultServer,
    body: bytes,
    status: int,
    code: str,
    field: str | None,
) -> None:
    response = await client.post(
        FORWARD_URL, data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == status
    answer = await response.json()
    assert_error_body(answer, code)
    if field is not None:
        assert answer["error"]["details"]["field"] == field
    assert storage_server.requests_to(EVENT_PATH) == []


async def test_forward_oversized(
    client: TestClient, entry: MockConfigEntry, storage_server: FaultServer
) -> None:
    # Announced by Content-Length.
    big = orjson.dumps({"event_type": "e", "event_data": {"blob": "x" * MAX_FORWARD_BODY}})
    response = await client.post(FORWARD_URL, data=big)
    assert response.status == 413
    assert_error_body(await response.json(), "payload_too_large")

    # Streamed without Content-Length.
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    response = await client.post(FORWARD_URL, data=chunks())
    assert response.status == 413

    # Under the body limit, but over the event limit once it is an envelope.
    event = orjson.dumps({"event_type": "e", "event_data": {"blob": "x" * 300_000}})
    response = await client.post(FORWARD_URL, data=event)
    assert response.status == 413
    answer = await response.json()
    assert_error_body(answer, "payload_too_large")
    assert answer["error"]["details"]["field"] == "event"
    assert re.fullmatch(
        r"The event is \d+ bytes, over the limit of 262144: send less data in event_data",
        answer["error"]["message"],
    )
    assert storage_server.requests_to(EVENT_PATH) == []


async def test_forward_receiver_answers(
    client: TestClient, entry: MockConfigEntry, storage_server: FaultServer
) -> None:
    # Retried (a person is waiting), then the last answer's Retry-After is passed on.
    storage_server.fail_next(2, 503, path=EVENT_PATH)
    storage_server.fail_next(1, 503, retry_after=7, path=EVENT_PATH)
    response = await client.post(FORWARD_URL, json={"event_type": "e"})
    assert response.status == 503
    assert response.headers["Retry-After"] == "7"
    assert len(storage_server.requests_to(EVENT_PATH)) == 3
    assert_error_body(await response.json(), "SERVICE_UNAVAILABLE")

    storage_server.fail_next(1, 422, path=EVENT_PATH)
    response = await client.post(FORWARD_URL, json={"event_type": "e"})
    assert response.status == 422
    assert_error_body(await response.json(), "HTTP_422")

    storage_server.token = "another-token"
    response = await client.post(FORWARD_URL, json={"event_type": "e"})
    assert response.status == 502
    assert_error_body(await response.json(), "UPSTREAM_AUTH_FAILED")

    await refuse(storage_server)
    response = await client.post(FORWARD_URL, json={"event_type": "e"})
    assert response.status == 503
    assert_error_body(await response.json(), "SERVICE_UNAVAILABLE")


# -- fuzz: no body makes a 5xx -----------------------------------------------------------

# Integers within orjson's range (it cannot write larger ones, so neither can a client).
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
_fields = st.fixed_dictionaries(
    {},
    optional={
        "event_type": _json | st.sampled_from(["e", "state_changed", "call_service", " "]),
        "event_data": _json | st.dictionaries(st.text(max_size=10), _json, max_size=4),
        "entity_id": _json | st.sampled_from(["sensor.a", "a.b.c", "sensor."]),
        "config_entry_id": _json,
    },
)
_bodies = st.one_of(
    st.binary(max_size=300),
    _json.map(orjson.dumps),
    _fields.map(lambda body: orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)),
)


def _examples(count: int) -> list[bytes]:
    """Bodies drawn by Hypothesis, reproducibly (derandomized), posted by the async test."""
    found: list[bytes] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(_bodies)
    def collect(body: bytes) -> None:
        found.append(body)

    collect()
    return found


async def test_forward_fuzz_never_answers_5xx(
    client: TestClient, entry: MockConfigEntry, storage_server: FaultServer
) -> None:
    bodies = _examples(300)
    assert len(bodies) >= 200
    statuses: dict[int, int] = {}
    for body in bodies:
        response = await client.post(
            FORWARD_URL, data=body, headers={"Content-Type": "application/json"}
        )
        assert response.status < 500, (body, await response.text())
        if response.status != 200:
            assert_error_body(await response.json(), (await response.json())["error"]["code"])
        statuses[response.status] = statuses.get(response.status, 0) + 1
    # The fuzz reaches every kind of answer, not just the first check.
    assert {200, 400, 422} <= set(statuses)


async def test_forward_error_messages_are_translated(
    client: TestClient, entry: MockConfigEntry
) -> None:
    response = await client.post(FORWARD_URL, json={"event_type": "state_changed"})
    answer = await response.json()
    assert answer["error"]["message"] == (
        "The event is not valid: entity_id is missing or malformed (expected 'domain.object_id')"
    )
    assert answer["error"]["details"] == {
        "field": "entity_id",
        "issue": "is missing or malformed",
        "expected": "'domain.object_id'",
    }
