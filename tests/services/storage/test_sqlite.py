"""The storage service on a real SQLite file, through its HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.influxd import free_port
from ha_ingestor_services.contract import DependencyHealth
from tests.services.conftest import AUTH

from .conftest import StartStorage, ago, envelope, get_events, post_batch, statuses


async def test_same_batch_twice_is_stored_once(
    start_storage: StartStorage, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url, _ = await start_storage()
    batch = [envelope(f"sensor.s{i}") for i in range(20)]
    status, first = await post_batch(client, url, batch)
    assert status == 200
    assert statuses(first) == ["stored"] * 20
    status, second = await post_batch(client, url, batch)
    assert status == 200
    assert statuses(second) == ["duplicate"] * 20
    # The same id twice in one batch: the second copy is a duplicate.
    again = envelope("sensor.twice")
    _, body = await post_batch(client, url, [again, again])
    assert statuses(body) == ["stored", "duplicate"]
    # Old and new mixed in one statement (a chunk of 5 rows): each gets its own answer.
    new, newer = envelope("sensor.new"), envelope("sensor.newer")
    _, body = await post_batch(client, url, [batch[0], new, batch[1], newer, newer])
    assert statuses(body) == ["duplicate", "stored", "duplicate", "stored", "duplicate"]
    with contextlib.closing(sqlite3.connect(tmp_path / "events.db")) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 23
    _, answer = await get_events(client, url, limit=1000)
    assert len(answer["events"]) == 23


async def test_mixed_batch_rejects_only_the_bad_events(
    start_storage: StartStorage, client: aiohttp.ClientSession
) -> None:
    url, service = await start_storage()
    good = [envelope("sensor.a"), envelope("sensor.b")]
    no_id = envelope("sensor.c")
    del no_id["event_id"]
    bad_time = envelope("sensor.d")
    bad_time["timestamp"] = "yesterday"
    too_old = envelope("sensor.e")
    too_old["timestamp"] = "1500-01-01T00:00:00Z"  # outside int64 nanoseconds
    not_object = "just text"
    status, body = await post_batch(
        client, url, [good[0], no_id, bad_time, too_old, not_object, good[1]]
    )
    assert status == 200
    assert statuses(body) == ["stored", "rejected", "rejected", "rejected", "rejected", "stored"]
    errors = [result.get("error") for result in body["results"]]
    assert errors[1]["details"]["field"] == "event_id"
    assert errors[2]["details"]["field"] == "timestamp"
    assert errors[3]["details"]["field"] == "timestamp"
    assert "1678" in errors[3]["message"]
    _, answer = await get_events(client, url)
    assert {event["entity_id"] for event in answer["events"]} == {"sensor.a", "sensor.b"}
    assert service.stats()["rejected_by_code"] == {"VALIDATION_ERROR": 1}  # the one storage saw


async def test_enriched_parts_are_stored_and_wrong_types_ignored(
    start_storage: StartStorage, client: aiohttp.ClientSession
) -> None:
    url, _ = await start_storage()
    enriched = envelope(
        "sensor.power",
        "1500",
        normalized={
            "domain": "sensor",
            "object_id": "power",
            "value": 1500.0,
            "boolean": None,
            "unit": "W",
            "device_class": "power",
        },
        weather={
            "condition": "sunny",
            "temperature_c": 25,
            "humidity": 40.5,
            "pressure_hpa": 1015.2,
            "wind_speed_ms": 3.0,
            "source": "openweathermap",
            "observed_at": None,
        },
        processing={"processing_time_ms": 0.25, "processing_steps": ["validation"]},
    )
    mistyped = envelope(
        "light.kitchen",
        "on",
        normalized={"domain": 7, "value": "high"},
        weather=["not", "an", "object"],
        processing={"processing_time_ms": "slow"},
    )
    call_service = envelope(event_type="call_service", entity_id="light.kitchen", state=None)
    call_service["data"]["data"] = {"domain": "light", "service": "turn_on"}
    status, body = await post_batch(client, url, [enriched, mistyped, call_service])
    assert statuses(body) == ["stored"] * 3, body
    _, answer = await get_events(client, url)
    events = {event["event_id"]: event for event in answer["events"]}
    power = events[enriched["event_id"]]
    assert power["value"] == 1500.0
    assert power["unit"] == "W"
    assert power["device_class"] == "power"
    assert power["weather_condition"] == "sunny"
    assert power["weather_temp_c"] == 25.0
    assert power["weather_pressure_hpa"] == 1015.2
    assert power["processing_time_ms"] == 0.25
    assert power["timestamp"] == enriched["timestamp"]
    light = events[mistyped["event_id"]]
    # The mistyped parts were ignored: normalized here, weather from HA's context.
    assert light["domain"] == "light"
    assert light["value"] is None
    assert light["weather_condition"] == "rainy"
    assert light["weather_humidity"] == 87.0
    assert light["processing_time_ms"] is None
    assert light["attributes"] == {"unit_of_measurement": "°C", "device_class": "temperature"}
    service_call = events[call_service["event_id"]]
    assert service_call["event_type"] == "call_service"
    assert service_call["event_data"] == {"domain": "light", "service": "turn_on"}
    assert service_call["state"] is None


async def test_events_survive_a_restart(
    start_storage: StartStorage, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url, service = await start_storage()
    batch = [envelope(f"sensor.r{i}") for i in range(50)]
    _, body = await post_batch(client, url, batch)
    assert statuses(body) == ["stored"] * 50
    await service.stop()  # as the app's cleanup would; the file stays
    url2, _ = await start_storage()
    _, answer = await get_events(client, url2, limit=100)
    assert {event["event_id"] for event in answer["events"]} == {e["event_id"] for e in batch}
    _, again = await post_batch(client, url2, batch)
    assert statuses(again) == ["duplicate"] * 50


async def test_acknowledged_events_survive_sigkill(
    start_storage: StartStorage, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A child process serves storage; once it answered, killing it loses nothing."""
    path = tmp_path / "events.db"
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.services.storage.storage_child", str(path), str(port)],
        cwd=Path(__file__).parents[3],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])},
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.get_running_loop().run_in_executor(None, child.stdout.readline)
        assert line.strip() == b"ready", line
        url = f"http://127.0.0.1:{port}"
        acknowledged: list[str] = []
        for round_ in range(5):
            batch = [envelope(f"sensor.k{round_}_{i}") for i in range(200)]
            _, body = await post_batch(client, url, batch)
            assert statuses(body) == ["stored"] * 200
            acknowledged += [event["event_id"] for event in batch]
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    url2, _ = await start_storage(sqlite_path=str(path))
    _, answer = await get_events(client, url2, limit=10_000)
    assert sorted(event["event_id"] for event in answer["events"]) == sorted(acknowledged)


