"""API v2 through influxdb-client's async client, against a local InfluxDB 2.x stand-in.

No InfluxDB 2.x server could be run here: `InfluxV2StandIn` checks the requests and
answers as InfluxDB 2.x does (see its module).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ha_ingestor_services.contract import StartupError
from ha_ingestor_services.envelopes import check_envelope
from ha_ingestor_services.storage.backends.line_protocol import point_line
from ha_ingestor_services.storage.records import to_record
from ha_ingestor_services.storage.service import StorageService
from ha_ingestor_services.storage.settings import StorageSettings
from tests.services.conftest import AUTH, Serve

from .conftest import StartStorage, envelope, get_events, post_batch, query_batch, statuses
from .influx_v2_standin import InfluxV2StandIn


@pytest.fixture
async def standin(serve: Serve) -> tuple[str, InfluxV2StandIn]:
    server = InfluxV2StandIn()
    return await serve(server.app()), server


def v2_settings(url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "backend": "influxdb",
        "influx_api": "v2",
        "influx_url": url,
        "influx_org": "home",
        "influx_bucket": "events",
        "influx_token": "v2-token",
        **overrides,
    }


async def test_writes_are_v2_requests_with_point_line_protocol(
    start_storage: StartStorage,
    client: aiohttp.ClientSession,
    standin: tuple[str, InfluxV2StandIn],
) -> None:
    influx_url, server = standin
    url, _ = await start_storage(**v2_settings(influx_url))
    batch = [envelope(f"sensor.v{i}") for i in range(5)]
    _, body = await post_batch(client, url, batch)
    assert statuses(body) == ["stored"] * 5
    assert len(server.writes) == 1
    write = server.writes[0]
    assert write["query"] == {"org": "home", "bucket": "events", "precision": "ns"}
    expected = [point_line(to_record(check_envelope(event))) for event in batch]
    assert write["lines"] == expected
    assert len(server.points) == 5
    _, again = await post_batch(client, url, batch)
    assert statuses(again) == ["duplicate"] * 5
    assert len(server.writes) == 1


async def test_query_answers_the_same_as_sqlite(
    start_storage: StartStorage,
    client: aiohttp.ClientSession,
    standin: tuple[str, InfluxV2StandIn],
) -> None:
    influx_url, server = standin
    v2_url, _ = await start_storage(**v2_settings(influx_url))
    sqlite_url, _ = await start_storage()
    batch = query_batch()
    for url in (v2_url, sqlite_url):
        _, body = await post_batch(client, url, batch)
        assert statuses(body) == ["stored"] * 5
    for params in (
        {},
        {"entity_id": "sensor.a"},
        {"event_type": "call_service"},
        {"start_time": "2d ago", "limit": 3},
        {"start_time": "2d ago", "end_time": "150m ago"},
        {"entity_id": 'quote " and ${x}'},
    ):
        status, from_v2 = await get_events(client, v2_url, **params)
        assert status == 200, from_v2
        _, from_sqlite = await get_events(client, sqlite_url, **params)
        for a, b in zip(from_v2["events"], from_sqlite["events"], strict=True):
            assert {k: v for k, v in a.items() if v != b[k]} == {}, (b, params)
        assert from_v2 == from_sqlite, params
    assert 'r.entity_id == "quote \\" and \\${x}"' in server.queries[-1]
    status, body = await get_events(client, v2_url, entity_id="refuse me")
    assert status == 400
    assert "compilation failed" in body["error"]["message"]


async def test_refused_points_are_rejected_alone_and_outages_are_503(
    start_storage: StartStorage,
    client: aiohttp.ClientSession,
    standin: tuple[str, InfluxV2StandIn],
) -> None:
    influx_url, server = standin
    server.refuse.add("refused_event")
    url, service = await start_storage(**v2_settings(influx_url, retry_after_s=30))
    batch = [envelope(f"sensor.r{i}") for i in range(5)]
    batch.insert(2, envelope(event_type="refused_event", entity_id="sensor.x"))
    _, body = await post_batch(client, url, batch)
    assert statuses(body) == ["stored", "stored", "rejected", "stored", "stored", "stored"]
    assert "partial write" in body["results"][2]["error"]["message"]
    assert len(server.points) == 5
    server.down = True
    async with client.post(
        f"{url}/api/v1/events/batch", json={"events": [envelope()]}, headers=AUTH
    ) as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "4"  # InfluxDB's own Retry-After wins
    async with client.get(f"{url}/api/v1/health") as response:
        assert response.status == 503
    server.down = False
    async with client.get(f"{url}/api/v1/health", headers=AUTH) as response:
        assert response.status == 200
        health = await response.json()
    assert health["dependencies"]["influxdb-v2"]["status"] == "healthy"
    assert service.stats()["influxdb-v2"]["bucket"] == "events"


async def test_start_checks_the_bucket_and_token(
    standin: tuple[str, InfluxV2StandIn], tmp_path: Path
) -> None:
    influx_url, _ = standin
    for overrides, message in (
        ({"influx_bucket": "missing"}, "bucket 'missing' not found in org 'home'"),
        ({"influx_token": "wrong"}, "refused the token"),
        ({"influx_url": "http://127.0.0.1:9"}, "unreachable"),
    ):
        service = StorageService(StorageSettings(**v2_settings(influx_url, **overrides)))
        with pytest.raises(StartupError, match=message) as caught:
            await service.start()
        assert "\n" not in str(caught.value)
