"""Enrichment in front of the real storage service on a SQLite file: what a user runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from ha_ingestor_services.connections import ServiceRunner
from ha_ingestor_services.storage.service import StorageService
from ha_ingestor_services.storage.settings import StorageSettings
from ha_ingestor_services.web import create_app
from tests.services.conftest import AUTH

from .conftest import OWM_KEY, STORAGE_TOKEN, StartEnrichment, WeatherAPI
from .helpers import HA_WEATHER, batch, envelope


async def test_enrichment_into_storage_on_sqlite(
    start_enrichment: StartEnrichment,
    weather_api: WeatherAPI,
    client: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    storage = StorageService(StorageSettings(sqlite_path=str(tmp_path / "events.db")))
    runner = ServiceRunner(create_app(storage, token=STORAGE_TOKEN))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        await _scenario(f"http://{host}:{port}", runner, start_enrichment, weather_api, client)
    finally:
        await runner.cleanup()


async def _scenario(
    storage_url: str,
    storage_runner: ServiceRunner,
    start_enrichment: StartEnrichment,
    weather_api: WeatherAPI,
    client: aiohttp.ClientSession,
) -> None:
    enrichment = await start_enrichment(
        storage_urls=(storage_url,),
        weather_provider="openweathermap",
        openweathermap_api_key=OWM_KEY,
        openweathermap_url=weather_api.url,
    )
    now = datetime.now(UTC)
    at = [(now - timedelta(seconds=n)).isoformat() for n in range(3)]
    from_provider = envelope(timestamp=at[0])
    from_home = envelope(
        entity_id="sensor.power", state="-12.5", weather=HA_WEATHER, timestamp=at[1]
    )
    malformed = envelope(entity_id="not an entity", timestamp=at[2])
    body = batch(from_provider, from_home, malformed)

    async with client.post(enrichment.url + "/api/v1/events/batch", json=body, headers=AUTH) as r:
        assert r.status == 200
        answer = await r.json()
    assert [result["status"] for result in answer["results"]] == ["stored", "stored", "rejected"]

    # Sent again (the integration retrying after a lost answer): one copy stored.
    async with client.post(enrichment.url + "/api/v1/events/batch", json=body, headers=AUTH) as r:
        again = await r.json()
    assert [result["status"] for result in again["results"]] == [
        "duplicate",
        "duplicate",
        "rejected",
    ]

    query = {"start_time": "1h ago"}
    async with client.get(storage_url + "/api/v1/events", params=query, headers=_auth()) as r:
        assert r.status == 200
        stored: list[dict[str, Any]] = orjson.loads(await r.read())["events"]
    by_id = {event["event_id"]: event for event in stored}
    assert set(by_id) == {from_provider["event_id"], from_home["event_id"]}
    provider_row = by_id[from_provider["event_id"]]
    assert provider_row["domain"] == "sensor"
    assert provider_row["value"] == 22.5
    assert provider_row["unit"] == "°C"
    assert provider_row["weather_temp_c"] == 11.5
    assert provider_row["weather_condition"] == "rainy"
    assert provider_row["processing_time_ms"] is not None
    home_row = by_id[from_home["event_id"]]
    assert home_row["value"] == -12.5
    assert (home_row["weather_humidity"], home_row["weather_pressure_hpa"]) == (87.0, 1008.0)
    assert len(weather_api.calls) == 1

    # Storage gone: the enrichment answers 503 and keeps nothing.
    await storage_runner.cleanup()
    async with client.post(
        enrichment.url + "/api/v1/events/batch", json=batch(envelope()), headers=AUTH
    ) as r:
        assert r.status == 503
        assert "Retry-After" in r.headers


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {STORAGE_TOKEN}"}