async def test_concurrent_requests_share_flushes(
    start_storage: StartStorage, client: aiohttp.ClientSession
) -> None:
    url, service = await start_storage(flush_interval_ms=50)
    batches = [[envelope(f"sensor.g{n}_{i}") for i in range(5)] for n in range(20)]
    answers = await asyncio.gather(*(post_batch(client, url, batch) for batch in batches))
    assert all(statuses(body) == ["stored"] * 5 for _, body in answers)
    writer = service.stats()["writer"]
    assert writer["flushed_events"] == 100
    assert writer["flushes"] < len(batches)
    assert writer["max_flush_events"] > 5
    # One event in two requests that share a flush: stored once, the other a duplicate.
    event = envelope("sensor.shared")
    answers = await asyncio.gather(*(post_batch(client, url, [event]) for _ in range(2)))
    assert sorted(statuses(body)[0] for _, body in answers) == ["duplicate", "stored"]
    assert service.stats()["writer"]["last_flush_events"] == 2


async def test_flush_max_events_starts_a_flush_early(
    start_storage: StartStorage, client: aiohttp.ClientSession
) -> None:
    # A long linger, but the size bound cuts it short: the answer comes fast.
    url, service = await start_storage(flush_interval_ms=1000, flush_max_events=10)
    # As with many senders: another request is always in progress, so a flush waits for
    # company (a lone request would go at once).
    service.writer.in_progress = lambda: 99
    started = asyncio.get_running_loop().time()
    _, body = await post_batch(client, url, [envelope(f"sensor.m{i}") for i in range(10)])
    assert statuses(body) == ["stored"] * 10
    assert asyncio.get_running_loop().time() - started < 0.9
    # Below the size bound the flush does wait for its interval.
    started = asyncio.get_running_loop().time()
    _, body = await post_batch(client, url, [envelope("sensor.late")])
    assert statuses(body) == ["stored"]
    assert asyncio.get_running_loop().time() - started >= 0.95
    assert service.stats()["writer"]["flushes"] == 2


