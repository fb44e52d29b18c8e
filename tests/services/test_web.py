"""The shared HTTP layer (web.py) through a real server around a small in-test service."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from ha_ingestor_pipeline.envelope import EventResult
from ha_ingestor_services.contract import (
    DecodedBatch,
    DecodesBatches,
    DependencyHealth,
    ServiceUnavailable,
)
from ha_ingestor_services.enrichment.service import EnrichmentService
from ha_ingestor_services.limits import Limits
from ha_ingestor_services.storage.service import StorageService
from ha_ingestor_services.web import create_app

from .conftest import AUTH, TOKEN, Serve


def envelope(event_id: str = "e-1", **data: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "timestamp": "2026-11-26T10:00:00+01:00",
        "source": "ha_ingestor",
        "data": {"event_type": "state_changed", "entity_id": "sensor.t", "state": "1", **data},
        "context": {"instance_id": "home"},
    }


class RecordingService:
    """Stores what it is given; switches for the failures web.py must turn into answers."""

    name = "test-service"
    role = "storage"

    def __init__(self) -> None:
        self.service_id = "4f1c2a8e-0b7d-4c3e-9a51-6d2f8e7b1c90"
        self.processing_steps = ["validation", "recording"]
        self.received: list[dict[str, Any]] = []
        self.correlation_ids: list[str] = []
        self.unavailable = False
        self.crash = False
        self.short_answer = False
        self.health_state: dict[str, DependencyHealth] = {"backend": DependencyHealth(True, "ok")}
        self.started = self.stopped = False
        self.in_progress: Callable[[], int] = lambda: -1
        self.in_progress_seen: list[int] = []
        self.decodes = False  # reads batches itself (decode_batch), as storage does
        self.decoded: list[str] = []  # event ids that came through process_decoded

    def count_requests_with(self, in_progress: Callable[[], int]) -> None:
        self.in_progress = in_progress

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def process(
        self, envelopes: list[dict[str, Any]], correlation_id: str
    ) -> list[EventResult]:
        if self.unavailable:
            raise ServiceUnavailable("backend is down", retry_after=7)
        if self.crash:
            raise RuntimeError("boom")
        self.received.extend(envelopes)
        self.correlation_ids.append(correlation_id)
        self.in_progress_seen.append(self.in_progress())
        results: list[EventResult] = [
            {"event_id": item["event_id"], "status": "stored"} for item in envelopes
        ]
        return results[:-1] if self.short_answer else results

    def decode_batch(self, body: bytes, max_events: int) -> DecodedBatch | None:
        if not self.decodes:
            return None
        parsed = orjson.loads(body)
        if len(parsed["events"]) > max_events:
            return None
        return DecodedBatch(parsed["events"], parsed.get("correlation_id"))

    async def process_decoded(self, items: list[Any], correlation_id: str) -> list[EventResult]:
        self.decoded.extend(item["event_id"] for item in items)
        return await self.process(items, correlation_id)

    async def health(self) -> dict[str, DependencyHealth]:
        return self.health_state

    def stats(self) -> dict[str, Any]:
        return {"received": len(self.received)}

    def routes(self) -> list[web.RouteDef]:
        async def ping(_: web.Request) -> web.Response:
            return web.json_response({"pong": True})

        return [web.get("/api/v1/ping", ping)]

    def openapi_paths(self) -> dict[str, Any]:
        return {
            "/api/v1/ping": {
                "get": {"summary": "ping", "responses": {"200": {"description": "ok"}}}
            }
        }


@pytest.fixture
def service() -> RecordingService:
    return RecordingService()


@pytest.fixture
async def url(serve: Serve, service: RecordingService) -> str:
    return await serve(
        create_app(
            service, token=TOKEN, limits=Limits(max_body_bytes=64 * 1024, max_batch_events=10)
        )
    )


async def post(
    client: aiohttp.ClientSession, url: str, body: Any, **kwargs: Any
) -> tuple[int, Any, Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", AUTH)}
    async with client.post(url, data=data, headers=headers, **kwargs) as answer:
        return answer.status, await answer.json(content_type=None), answer.headers


def assert_error(body: Any, code: str) -> None:
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["timestamp"].endswith("Z")


async def test_batch_answers_one_result_per_event(
    client: aiohttp.ClientSession, url: str, service: RecordingService
) -> None:
    bad = {"event_id": "bad", "timestamp": "yesterday", "data": {"event_type": "x"}}
    status, body, headers = await post(
        client, url + "/api/v1/events/batch", {"events": [envelope("a"), bad, envelope("b")]}
    )
    assert status == 200
    assert body["success"] is True
    assert [(r["event_id"], r["status"]) for r in body["results"]] == [
        ("a", "stored"),
        ("bad", "rejected"),
        ("b", "stored"),
    ]
    assert body["results"][1]["error"]["details"] == {
        "field": "timestamp",
        "issue": "is not a valid timestamp",
        "expected": "RFC 3339 date-time",
    }
    assert body["metadata"] == {
        "service": "test-service",
        "version": "0.1.0",
        "processing_steps": ["validation", "recording"],
    }
    assert headers["X-Correlation-ID"] == body["correlation_id"]
    # The service saw only the good ones, with the timestamp normalized to UTC.
    assert [item["event_id"] for item in service.received] == ["a", "b"]
    assert service.received[0]["timestamp"] == "2026-11-26T09:00:00Z"


async def test_the_service_can_count_the_event_requests_in_progress(
    client: aiohttp.ClientSession, url: str, service: RecordingService
) -> None:
    """What storage's group commit reads to know whether anyone else may join a flush."""
    assert service.in_progress() == 0
    batch = url + "/api/v1/events/batch"
    await post(client, batch, {"events": [envelope("a")]})
    await post(client, url + "/api/v1/events", envelope("b"))
    assert service.in_progress_seen == [1, 1]
    assert service.in_progress() == 0


