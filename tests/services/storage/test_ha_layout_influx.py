"""The home_assistant layout written to a real influxd (API v1) and the v2 stand-in."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from benchmarks.influxd import Influxd
from ha_ingestor_services.envelopes import check_envelope
from ha_ingestor_services.storage.backends.ha_layout import HaPoint, ha_line, ha_point
from ha_ingestor_services.storage.records import to_record
from ha_ingestor_services.storage.settings import StorageSettings
from tests.services.conftest import Serve

from .conftest import StartStorage, envelope, get_events, post_batch, statuses
from .influx_v2_standin import InfluxV2StandIn
from .test_influx_v2 import v2_settings

# Within the retention of 30 days the test gives.
WHEN = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=123456)


def _batch() -> list[dict[str, Any]]:
    """A sensor with a unit, a door, a text state, an unknown state, a call_service."""
    door = envelope("binary_sensor.door", "on", when=WHEN)
    door["data"]["attributes"] = {"device_class": "door", "time": "07:00"}
    text = envelope("sensor.mode", "eco", when=WHEN)
    text["data"]["attributes"] = {"note": "two\nlines"}
    call_service = envelope("light.kitchen", None, when=WHEN, event_type="call_service")
    call_service["data"]["data"] = {"domain": "light", "service": "turn_on"}
    return [
        envelope("sensor.living_room", "21.5", when=WHEN),
        door,
        text,
        envelope("sensor.gone", "unavailable", when=WHEN),
        call_service,
    ]


def _rows(server: Influxd, database: str, measurement: str) -> list[dict[str, Any]]:
    answer = server.query(database, f'SELECT * FROM "{measurement}"')
    series = answer["results"][0].get("series") or []  # type: ignore[index]
    return [dict(zip(s["columns"], row, strict=True)) for s in series for row in s["values"]]


def test_the_setting() -> None:
    assert StorageSettings().influx_layout == "ha_ingestor"
    with pytest.raises(ValueError, match="influx_layout: home_assistant .* --backend influxdb"):
        StorageSettings(influx_layout="home_assistant")
    with pytest.raises(ValueError, match="influx_layout: 'x' is not one of"):
        StorageSettings(backend="influxdb", influx_layout="x")  # type: ignore[arg-type]


async def test_v1_writes_home_assistants_points(
    start_storage: StartStorage,
    client: aiohttp.ClientSession,
    influx_settings: dict[str, Any],
    influxd_server: Influxd,
) -> None:
    settings = {
        **influx_settings,
        "influx_layout": "home_assistant",
        "influx_retention_policy": "autogen",  # the policy influxd made with the database
        "retention_days": 30,
    }
    database = influx_settings["influx_database"]
    url, service = await start_storage(**settings)
    _, body = await post_batch(client, url, _batch())
    assert statuses(body) == ["stored"] * 5
    stats = service.stats()["influxdb-v1"]
    assert stats["skipped_by_layout"] == {"no_state": 1, "not_state_changed": 1}
    assert stats["layout"] == "home_assistant"
    time = WHEN.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert _rows(influxd_server, database, "°C") == [
        {
            "time": time,
            "device_class_str": "temperature",
            "domain": "sensor",
            "entity_id": "living_room",
            "value": 21.5,
        }
    ]
    door = _rows(influxd_server, database, "binary_sensor.door")
    assert door == [
        {
            "time": time,
            "device_class_str": "door",
            "domain": "binary_sensor",
            "entity_id": "door",
            "state": "on",
            "time_": 700.0,  # InfluxDB reserves "time"
            "time_str": "07:00",
            "value": 1.0,
        }
    ]
    (mode,) = _rows(influxd_server, database, "sensor.mode")
    assert (mode["state"], mode["note_str"]) == ("eco", "two lines")
    measurements = influxd_server.query(database, "SHOW MEASUREMENTS")
    names = [row[0] for row in measurements["results"][0]["series"][0]["values"]]  # type: ignore[index]
    assert sorted(names) == ["binary_sensor.door", "sensor.mode", "°C"]
    # An existing policy is left as it is (autogen keeps its infinite duration).
    policies = influxd_server.query(database, f'SHOW RETENTION POLICIES ON "{database}"')
    rows = policies["results"][0]["series"][0]["values"]  # type: ignore[index]
    assert [row[:2] for row in rows] == [["autogen", "0s"]]
    # The query API refuses, naming the setting.
    status, answer = await get_events(client, url)
    assert status == 400
    assert "influx_layout" in answer["error"]["message"]
    # A resend (a new service: no memory of ids; and a new event id) lands on the same point.
    await service.stop()
    url, _ = await start_storage(**settings)
    again = _batch()
    again[0]["event_id"] = "another-id"
    _, body = await post_batch(client, url, again)
    assert statuses(body) == ["stored"] * 5
    assert influxd_server.count(database, "°C", "value") == 1
    assert influxd_server.count(database, "binary_sensor.door", "value") == 1
    # A later state of the same entity is a new point.
    _, body = await post_batch(client, url, [envelope("sensor.living_room", "22")])
    assert statuses(body) == ["stored"]
    assert influxd_server.count(database, "°C", "value") == 2


async def test_v2_writes_the_same_lines(
    start_storage: StartStorage,
    client: aiohttp.ClientSession,
    serve: Serve,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = InfluxV2StandIn()
    influx_url = await serve(server.app())
    settings = v2_settings(influx_url, influx_layout="home_assistant")
    url, service = await start_storage(**settings)
    batch = _batch()
    _, body = await post_batch(client, url, batch)
    assert statuses(body) == ["stored"] * 5
    points = [ha_point(to_record(check_envelope(event))) for event in batch[:3]]
    assert server.writes[0]["lines"] == [
        ha_line(point) for point in points if isinstance(point, HaPoint)
    ]
    assert len(server.points) == 3
    assert service.stats()["influxdb-v2"]["skipped_by_layout"] == {
        "no_state": 1,
        "not_state_changed": 1,
    }
    assert "events other than state_changed are not written" in caplog.text
    assert "unknown, unavailable and empty states are not written" in caplog.text
    status, answer = await get_events(client, url)
    assert status == 400
    assert "--influx-layout" in answer["error"]["message"]
    await service.stop()
    url, _ = await start_storage(**settings)
    _, body = await post_batch(client, url, batch)
    assert statuses(body) == ["stored"] * 5
    assert len(server.points) == 3  # the same measurement, tags and time: overwritten


async def test_v1_warns_before_changing_the_default_policy_of_a_database_with_data(
    start_storage: StartStorage,
    influx_settings: dict[str, Any],
    influxd_server: Influxd,
    caplog: pytest.LogCaptureFixture,
) -> None:
    database = influx_settings["influx_database"]
    influxd_server.execute(f'CREATE DATABASE "{database}"')
    params = urllib.parse.urlencode({"db": database})
    line = f"°C,domain=sensor,entity_id=t value=20 {time.time_ns()}"
    await asyncio.to_thread(
        urllib.request.urlopen, f"{influxd_server.url}/write?{params}", line.encode(), 10
    )
    await start_storage(**influx_settings, influx_layout="home_assistant")
    assert "give --influx-retention-policy autogen to write where they do" in caplog.text