async def test_query_filters_order_range_and_limit(
    start_storage: StartStorage, client: aiohttp.ClientSession
) -> None:
    url, _ = await start_storage()
    batch = [
        envelope("sensor.a", "1", when=ago(hours=26)),
        envelope("sensor.a", "2", when=ago(hours=3)),
        envelope("sensor.b", "3", when=ago(hours=2)),
        envelope("sensor.a", "4", when=ago(minutes=30)),
        envelope("sensor.b", "5", when=ago(minutes=5), event_type="custom_event"),
    ]
    _, body = await post_batch(client, url, batch)
    assert statuses(body) == ["stored"] * 5

    _, answer = await get_events(client, url)  # last 24 h, newest first
    assert [event["state"] for event in answer["events"]] == ["5", "4", "3", "2"]
    _, answer = await get_events(client, url, entity_id="sensor.a")
    assert [event["state"] for event in answer["events"]] == ["4", "2"]
    _, answer = await get_events(client, url, event_type="custom_event")
    assert [event["state"] for event in answer["events"]] == ["5"]
    for recent in ("1h ago", "60 minutes ago", "-1h", "-3600s"):
        _, answer = await get_events(client, url, start_time=recent)
        assert [event["state"] for event in answer["events"]] == ["5", "4"], recent
    _, answer = await get_events(client, url, start_time="2 days ago", end_time="150m ago")
    assert [event["state"] for event in answer["events"]] == ["2", "1"]
    _, answer = await get_events(client, url, start_time="2d ago", limit=2)
    assert [event["state"] for event in answer["events"]] == ["5", "4"]
    start = batch[1]["timestamp"]
    end = batch[2]["timestamp"].replace("Z", "+00:00")
    _, answer = await get_events(client, url, start_time=start, end_time=end)
    assert [event["state"] for event in answer["events"]] == ["3", "2"]
    event = answer["events"][0]
    assert set(event) == {
        "event_id",
        "timestamp",
        "event_type",
        "entity_id",
        "domain",
        "device_class",
        "unit",
        "source",
        "instance_id",
        "state",
        "value",
        "old_state",
        "attributes",
        "event_data",
        "context_id",
        "weather_temp_c",
        "weather_humidity",
        "weather_condition",
        "weather_pressure_hpa",
        "processing_time_ms",
    }
    assert event["value"] == 3.0
    assert event["context_id"] == "ctx-1"
    assert event["instance_id"] == "home-1"


