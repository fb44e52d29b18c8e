"""The enrichment's status page at ``/``: open, and nothing secret while the weather
provider or storage fails (health's details name storage's URL and the upstream errors;
the tokens and the OpenWeatherMap key must appear nowhere)."""

from __future__ import annotations

import aiohttp

from tests.pipeline.fault_server import FaultServer
from tests.services.conftest import AUTH, TOKEN
from tests.services.status_page_checks import (
    assert_hides,
    assert_page_headers,
    assert_queries_never_fail,
    assert_shows,
    get_page,
)

from .conftest import OWM_KEY, STORAGE_TOKEN, Enrichment, WeatherAPI
from .helpers import batch, envelope


async def health_details(client: aiohttp.ClientSession, url: str) -> list[str]:
    async with client.get(f"{url}/api/v1/health", headers=AUTH) as response:
        body = await response.json()
    return [dependency["detail"] for dependency in body["dependencies"].values()]


async def test_page_while_weather_then_storage_fail(
    enrichment: Enrichment,
    storage: FaultServer,
    weather_api: WeatherAPI,
    client: aiohttp.ClientSession,
) -> None:
    secrets = (TOKEN, STORAGE_TOKEN, OWM_KEY, storage.url, weather_api.url)
    status, headers, page = await get_page(client, enrichment.url)
    assert status == 200
    assert_page_headers(headers)
    assert_shows(page, "Enrichment pipeline", "healthy", {"storage": "up", "weather": "up"})
    assert_hides(page, *secrets)

    weather_api.status = 500
    async with client.post(
        enrichment.url + "/api/v1/events/batch", json=batch(envelope()), headers=AUTH
    ) as response:
        assert response.status == 200
    weather_detail = (await health_details(client, enrichment.url))[1]
    assert "HTTP 500" in weather_detail
    status, _, page = await get_page(client, enrichment.url)
    assert status == 200
    assert_shows(page, "Enrichment pipeline", "degraded", {"storage": "up", "weather": "down"})
    assert_hides(page, *secrets, weather_detail)

    await storage.refuse()
    details = await health_details(client, enrichment.url)
    assert "unreachable" in details[0]
    status, _, page = await get_page(client, enrichment.url)
    assert status == 200
    assert_shows(page, "Enrichment pipeline", "unhealthy", {"storage": "down", "weather": "down"})
    assert_hides(page, *secrets, *details, "unreachable", "HTTP 500")
    await assert_queries_never_fail(client, enrichment.url)