async def test_correlation_id_from_header_or_body(
    client: aiohttp.ClientSession, url: str, service: RecordingService
) -> None:
    headers = {**AUTH, "X-Correlation-ID": "from-header"}
    _, body, answer_headers = await post(
        client, url + "/api/v1/events/batch", {"events": [envelope()]}, headers=headers
    )
    assert body["correlation_id"] == answer_headers["X-Correlation-ID"] == "from-header"
    _, body, _ = await post(
        client,
        url + "/api/v1/events/batch",
        {"events": [envelope()], "correlation_id": "from-body"},
    )
    assert body["correlation_id"] == "from-body"
    assert service.correlation_ids == ["from-header", "from-body"]


async def test_a_batch_the_service_decodes_itself(
    client: aiohttp.ClientSession, url: str, service: RecordingService
) -> None:
    """decode_batch's items go to process_decoded; the app still checks the correlation
    id, counts the results and refuses an answer one short."""
    service.decodes = True
    batch = url + "/api/v1/events/batch"
    status, body, _ = await post(
        client, batch, {"events": [envelope("a"), envelope("b")], "correlation_id": "given"}
    )
    assert status == 200
    assert [result["event_id"] for result in body["results"]] == ["a", "b"]
    assert body["correlation_id"] == "given"
    assert service.decoded == ["a", "b"]
    status, body, _ = await post(client, batch, {"events": [envelope("c")], "correlation_id": ""})
    assert status == 422
    assert_error(body, "VALIDATION_ERROR")
    service.short_answer = True
    status, body, _ = await post(client, batch, {"events": [envelope("d"), envelope("e")]})
    assert status == 500
    assert_error(body, "INTERNAL_ERROR")
    assert service.decoded == ["a", "b", "d", "e"]
    async with client.get(url + "/api/v1/stats", headers=AUTH) as answer:
        assert (await answer.json())["events"]["stored"] == 2


def test_storage_reads_batches_itself_and_the_enrichment_does_not() -> None:
    """The app takes the typed path only for a `DecodesBatches` (storage's typed decoding);
    the enrichment forwards envelopes as they came."""
    assert issubclass(StorageService, DecodesBatches)
    assert not issubclass(EnrichmentService, DecodesBatches)


