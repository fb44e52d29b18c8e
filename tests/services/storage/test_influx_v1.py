"""The storage service on a real influxd (Debian's influxdb 1.x) through API v1."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.influxd import Influxd, running_influxd
from tests.services.conftest import AUTH

from .conftest import StartStorage, envelope, get_events, post_batch, query_batch, statuses


def _write_line(server: Influxd, database: str, line: str) -> None:
    params = urllib.parse.urlencode({"db": database, "rp": "ha_ingestor"})
    with urllib.request.urlopen(f"{server.url}/write?{params}", data=line.encode(), timeout=10):
        pass


async def test_events_are_written_as_the_schema_says(
    start_storage: StartStorage,
    client: aiohttp.ClientSession,
    influx_settings: dict[str, Any],
    influxd_server: Influxd,
) -> None:
    url, _ = await start_storage(**influx_settings)
    event = envelope("sensor.temperature", "21.5", processing={"processing_time_ms": 1.5})
    _, body = await post_batch(client, url, [event])
    assert statuses(body) == ["stored"]
    database = influx_settings["influx_database"]
    answer = influxd_server.query(database, 'SELECT * FROM "state_changed"')
    series = answer["results"][0]["series"][0]  # type: ignore[index]
    row = dict(zip(series["columns"], series["values"][0], strict=True))
    assert row["entity_id"] == "sensor.temperature"
    assert row["domain"] == "sensor"
    assert row["device_class"] == "temperature"
    assert row["unit"] == "°C"
    assert row["source"] == "ha_ingestor"
    assert row["instance_id"] == "home-1"
    assert row["state"] == "21.5"
    assert row["value"] == 21.5
    assert row["event_id"] == event["event_id"]
    assert row["weather_humidity"] == 87
    assert row["processing_time_ms"] == 1.5
    tags = influxd_server.query(database, 'SHOW TAG KEYS FROM "state_changed"')
    keys = {value[0] for value in tags["results"][0]["series"][0]["values"]}  # type: ignore[index]
    assert keys == {"entity_id", "domain", "device_class", "unit", "source", "instance_id"}
    policies = influxd_server.query(database, f'SHOW RETENTION POLICIES ON "{database}"')
    rows = policies["results"][0]["series"][0]["values"]  # type: ignore[index]
    assert ["ha_ingestor", "0s"] in [[row[0], row[1]] for row in rows if row[-1] is True]


async def test_same_batch_twice_keeps_one_copy(
    start_storage: StartStorage,
    client: aiohttp.ClientSession,
    influx_settings: dict[str, Any],
    influxd_server: Influxd,
) -> None:
    url, service = await start_storage(**influx_settings)
    batch = [envelope(f"sensor.s{i % 3}") for i in range(30)]
    _, first = await post_batch(client, url, batch)
    assert statuses(first) == ["stored"] * 30
    _, second = await post_batch(client, url, batch)
    assert statuses(second) == ["duplicate"] * 30
    await service.stop()
    # A new service has no memory of the ids: it answers "stored", InfluxDB still has one copy.
    url, _ = await start_storage(**influx_settings)
    _, third = await post_batch(client, url, batch)
    assert statuses(third) == ["stored"] * 30
    database = influx_settings["influx_database"]
    assert influxd_server.count(database, "state_changed", "event_id") == 30


async def test_query_answers_the_same_shape_as_sqlite(
    start_storage: StartStorage,
    client: aiohttp.ClientSession,
    influx_settings: dict[str, Any],
) -> None:
    influx_url, _ = await start_storage(**influx_settings)
    sqlite_url, _ = await start_storage()
    batch = query_batch()
    for url in (influx_url, sqlite_url):
        _, body = await post_batch(client, url, batch)
        assert statuses(body) == ["stored"] * 5
    for params in (
        {},
        {"entity_id": "sensor.a"},
        {"event_type": "call_service"},
        {"start_time": "2d ago", "limit": 3},
        {"start_time": "2d ago", "end_time": "150m ago"},
        {"entity_id": "it's \\ odd"},
        {"entity_id": "new\nline"},
        {"event_type": "nul\x00"},
    ):
        status, from_influx = await get_events(client, influx_url, **params)
        assert status == 200, from_influx
        _, from_sqlite = await get_events(client, sqlite_url, **params)
        assert from_influx == from_sqlite, params
    _, answer = await get_events(client, influx_url)
    assert [event["state"] for event in answer["events"]] == [None, None, "on", "2"]


async def test_events_influxdb_cannot_keep_are_rejected_alone(
    start_storage: StartStorage,
    client: aiohttp.ClientSession,
    influx_settings: dict[str, Any],
    influxd_server: Influxd,
) -> None:
    database = influx_settings["influx_database"]
    url, service = await start_storage(**influx_settings)
    # A field type the schema does not use, in the shard our events go to: InfluxDB
    # refuses our float "value" next to it.
    line = f'conflict,entity_id=sensor.x value="text" {time.time_ns()}'
    await asyncio.to_thread(_write_line, influxd_server, database, line)
    comment = envelope(event_type="#comment", entity_id="sensor.c")
    backslash = envelope(event_type="ends\\", entity_id="sensor.c")
    huge = envelope("sensor.huge")
    huge["data"]["attributes"] = {"blob": "x" * 70_000}
    conflicting = envelope(event_type="conflict", entity_id="sensor.x")
    good = [envelope(f"sensor.g{i}") for i in range(6)]
    batch = [good[0], comment, good[1], huge, good[2], conflicting, backslash, *good[3:]]
    _, body = await post_batch(client, url, batch)
    assert statuses(body) == [
        "stored",
        "rejected",
        "stored",
        "rejected",
        "stored",
        "rejected",
        "rejected",
        "stored",
        "stored",
        "stored",
    ]
    errors = [result["error"] for result in body["results"] if "error" in result]
    assert all(error["code"] == "INFLUX_REJECTED" for error in errors)
    assert "field type conflict" in errors[2]["message"]
    assert influxd_server.count(database, "state_changed", "event_id") == 6
    assert service.stats()["influxdb-v1"]["bisections"] > 0


async def _post_until_taken(
    client: aiohttp.ClientSession, url: str, events: list[Any]
) -> dict[str, Any]:
    """Post as the integration would: a 503 is retried (influxd answers "engine is
    closed" for a moment while it closes the shards of what was dropped)."""
    for _ in range(50):
        status, body = await post_batch(client, url, events)
        if status != 503:
            assert status == 200, body
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"still 503: {body}")


