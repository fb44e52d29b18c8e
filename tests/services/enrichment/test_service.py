"""The enrichment app on a loopback port, forwarding to a real receiver standing in for
storage, with the OpenWeatherMap stand-in: what reaches storage, what the caller hears."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson

from ha_ingestor_services import __version__
from ha_ingestor_services.limits import Limits
from tests.pipeline.fault_server import REJECT_MARKER, Fault, FaultServer
from tests.services.conftest import AUTH, TOKEN

from .conftest import OWM_KEY, Enrichment, StartEnrichment, WeatherAPI
from .helpers import HA_WEATHER, batch, envelope

BATCH = "/api/v1/events/batch"
JSON_AUTH = {**AUTH, "Content-Type": "application/json"}
SINGLE = "/api/v1/events"


async def post(
    client: aiohttp.ClientSession,
    url: str,
    body: Any,
    *,
    path: str = BATCH,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], aiohttp.typedefs.LooseHeaders]:
    async with client.post(
        url + path,
        data=orjson.dumps(body),
        headers={"Content-Type": "application/json", **(headers if headers is not None else AUTH)},
    ) as response:
        return response.status, orjson.loads(await response.read()), response.headers


def statuses(answer: dict[str, Any]) -> list[str]:
    return [result["status"] for result in answer["results"]]


# -- what reaches storage --------------------------------------------------------------


async def test_enriched_envelopes_reach_storage(
    enrichment: Enrichment,
    storage: FaultServer,
    weather_api: WeatherAPI,
    client: aiohttp.ClientSession,
) -> None:
    with_ha_weather = envelope(weather=HA_WEATHER)
    plain = envelope(timestamp="2026-11-26T21:15:00.5+01:00")
    status, answer, headers = await post(
        client,
        enrichment.url,
        batch(with_ha_weather, plain),
        headers={**AUTH, "X-Correlation-ID": "corr-42"},
    )
    assert status == 200
    assert answer["results"] == [
        {"event_id": with_ha_weather["event_id"], "status": "stored"},
        {"event_id": plain["event_id"], "status": "stored"},
    ]
    assert answer["metadata"] == {
        "service": "enrichment-pipeline",
        "version": __version__,
        "processing_steps": ["validation", "enrichment", "normalization", "forwarding"],
    }
    assert headers["X-Correlation-ID"] == "corr-42"
    assert storage.requests[-1].correlation_id == "corr-42"
    assert storage.requests[-1].headers["Authorization"] == "Bearer storage-test-token"

    first, second = storage.received
    # The envelope as received, plus three members.
    for sent, stored in ((with_ha_weather, first), (plain, second)):
        assert {key: stored[key] for key in sent if key != "timestamp"} == {
            key: value for key, value in sent.items() if key != "timestamp"
        }
        assert set(stored) == {*sent, "normalized", "weather", "processing"}
    assert first["timestamp"] == "2026-11-26T20:15:00.123456Z"
    assert second["timestamp"] == "2026-11-26T20:15:00.500000Z"
    assert first["normalized"] == {
        "domain": "sensor",
        "object_id": "temperature",
        "value": 22.5,
        "boolean": None,
        "unit": "°C",
        "device_class": "temperature",
    }
    assert first["weather"] == {
        "condition": "rainy",
        "temperature_c": 11.5,
        "humidity": 87.0,
        "pressure_hpa": 1008.0,
        "wind_speed_ms": None,
        "source": "home_assistant",
        "observed_at": None,
    }
    assert second["weather"] == {
        "condition": "rainy",
        "temperature_c": 11.5,
        "humidity": 87.0,
        "pressure_hpa": 1008.0,
        "wind_speed_ms": 3.6,
        "source": "openweathermap",
        "observed_at": "2025-11-24T16:00:00Z",
    }
    for stored, weather_status in ((first, "home_assistant"), (second, "provider")):
        processing = stored["processing"]
        assert processing["weather_status"] == weather_status
        assert processing["processor_version"] == __version__
        assert processing["processing_steps"] == ["validation", "enrichment", "normalization"]
        assert processing["processed_at"].endswith("Z")
        assert isinstance(processing["processing_time_ms"], float)
        assert processing["processing_time_ms"] >= 0
    assert len(weather_api.calls) == 1


async def test_weather_cached_then_refreshed_after_ttl(
    enrichment: Enrichment,
    storage: FaultServer,
    weather_api: WeatherAPI,
    client: aiohttp.ClientSession,
) -> None:
    for _ in range(3):
        status, _, _ = await post(client, enrichment.url, batch(envelope(), envelope()))
        assert status == 200
    assert [event["processing"]["weather_status"] for event in storage.received] == [
        "provider",
        "provider",
        *["cache"] * 4,
    ]
    enrichment.clock.advance(901)
    await post(client, enrichment.url, batch(envelope()))
    assert storage.received[-1]["processing"]["weather_status"] == "provider"
    assert len(weather_api.calls) == 2


async def test_the_weather_cache_settings_take_effect(
    start_enrichment: StartEnrichment,
    storage: FaultServer,
    weather_api: WeatherAPI,
    client: aiohttp.ClientSession,
) -> None:
    """Both TTLs reach the weather step: the defaults (900 s, 60 s) would keep the
    answers cached over these waits."""
    enrichment = await start_enrichment(
        storage_urls=(storage.url,),
        weather_provider="openweathermap",
        openweathermap_api_key=OWM_KEY,
        openweathermap_url=weather_api.url,
        weather_cache_ttl_s=30,
        weather_failure_ttl_s=5,
    )

    async def weather_status() -> str:
        status, _, _ = await post(client, enrichment.url, batch(envelope()))
        assert status == 200
        result: str = storage.received[-1]["processing"]["weather_status"]
        return result

    assert await weather_status() == "provider"
    enrichment.clock.advance(20)
    assert await weather_status() == "cache"
    enrichment.clock.advance(11)  # 31 s: past the 30 s cache
    assert await weather_status() == "provider"
    assert len(weather_api.calls) == 2

    weather_api.status = 500
    enrichment.clock.advance(31)
    assert await weather_status() == "unavailable"
    weather_api.status = 200
    enrichment.clock.advance(6)  # past the 5 s failure cache: asked again
    assert await weather_status() == "provider"
    assert len(weather_api.calls) == 4


async def test_concurrent_requests_share_one_weather_call(
    enrichment: Enrichment,
    storage: FaultServer,
    weather_api: WeatherAPI,
    client: aiohttp.ClientSession,
) -> None:
    weather_api.gate = asyncio.Event()
    requests = [
        asyncio.create_task(post(client, enrichment.url, batch(*[envelope() for _ in range(10)])))
        for _ in range(12)
    ]
    while not weather_api.calls:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.1)
    weather_api.gate.set()
    answers = await asyncio.gather(*requests)
    assert all(status == 200 for status, _, _ in answers)
    assert len(weather_api.calls) == 1
    assert len(storage.stored_ids) == 120
    assert {event["processing"]["weather_status"] for event in storage.received} == {"provider"}


async def test_failing_provider_does_not_hold_events_back(
    start_enrichment: StartEnrichment,
    storage: FaultServer,
    weather_api: WeatherAPI,
    client: aiohttp.ClientSession,
) -> None:
    weather_api.delay = 5.0
    enrichment = await start_enrichment(
        storage_urls=(storage.url,),
        weather_provider="openweathermap",
        openweathermap_api_key="owm-test-key",
        openweathermap_url=weather_api.url,
        weather_timeout_s=0.2,
    )
    started = time.monotonic()
    status, answer, _ = await post(client, enrichment.url, batch(envelope(), envelope()))
    assert time.monotonic() - started < 2.0
    assert status == 200
    assert statuses(answer) == ["stored", "stored"]
    assert [event["weather"] for event in storage.received] == [None, None]
    assert {event["processing"]["weather_status"] for event in storage.received} == {"unavailable"}
    # The failure is remembered: the next request does not wait on the provider again.
    weather_api.delay = 0.0
    await post(client, enrichment.url, batch(envelope()))
    assert len(weather_api.calls) == 1
    assert storage.received[-1]["processing"]["weather_status"] == "unavailable"


async def test_without_provider_or_location(
    start_enrichment: StartEnrichment, storage: FaultServer, client: aiohttp.ClientSession
) -> None:
    enrichment = await start_enrichment(storage_urls=(storage.url,))
    status, _, _ = await post(
        client, enrichment.url, batch(envelope(), envelope(location=None, weather=HA_WEATHER))
    )
    assert status == 200
    assert [event["processing"]["weather_status"] for event in storage.received] == [
        "not_configured",
        "home_assistant",
    ]
    assert storage.received[0]["weather"] is None


async def test_no_location_with_a_provider(
    enrichment: Enrichment, storage: FaultServer, client: aiohttp.ClientSession
) -> None:
    await post(client, enrichment.url, batch(envelope(location=None)))
    assert storage.received[0]["processing"]["weather_status"] == "no_location"


async def test_normalized_states(
    enrichment: Enrichment, storage: FaultServer, client: aiohttp.ClientSession
) -> None:
    events = [
        envelope(entity_id="binary_sensor.door", state="on", attributes={"device_class": "door"}),
        envelope(entity_id="switch.kettle", state="off", attributes={}),
        envelope(entity_id="sensor.mode", state="on", attributes={"unit_of_measurement": ""}),
        envelope(entity_id="sensor.power", state="-1e3", attributes={"unit_of_measurement": "W"}),
        envelope(entity_id="lock.front", state="locked", attributes={}),
        envelope(entity_id="sensor.gone", state=None, attributes={}),
    ]
    status, _, _ = await post(client, enrichment.url, batch(*events))
    assert status == 200
    normalized = [event["normalized"] for event in storage.received]
    assert [(n["domain"], n["object_id"]) for n in normalized] == [
        ("binary_sensor", "door"),
        ("switch", "kettle"),
        ("sensor", "mode"),
        ("sensor", "power"),
        ("lock", "front"),
        ("sensor", "gone"),
    ]
    assert [n["value"] for n in normalized] == [None, None, None, -1000.0, None, None]
    assert [n["boolean"] for n in normalized] == [True, False, None, None, True, None]
    assert [n["unit"] for n in normalized] == [None, None, None, "W", None, None]
    assert normalized[0]["device_class"] == "door"


async def test_single_event_endpoint(
    enrichment: Enrichment, storage: FaultServer, client: aiohttp.ClientSession
) -> None:
    event = envelope()
    status, answer, _ = await post(client, enrichment.url, event, path=SINGLE)
    assert status == 200
    assert statuses(answer) == ["stored"]
    assert storage.requests[-1].path == BATCH  # forwarded as a batch of one
    status, answer, _ = await post(client, enrichment.url, {"event_id": "x"}, path=SINGLE)
    assert status == 422
    assert answer["error"]["code"] == "VALIDATION_ERROR"


# -- per-event results -----------------------------------------------------------------


async def test_mixed_batch_rejections_pass_through(
    enrichment: Enrichment, storage: FaultServer, client: aiohttp.ClientSession
) -> None:
    good = envelope()
    refused_by_storage = envelope(attributes={REJECT_MARKER: True})
    malformed = {**envelope(), "timestamp": "yesterday"}
    also_good = envelope()
    status, answer, _ = await post(
        client, enrichment.url, batch(good, refused_by_storage, malformed, also_good)
    )
    assert status == 200
    assert statuses(answer) == ["stored", "rejected", "rejected", "stored"]
    assert answer["results"][1]["error"]["message"] == "rejected by the fault server"
    assert answer["results"][2]["error"]["details"]["field"] == "timestamp"
    # The malformed event never reaches storage.
    assert [event["event_id"] for event in storage.received] == [
        good["event_id"],
        refused_by_storage["event_id"],
        also_good["event_id"],
    ]
    # Sent again: storage answers duplicate, and that passes through too.
    _, again, _ = await post(client, enrichment.url, batch(good))
    assert statuses(again) == ["duplicate"]


async def test_event_storage_says_nothing_about_is_not_stored(
    enrichment: Enrichment, storage: FaultServer, client: aiohttp.ClientSession
) -> None:
    first, second = envelope(), envelope()
    partial = {
        "success": True,
        "results": [{"event_id": first["event_id"], "status": "stored"}],
    }
    storage.add_faults(Fault.answer(200, body=orjson.dumps(partial)))
    status, answer, _ = await post(client, enrichment.url, batch(first, second))
    assert status == 200
    assert statuses(answer) == ["stored", "rejected"]
    assert answer["results"][1]["error"]["code"] == "STORAGE_NO_RESULT"


async def test_storage_answer_without_results_is_a_503(
    enrichment: Enrichment, storage: FaultServer, client: aiohttp.ClientSession
) -> None:
    storage.add_faults(Fault.answer(200, body=b"<html>hello</html>"))
    status, answer, headers = await post(client, enrichment.url, batch(envelope()))
    assert status == 503
    assert "without per-event results" in answer["error"]["message"]
    assert headers["Retry-After"] == "30"


async def test_storage_413_splits_the_batch(
    start_enrichment: StartEnrichment,
    fault_server_factory: Any,
    client: aiohttp.ClientSession,
) -> None:
    small = await fault_server_factory(token="storage-test-token", max_batch_events=3)
    enrichment = await start_enrichment(storage_urls=(small.url,))
    events = [envelope() for _ in range(10)]
    status, answer, _ = await post(client, enrichment.url, batch(*events))
    assert status == 200
    assert statuses(answer) == ["stored"] * 10
    assert small.stored_ids == [event["event_id"] for event in events]  # order kept
    assert enrichment.service.stats()["storage"]["splits"] >= 3


async def test_whole_batch_refusal_isolates_the_bad_event(
    enrichment: Enrichment, storage: FaultServer, client: aiohttp.ClientSession
) -> None:
    first, second = envelope(), envelope()
    # The batch, then the first half alone, are refused as a whole.
    storage.add_faults(Fault.answer(422), Fault.answer(422))
    status, answer, _ = await post(client, enrichment.url, batch(first, second))
    assert status == 200
    assert statuses(answer) == ["rejected", "stored"]
    assert answer["results"][0]["error"]["code"] == "HTTP_422"
    assert storage.stored_ids == [second["event_id"]]


async def test_single_event_too_large_for_storage_is_rejected(
    enrichment: Enrichment, storage: FaultServer, client: aiohttp.ClientSession
) -> None:
    storage.add_faults(Fault.answer(413))
    status, answer, _ = await post(client, enrichment.url, batch(envelope()))
    assert status == 200
    assert answer["results"][0]["status"] == "rejected"
    assert answer["results"][0]["error"]["code"] == "payload_too_large"


# -- storage cannot take events: 503 ----------------------------------------------------


async def test_storage_503_retry_after_passes_through(
    enrichment: Enrichment, storage: FaultServer, client: aiohttp.ClientSession
) -> None:
    storage.fail_next(1, 503, retry_after=7)
    status, answer, headers = await post(client, enrichment.url, batch(envelope()))
    assert status == 503
    assert headers["Retry-After"] == "7"
    assert answer["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert "HTTP 503" in answer["error"]["message"]
    storage.fail_next(1, 429)
    status, _, headers = await post(client, enrichment.url, batch(envelope()))
    assert status == 503
    assert headers["Retry-After"] == "5"
    assert storage.stored_ids == []


async def test_storage_down_answers_503(
    enrichment: Enrichment, storage: FaultServer, client: aiohttp.ClientSession
) -> None:
    await storage.refuse()
    for _ in range(6):  # the fifth failure opens the circuit: answered without trying
        status, answer, headers = await post(client, enrichment.url, batch(envelope()))
        assert status == 503
        assert int(headers["Retry-After"]) >= 1
    assert "calls to it are paused" in answer["error"]["message"]
    assert "Cannot connect" in answer["error"]["message"]
    await storage.restore()
    enrichment.clock.advance(10)  # the circuit lets a probe through
    event = envelope()
    status, answer, _ = await post(client, enrichment.url, batch(event))
    assert status == 200
    assert storage.stored_ids == [event["event_id"]]


async def test_storage_back_is_healthy_and_taken_at_once_whatever_the_breaker(
    enrichment: Enrichment, storage: FaultServer, client: aiohttp.ClientSession
) -> None:
    """Storage's own health decides, not the breaker's open interval: the integration
    probes this health to know when to resume (docs/ARCHITECTURE.md, "Recovery")."""
    await storage.refuse()
    for _ in range(6):  # the circuit opens
        status, _, _ = await post(client, enrichment.url, batch(envelope()))
        assert status == 503
    async with client.get(enrichment.url + "/api/v1/health", headers=AUTH) as response:
        assert response.status == 503
        assert (await response.json())["dependencies"]["storage"]["status"] == "unhealthy"
    await storage.restore()
    # No clock advance: the breaker still has its whole open interval to wait.
    async with client.get(enrichment.url + "/api/v1/health") as response:
        assert response.status == 200
    event = envelope()
    status, _, _ = await post(client, enrichment.url, batch(event))
    assert status == 200
    assert storage.stored_ids == [event["event_id"]]


async def test_storage_timeout_answers_503(
    start_enrichment: StartEnrichment, storage: FaultServer, client: aiohttp.ClientSession
) -> None:
    enrichment = await start_enrichment(storage_urls=(storage.url,), storage_timeout_s=0.2)
    storage.add_faults(Fault.slow(1.0))
    status, answer, headers = await post(client, enrichment.url, batch(envelope()))
    assert status == 503
    assert "timed out" in answer["error"]["message"]
    assert headers["Retry-After"] == "5"


async def test_blip_is_retried_within_the_request(
    start_enrichment: StartEnrichment, storage: FaultServer, client: aiohttp.ClientSession
) -> None:
    enrichment = await start_enrichment(storage_urls=(storage.url,), storage_attempts=2)
    storage.add_faults(Fault.reset())
    status, answer, _ = await post(client, enrichment.url, batch(envelope()))
    assert status == 200
    assert statuses(answer) == ["stored"]
    storage.fail_next(1, 500)
    status, _, _ = await post(client, enrichment.url, batch(envelope()))
    assert status == 200
    assert enrichment.service.stats()["storage"]["retries"] == 2


async def test_failover_to_a_second_storage(
    start_enrichment: StartEnrichment,
    storage: FaultServer,
    fault_server_factory: Any,
    client: aiohttp.ClientSession,
) -> None:
    other = await fault_server_factory(token="storage-test-token")
    await storage.refuse()
    enrichment = await start_enrichment(storage_urls=(storage.url, other.url))
    event = envelope()
    status, _, _ = await post(client, enrichment.url, batch(event))
    assert status == 200
    assert other.stored_ids == [event["event_id"]]


async def test_wrong_storage_token_is_a_503_that_says_so(
    start_enrichment: StartEnrichment, storage: FaultServer, client: aiohttp.ClientSession
) -> None:
    enrichment = await start_enrichment(storage_urls=(storage.url,), storage_token="wrong")
    status, answer, headers = await post(client, enrichment.url, batch(envelope()))
    assert status == 503
    assert "refused this service's token (HTTP 401)" in answer["error"]["message"]
    assert headers["Retry-After"] == "30"
    async with client.get(enrichment.url + "/api/v1/health", headers=AUTH) as response:
        health = await response.json()
    assert response.status == 503
    assert health["status"] == "unhealthy"
    assert "token" in health["dependencies"]["storage"]["detail"]
    # Storage now takes that token: health sees it without waiting for events.
    storage.token = "wrong"
    async with client.get(enrichment.url + "/api/v1/health") as response:
        assert response.status == 200
    status, _, _ = await post(client, enrichment.url, batch(envelope()))
    assert status == 200


async def test_storage_urls_pointing_at_an_enrichment(
    start_enrichment: StartEnrichment, storage: FaultServer, client: aiohttp.ClientSession
) -> None:
    """No forwarding in a circle: the second enrichment refuses enriched events."""
    second = await start_enrichment(storage_urls=(storage.url,))
    first = await start_enrichment(storage_urls=(second.url,), storage_token=TOKEN)
    status, answer, _ = await post(client, first.url, batch(envelope()))
    assert status == 503
    assert "enriched already" in answer["error"]["message"]
    assert storage.received == []
    async with client.get(first.url + "/api/v1/health", headers=AUTH) as response:
        health = await response.json()
    assert health["status"] == "unhealthy"
    assert "answers as the enrichment, not storage" in health["dependencies"]["storage"]["detail"]


async def test_storage_url_that_is_not_storage(
    start_enrichment: StartEnrichment, weather_api: WeatherAPI, client: aiohttp.ClientSession
) -> None:
    enrichment = await start_enrichment(storage_urls=(weather_api.url,))
    status, answer, _ = await post(client, enrichment.url, batch(envelope()))
    assert status == 503
    assert "is storage_urls the storage service?" in answer["error"]["message"]


# -- the HTTP surface ------------------------------------------------------------------


async def test_auth_and_limits(
    start_enrichment: StartEnrichment, storage: FaultServer, client: aiohttp.ClientSession
) -> None:
    enrichment = await start_enrichment(
        storage_urls=(storage.url,), limits=Limits(max_body_bytes=64 * 1024, max_batch_events=5)
    )
    status, answer, headers = await post(client, enrichment.url, batch(envelope()), headers={})
    assert (status, answer["error"]["code"]) == (401, "UNAUTHORIZED")
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, answer, _ = await post(
        client, enrichment.url, batch(envelope()), headers={"Authorization": "Bearer nope"}
    )
    assert (status, answer["error"]["code"]) == (403, "FORBIDDEN")
    status, answer, _ = await post(client, enrichment.url, batch(*[envelope()] * 6))
    assert (status, answer["error"]["code"]) == (413, "PAYLOAD_TOO_LARGE")
    big = envelope(attributes={"blob": "x" * 70_000})
    status, answer, _ = await post(client, enrichment.url, batch(big))
    assert (status, answer["error"]["code"]) == (413, "PAYLOAD_TOO_LARGE")
    async with client.post(enrichment.url + BATCH, data=b"{nope", headers=JSON_AUTH) as response:
        assert response.status == 400
    assert storage.received == []


async def test_health(
    enrichment: Enrichment,
    storage: FaultServer,
    weather_api: WeatherAPI,
    client: aiohttp.ClientSession,
) -> None:
    async def health() -> tuple[int, dict[str, Any]]:
        async with client.get(enrichment.url + "/api/v1/health", headers=AUTH) as response:
            return response.status, await response.json()

    status, body = await health()
    assert (status, body["status"]) == (200, "healthy")
    assert body["service"] == "enrichment-pipeline"
    assert body["dependencies"]["storage"]["status"] == "healthy"
    assert body["dependencies"]["weather"]["detail"] == "openweathermap: no call yet"

    weather_api.status = 500
    await post(client, enrichment.url, batch(envelope()))
    status, body = await health()
    assert (status, body["status"]) == (200, "degraded")
    assert body["dependencies"]["weather"]["status"] == "unhealthy"
    assert "HTTP 500" in body["dependencies"]["weather"]["detail"]

    storage.health_status = 503
    status, body = await health()
    assert (status, body["status"]) == (503, "unhealthy")
    assert "HTTP 503" in body["dependencies"]["storage"]["detail"]

    await storage.refuse()
    status, body = await health()
    assert (status, body["status"]) == (503, "unhealthy")
    assert "unreachable" in body["dependencies"]["storage"]["detail"]


async def test_stats_and_metrics(
    enrichment: Enrichment, storage: FaultServer, client: aiohttp.ClientSession
) -> None:
    await post(client, enrichment.url, batch(envelope(), envelope(weather=HA_WEATHER)))
    await post(client, enrichment.url, batch(envelope()))
    storage.fail_next(1, 503, retry_after=2)
    await post(client, enrichment.url, batch(envelope()))
    async with client.get(enrichment.url + "/api/v1/stats", headers=AUTH) as response:
        assert response.status == 200
        body = await response.json()
    assert body["events"] == {"stored": 3, "duplicate": 0, "rejected": 0}
    own = body["enrichment-pipeline"]
    assert own["events_enriched"] == 4
    assert own["batches"] == 3
    assert own["storage"]["requests"] == 3
    assert own["storage"]["unavailable_answers"] == 1
    assert own["storage"]["latency_ms"]["p50"] > 0
    assert own["weather"]["events"]["home_assistant"] == 1
    assert own["weather"]["events"]["provider"] == 1
    assert own["weather"]["events"]["cache"] == 2
    assert own["weather"]["upstream_calls"] == 1
    assert own["weather"]["cache_hits"] == 2
    async with client.get(enrichment.url + "/api/v1/stats") as response:
        assert response.status == 401
    async with client.get(enrichment.url + "/metrics", headers=AUTH) as response:
        assert response.status == 200
        text = await response.text()
    assert 'ha_ingestor_events_total{service="enrichment-pipeline",status="stored"} 3.0' in text
    assert 'status="503"' in text


async def test_openapi_document_matches_the_routes(
    enrichment: Enrichment, client: aiohttp.ClientSession
) -> None:
    async with client.get(enrichment.url + "/api/v1/openapi.json", headers=AUTH) as response:
        assert response.status == 200
        document = await response.json()
    documented = {
        (path, method.upper()) for path, item in document["paths"].items() for method in item
    }
    served = {
        (route.resource.canonical, route.method)
        for route in enrichment.app.router.routes()
        if route.resource is not None and route.method != "HEAD"  # aiohttp adds HEAD to GETs
    }
    for path, method in served:
        async with client.request(method, enrichment.url + path, headers=AUTH) as response:
            assert response.status not in (404, 405), path
    assert documented == served
    # Nothing else is served.
    async with client.get(enrichment.url + "/api/v1/nothing", headers=AUTH) as response:
        assert response.status == 404