async def test_single_event(client: aiohttp.ClientSession, url: str) -> None:
    status, body, _ = await post(client, url + "/api/v1/events", envelope("one"))
    assert status == 200
    assert body["results"] == [{"event_id": "one", "status": "stored"}]
    status, body, _ = await post(
        client, url + "/api/v1/events", envelope("two", entity_id="no_dot")
    )
    assert status == 422
    assert_error(body, "VALIDATION_ERROR")
    assert body["error"]["details"]["field"] == "data.entity_id"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "BAD_REQUEST"),
        (b"", 400, "BAD_REQUEST"),
        ([1, 2], 422, "VALIDATION_ERROR"),
        ({"events": "x"}, 422, "VALIDATION_ERROR"),
        ({"events": []}, 422, "VALIDATION_ERROR"),
        ({"events": [envelope(str(n)) for n in range(11)]}, 413, "PAYLOAD_TOO_LARGE"),
        (b'{"events": ["' + b"x" * 70_000 + b'"]}', 413, "PAYLOAD_TOO_LARGE"),
    ],
)
async def test_bad_batches(
    client: aiohttp.ClientSession,
    url: str,
    service: RecordingService,
    body: Any,
    status: int,
    code: str,
) -> None:
    answer_status, answer, _ = await post(client, url + "/api/v1/events/batch", body)
    assert answer_status == status
    assert_error(answer, code)
    assert service.received == []


async def test_gzip_body_is_read_and_limited_after_decompression(
    client: aiohttp.ClientSession, url: str, service: RecordingService
) -> None:
    small = gzip.compress(orjson.dumps({"events": [envelope("gz")]}))
    headers = {**AUTH, "Content-Encoding": "gzip", "Content-Type": "application/json"}
    status, body, _ = await post(client, url + "/api/v1/events/batch", small, headers=headers)
    assert status == 200
    assert body["results"][0]["status"] == "stored"
    # 200 kB of JSON compresses to well under the 64 kB limit, but unpacks past it.
    bomb = gzip.compress(b'{"events": ["' + b"x" * 200_000 + b'"]}')
    assert len(bomb) < 64 * 1024
    status, body, _ = await post(client, url + "/api/v1/events/batch", bomb, headers=headers)
    assert status == 413
    assert_error(body, "PAYLOAD_TOO_LARGE")
    assert [item["event_id"] for item in service.received] == ["gz"]


async def test_auth(client: aiohttp.ClientSession, url: str) -> None:
    status, body, headers = await post(
        client, url + "/api/v1/events/batch", {"events": [envelope()]}, headers={}
    )
    assert status == 401
    assert_error(body, "UNAUTHORIZED")
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, body, _ = await post(
        client,
        url + "/api/v1/events/batch",
        {"events": [envelope()]},
        headers={"Authorization": "Bearer nope"},
    )
    assert status == 403
    assert_error(body, "FORBIDDEN")
    status, _, _ = await post(
        client,
        url + "/api/v1/events/batch",
        {"events": [envelope()]},
        headers={"Authorization": f"bearer {TOKEN}"},
    )
    assert status == 200
    for path in ("/api/v1/stats", "/metrics", "/api/v1/openapi.json", "/api/v1/ping"):
        async with client.get(url + path) as answer:
            assert answer.status == 401, path
    async with client.get(url + "/api/v1/health") as answer:
        assert answer.status == 200


async def test_unavailable_is_503_with_retry_after(
    client: aiohttp.ClientSession, url: str, service: RecordingService
) -> None:
    service.unavailable = True
    status, body, headers = await post(
        client, url + "/api/v1/events/batch", {"events": [envelope()]}
    )
    assert status == 503
    assert headers["Retry-After"] == "7"
    assert_error(body, "SERVICE_UNAVAILABLE")


async def test_service_bugs_are_500_in_the_error_format(
    client: aiohttp.ClientSession, url: str, service: RecordingService
) -> None:
    service.crash = True
    status, body, _ = await post(client, url + "/api/v1/events/batch", {"events": [envelope()]})
    assert status == 500
    assert_error(body, "INTERNAL_ERROR")
    service.crash = False
    service.short_answer = True  # fewer results than events must never pass as success
    status, body, _ = await post(
        client, url + "/api/v1/events/batch", {"events": [envelope("x"), envelope("y")]}
    )
    assert status == 500
    assert_error(body, "INTERNAL_ERROR")


