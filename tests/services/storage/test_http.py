"""The storage app's HTTP surface: auth, limits, OpenAPI, settings and start failures."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import sqlite3
import threading
import warnings
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ha_ingestor_services.contract import ServiceUnavailable, StartupError
from ha_ingestor_services.envelopes import check_envelope
from ha_ingestor_services.limits import Limits
from ha_ingestor_services.storage.service import StorageService
from ha_ingestor_services.storage.settings import StorageSettings
from ha_ingestor_services.web import create_app
from tests.services.conftest import Serve

from .conftest import StartStorage, envelope, post_batch


async def test_auth_is_required_except_for_health(
    start_storage: StartStorage, client: aiohttp.ClientSession
) -> None:
    url, _ = await start_storage()
    for method, path in (
        ("POST", "/api/v1/events/batch"),
        ("POST", "/api/v1/events"),
        ("GET", "/api/v1/events"),
        ("GET", "/api/v1/stats"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/openapi.json"),
    ):
        async with client.request(method, f"{url}{path}", json={}) as response:
            assert response.status == 401, path
        async with client.request(
            method, f"{url}{path}", json={}, headers={"Authorization": "Bearer wrong"}
        ) as response:
            assert response.status == 403, path
            assert (await response.json())["error"]["code"] == "FORBIDDEN"
    async with client.get(f"{url}/api/v1/health") as response:
        assert response.status == 200


async def test_limits_answer_413(
    start_storage: StartStorage, client: aiohttp.ClientSession
) -> None:
    url, _ = await start_storage(limits=Limits(max_body_bytes=20_000, max_batch_events=10))
    status, body = await post_batch(client, url, [envelope() for _ in range(11)])
    assert status == 413
    assert body["error"]["code"] == "PAYLOAD_TOO_LARGE"
    big = envelope()
    big["data"]["attributes"] = {"blob": "x" * 30_000}
    status, body = await post_batch(client, url, [big])
    assert status == 413
    status, body = await post_batch(client, url, [envelope() for _ in range(10)])
    assert status == 200


async def test_openapi_document_matches_the_routes(
    start_storage: StartStorage, client: aiohttp.ClientSession, serve: Serve, tmp_path: Path
) -> None:
    service = StorageService(StorageSettings(sqlite_path=str(tmp_path / "doc.db")))
    app = create_app(service, token="t")
    url = await serve(app)
    routed = {
        (resource.canonical, route.method.lower())
        for resource in app.router.resources()
        for route in resource
        if route.method not in ("HEAD", "*")
    }
    async with client.get(
        f"{url}/api/v1/openapi.json", headers={"Authorization": "Bearer t"}
    ) as response:
        document = await response.json()
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == routed
    events = document["paths"]["/api/v1/events"]
    assert set(events) == {"get", "post"}
    names = {parameter["name"] for parameter in events["get"]["parameters"]}
    assert names == {"start_time", "end_time", "entity_id", "event_type", "limit"}
    assert "400" in events["get"]["responses"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"backend": "mysql"}, "backend: 'mysql' is not one of sqlite, influxdb"),
        ({"retention_days": -1}, "retention_days"),
        ({"flush_max_events": 0}, "flush_max_events"),
        ({"flush_interval_ms": float("nan")}, "flush_interval_ms"),
        ({"sqlite_path": " "}, "sqlite_path"),
        ({"sqlite_synchronous": "off"}, "sqlite_synchronous"),
        ({"backend": "influxdb", "influx_url": "localhost:8086"}, "influx_url"),
        ({"backend": "influxdb", "influx_url": "http://h:port"}, "influx_url"),
        ({"backend": "influxdb", "influx_api": "v3"}, "influx_api"),
        ({"backend": "influxdb", "influx_username": "u"}, "influx_password"),
        (
            {"backend": "influxdb", "influx_api": "v2", "influx_org": "o", "influx_token": "t"},
            "influx_bucket: is required for InfluxDB API v2",
        ),
    ],
)
def test_bad_settings_are_one_line_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        StorageSettings(**settings)
    assert "\n" not in str(caught.value)


async def test_start_fails_with_one_line(tmp_path: Path, socket_enabled: None) -> None:
    missing_folder = StorageService(StorageSettings(sqlite_path=str(tmp_path / "no" / "x.db")))
    with pytest.raises(StartupError, match="does not exist"):
        await missing_folder.start()
    not_sqlite = tmp_path / "text.db"
    not_sqlite.write_text("this is not a database " * 100)
    service = StorageService(StorageSettings(sqlite_path=str(not_sqlite)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(StartupError, match="cannot be opened"):
            await service.start()
        gc.collect()  # an unclosed connection warns when it is collected
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not _storage_threads()
    unreachable = StorageService(
        StorageSettings(backend="influxdb", influx_url="http://127.0.0.1:9", timeout_s=2)
    )
    with pytest.raises(StartupError, match="unreachable") as caught:
        await unreachable.start()
    assert "\n" not in str(caught.value)


async def test_newer_schema_is_refused(tmp_path: Path, socket_enabled: None) -> None:
    path = tmp_path / "events.db"
    service = StorageService(StorageSettings(sqlite_path=str(path)))
    await service.start()
    await service.stop()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:  # commit, then close
        conn.execute("UPDATE schema_version SET version = 99")
    service = StorageService(StorageSettings(sqlite_path=str(path)))
    with pytest.raises(StartupError, match="schema version 99"):
        await service.start()
    assert not _storage_threads()  # a refused start leaves no thread behind


def _storage_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("storage-sqlite")]


async def test_stop_finishes_what_was_accepted(tmp_path: Path, socket_enabled: None) -> None:
    settings = StorageSettings(sqlite_path=str(tmp_path / "events.db"), flush_interval_ms=200)
    service = StorageService(settings)
    await service.start()
    pending = [
        asyncio.create_task(service.process([check_envelope(envelope())], "c")) for _ in range(5)
    ]
    await asyncio.sleep(0.01)  # all five are waiting in the group-commit linger
    await service.stop()
    results = await asyncio.gather(*pending)
    assert [result[0]["status"] for result in results] == ["stored"] * 5
    with pytest.raises(ServiceUnavailable, match="shutting down"):
        await service.process([check_envelope(envelope())], "c")
