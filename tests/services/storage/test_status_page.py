"""The data storage's status page at ``/``: open, and nothing secret even while SQLite or
InfluxDB fails (health's details, which name the file, the URL and the error, stay off it)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiohttp
import pytest

from tests.services.conftest import AUTH, TOKEN, Serve
from tests.services.status_page_checks import (
    assert_hides,
    assert_page_headers,
    assert_queries_never_fail,
    assert_shows,
    get_page,
)

from .conftest import StartStorage
from .influx_v2_standin import InfluxV2StandIn
from .test_influx_v2 import v2_settings


@pytest.fixture
async def standin(serve: Serve) -> tuple[str, InfluxV2StandIn]:
    server = InfluxV2StandIn()
    return await serve(server.app()), server


async def health_detail(client: aiohttp.ClientSession, url: str, dependency: str) -> str:
    async with client.get(f"{url}/api/v1/health", headers=AUTH) as response:
        detail: str = (await response.json())["dependencies"][dependency]["detail"]
    return detail


async def test_page_on_sqlite_even_while_the_database_is_locked(
    start_storage: StartStorage, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url, _ = await start_storage(timeout_s=0.2)
    path = str(tmp_path / "events.db")
    status, headers, page = await get_page(client, url)
    assert status == 200
    assert_page_headers(headers)
    assert_shows(page, "Data storage", "healthy", {"sqlite": "up"})
    assert_hides(page, TOKEN, path, "WAL")

    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        detail = await health_detail(client, url, "sqlite")
        assert path in detail  # what health tells would leak here
        status, _, page = await get_page(client, url)
    finally:
        blocker.close()
    assert status == 200
    assert_shows(page, "Data storage", "unhealthy", {"sqlite": "down"})
    assert_hides(page, TOKEN, path, str(tmp_path), detail, "locked")
    await assert_queries_never_fail(client, url)


async def test_page_on_influxdb_hides_its_url_and_errors(
    start_storage: StartStorage,
    client: aiohttp.ClientSession,
    standin: tuple[str, InfluxV2StandIn],
) -> None:
    influx_url, server = standin
    url, _ = await start_storage(**v2_settings(influx_url))
    status, _, page = await get_page(client, url)
    assert status == 200
    assert_shows(page, "Data storage", "healthy", {"influxdb-v2": "up"})
    assert_hides(page, TOKEN, influx_url, "v2-token")

    server.down = True
    detail = await health_detail(client, url, "influxdb-v2")
    assert influx_url in detail
    status, _, page = await get_page(client, url)
    assert status == 200
    assert_shows(page, "Data storage", "unhealthy", {"influxdb-v2": "down"})
    host_port = influx_url.removeprefix("http://")
    assert_hides(page, TOKEN, influx_url, host_port, "v2-token", detail)