async def test_unknown_path_and_method(client: aiohttp.ClientSession, url: str) -> None:
    async with client.get(url + "/api/v1/nothing", headers=AUTH) as answer:
        assert answer.status == 404
        assert_error(await answer.json(), "NOT_FOUND")
    async with client.delete(url + "/api/v1/events/batch", headers=AUTH) as answer:
        assert answer.status == 405
        assert "POST" in answer.headers["Allow"]
        assert_error(await answer.json(), "METHOD_NOT_ALLOWED")


@pytest.mark.parametrize(
    ("dependencies", "status", "overall"),
    [
        ({"backend": DependencyHealth(True, "ok")}, 200, "healthy"),
        (
            {
                "backend": DependencyHealth(True),
                "weather": DependencyHealth(False, "down", required=False),
            },
            200,
            "degraded",
        ),
        ({"backend": DependencyHealth(False, "refused")}, 503, "unhealthy"),
    ],
)
async def test_health(
    client: aiohttp.ClientSession,
    url: str,
    service: RecordingService,
    dependencies: dict[str, DependencyHealth],
    status: int,
    overall: str,
) -> None:
    service.health_state = dependencies
    async with client.get(url + "/api/v1/health", headers=AUTH) as answer:
        assert answer.status == status
        body = await answer.json()
    assert body["status"] == overall
    assert body["service"] == "test-service"
    assert set(body["dependencies"]) == set(dependencies)
    assert body["version"] == "0.1.0"
    assert (body["service_id"], body["role"], body["api_version"], body["token_required"]) == (
        service.service_id,
        "storage",
        1,
        True,
    )


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}],
    ids=["no-token", "wrong-token", "other-scheme"],
)
async def test_open_health_says_only_the_status_and_identity(
    client: aiohttp.ClientSession,
    url: str,
    service: RecordingService,
    headers: dict[str, str],
) -> None:
    """Without the token: no details, but what discovery tells services apart by."""
    service.health_state = {"backend": DependencyHealth(False, "/srv/secret/events.db: locked")}
    async with client.get(url + "/api/v1/health", headers=headers) as answer:
        assert answer.status == 503
        assert await answer.json() == {
            "status": "unhealthy",
            "service": "test-service",
            "service_id": "4f1c2a8e-0b7d-4c3e-9a51-6d2f8e7b1c90",
            "role": "storage",
            "api_version": 1,
            "token_required": True,
        }


async def test_stats_and_metrics_count_results(client: aiohttp.ClientSession, url: str) -> None:
    bad = {"event_id": "bad"}
    await post(
        client, url + "/api/v1/events/batch", {"events": [envelope("a"), envelope("b"), bad]}
    )
    async with client.get(url + "/api/v1/stats", headers=AUTH) as answer:
        stats = await answer.json()
    assert stats["events"] == {"stored": 2, "duplicate": 0, "rejected": 1}
    assert stats["test-service"] == {"received": 2}
    assert stats["request_latency_ms"]["p99"] is not None
    async with client.get(url + "/metrics", headers=AUTH) as answer:
        assert answer.content_type == "text/plain"
        text = await answer.text()
    assert 'ha_ingestor_events_total{service="test-service",status="stored"} 2.0' in text
    assert 'route="/api/v1/events/batch"' in text


async def test_openapi_document_matches_the_routes(
    client: aiohttp.ClientSession, url: str, serve: Serve
) -> None:
    async with client.get(url + "/api/v1/openapi.json", headers=AUTH) as answer:
        document = await answer.json()
    assert document["openapi"].startswith("3.1")
    documented = {
        (path, method.upper()) for path, item in document["paths"].items() for method in item
    }
    app = create_app(RecordingService(), token=TOKEN)
    routed = {
        (route.resource.canonical, route.method)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    assert documented == routed


async def test_lifecycle_starts_and_stops_the_service(serve: Serve) -> None:
    service = RecordingService()
    await serve(create_app(service, token=TOKEN))
    assert service.started
    assert not service.stopped


def test_a_token_is_required() -> None:
    with pytest.raises(ValueError, match="token"):
        create_app(RecordingService(), token="")