async def test_a_dropped_database_or_policy_is_created_again(
    start_storage: StartStorage,
    client: aiohttp.ClientSession,
    influx_settings: dict[str, Any],
    influxd_server: Influxd,
) -> None:
    database = influx_settings["influx_database"]
    url, _ = await start_storage(**influx_settings, retention_days=30)
    await asyncio.to_thread(influxd_server.execute, f'DROP DATABASE "{database}"')
    body = await _post_until_taken(client, url, [envelope()])
    assert statuses(body) == ["stored"]
    assert influxd_server.count(database, "state_changed", "event_id") == 1
    await asyncio.to_thread(
        influxd_server.execute, f'DROP RETENTION POLICY "ha_ingestor" ON "{database}"'
    )
    body = await _post_until_taken(client, url, [envelope()])
    assert statuses(body) == ["stored"]
    assert influxd_server.count(database, "state_changed", "event_id") == 1
    policies = influxd_server.query(database, f'SHOW RETENTION POLICIES ON "{database}"')
    rows = policies["results"][0]["series"][0]["values"]  # type: ignore[index]
    assert ["ha_ingestor", "720h0m0s"] in [[row[0], row[1]] for row in rows]


async def test_influxd_down_answers_503_with_retry_after(
    start_storage: StartStorage, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    with running_influxd() as server:
        url, _ = await start_storage(
            backend="influxdb",
            influx_url=server.url,
            influx_database="down",
            retry_after_s=9,
            timeout_s=2,
        )
        _, body = await post_batch(client, url, [envelope()])
        assert statuses(body) == ["stored"]
    async with client.post(
        f"{url}/api/v1/events/batch", json={"events": [envelope()]}, headers=AUTH
    ) as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "9"
        assert "unreachable" in (await response.json())["error"]["message"]
    status, body = await get_events(client, url)
    assert status == 503
    async with client.get(f"{url}/api/v1/health", headers=AUTH) as response:
        assert response.status == 503
        health = await response.json()
    assert health["dependencies"]["influxdb-v1"]["status"] == "unhealthy"