async def test_query_errors_are_400(
    start_storage: StartStorage, client: aiohttp.ClientSession
) -> None:
    url, _ = await start_storage()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"start_time": "1h ago", "end_time": "2h ago"}, "start_time"),
        ({"start_time": "yesterday"}, "start_time"),
        ({"end_time": "3 fortnights ago"}, "end_time"),
        ({"start_time": "2025-01-01T00:00:00"}, "start_time"),  # no time zone
        ({"limit": "0"}, "limit"),
        ({"limit": "10001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"entity": "sensor.a"}, "entity"),
        ({"start_time": "99999999h ago"}, "start_time"),
    ]
    for params, field in cases:
        status, body = await get_events(client, url, **params)
        assert status == 400, (params, body)
        assert body["error"]["code"] == "VALIDATION_ERROR"
        assert body["error"]["details"]["field"] == field, (params, body)
    async with client.get(f"{url}/api/v1/events?limit=1&limit=2", headers=AUTH) as response:
        assert response.status == 400
        assert (await response.json())["error"]["details"]["field"] == "limit"
    status, body = await get_events(client, url, limit=10_000, start_time="now")
    assert status == 200
    assert body == {"events": []}


async def test_retention_deletes_old_events_and_rejects_late_ones(
    start_storage: StartStorage, client: aiohttp.ClientSession
) -> None:
    url, service = await start_storage()
    old = [envelope(f"sensor.old{i}", when=ago(days=3)) for i in range(3)]
    recent = [envelope(f"sensor.new{i}", when=ago(hours=1)) for i in range(2)]
    _, body = await post_batch(client, url, old + recent)
    assert statuses(body) == ["stored"] * 5
    await service.stop()

    # Started with a retention of one day: the start sweeps the old events away.
    url, service = await start_storage(retention_days=1)
    for _ in range(500):
        if service.stats()["last_retention_run"] is not None:
            break
        await asyncio.sleep(0.02)
    assert service.stats()["expired_events"] == 3
    _, answer = await get_events(client, url, start_time="1w ago")
    assert {event["entity_id"] for event in answer["events"]} == {"sensor.new0", "sensor.new1"}
    late = envelope("sensor.late", when=ago(days=2))
    _, body = await post_batch(client, url, [late, envelope("sensor.fresh")])
    assert statuses(body) == ["rejected", "stored"]
    assert body["results"][0]["error"]["code"] == "OUTSIDE_RETENTION"


async def test_locked_database_answers_503_then_recovers(
    start_storage: StartStorage, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url, _ = await start_storage(timeout_s=0.2, retry_after_s=7)
    blocker = sqlite3.connect(tmp_path / "events.db", isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        status, body = await post_batch(client, url, [envelope()])
        assert status == 503
        assert body["error"]["code"] == "SERVICE_UNAVAILABLE"
        async with client.post(
            f"{url}/api/v1/events/batch", json={"events": [envelope()]}, headers=AUTH
        ) as response:
            assert response.headers["Retry-After"] == "7"
        async with client.get(f"{url}/api/v1/health", headers=AUTH) as response:
            assert response.status == 503
            health = await response.json()
        assert health["dependencies"]["sqlite"]["status"] == "unhealthy"
        blocker.execute("ROLLBACK")
    finally:
        blocker.close()
    batch = [envelope()]
    status, body = await post_batch(client, url, batch)
    assert status == 200
    assert statuses(body) == ["stored"]
    async with client.get(f"{url}/api/v1/health") as response:
        assert response.status == 200


async def test_overlapping_health_checks_are_all_healthy(
    start_storage: StartStorage, client: aiohttp.ClientSession
) -> None:
    url, _ = await start_storage()

    async def check() -> int:
        async with client.get(f"{url}/api/v1/health") as response:
            return response.status

    assert await asyncio.gather(*(check() for _ in range(20))) == [200] * 20


async def test_health_stats_and_metrics(
    start_storage: StartStorage, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url, _ = await start_storage()
    async with client.get(f"{url}/api/v1/health", headers=AUTH) as response:
        assert response.status == 200
        health = await response.json()
    assert health["status"] == "healthy"
    assert health["service"] == "data-storage"
    assert health["dependencies"]["sqlite"]["status"] == "healthy"
    await post_batch(client, url, [envelope(), envelope()])
    async with client.get(f"{url}/api/v1/stats", headers=AUTH) as response:
        stats = await response.json()
    storage = stats["data-storage"]
    assert stats["events"]["stored"] == 2
    assert storage["backend"] == "sqlite"
    assert storage["writer"]["flushes"] == 1
    assert storage["writer"]["last_flush_events"] == 2
    assert storage["writer"]["last_flush_ms"] is not None
    assert storage["sqlite"]["path"] == str(tmp_path / "events.db")
    assert storage["sqlite"]["file_bytes"] > 0
    async with client.get(f"{url}/metrics", headers=AUTH) as response:
        text = await response.text()
    assert 'ha_ingestor_events_total{service="data-storage",status="stored"} 2.0' in text


async def test_single_event_endpoint(
    start_storage: StartStorage, client: aiohttp.ClientSession
) -> None:
    url, _ = await start_storage()
    event = envelope()
    async with client.post(f"{url}/api/v1/events", json=event, headers=AUTH) as response:
        assert response.status == 200
        body = await response.json()
    assert statuses(body) == ["stored"]
    assert body["metadata"]["processing_steps"] == ["validation", "storage"]
    async with client.post(f"{url}/api/v1/events", json=event, headers=AUTH) as response:
        assert statuses(await response.json()) == ["duplicate"]
    bad = envelope(when=None)
    bad["timestamp"] = "3000-01-01T00:00:00Z"
    async with client.post(f"{url}/api/v1/events", json=bad, headers=AUTH) as response:
        assert response.status == 422


async def test_health_calls_share_a_cached_probe(
    start_storage: StartStorage, client: aiohttp.ClientSession
) -> None:
    """200 open health calls (50 at a time) write the probe row a handful of times."""
    url, service = await start_storage(health_cache_s=2.0)
    probes = 0
    probe = service.backend.probe

    async def counting_probe() -> DependencyHealth:
        nonlocal probes
        probes += 1
        return await probe()

    service.backend.probe = counting_probe  # type: ignore[method-assign]

    async def check() -> int:
        async with client.get(f"{url}/api/v1/health") as response:
            return response.status

    for _ in range(4):
        assert await asyncio.gather(*(check() for _ in range(50))) == [200] * 50
    assert 1 <= probes <= 3, probes  # uncached: 200 probes, each a write transaction
