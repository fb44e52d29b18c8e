"""Issue 10 for the weather step: an upstream that echoes the request URL must not leak
any part of the OpenWeatherMap key; a batch cannot make unbounded upstream calls."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any
from urllib.parse import quote, quote_plus

import aiohttp
import pytest
from aiohttp import web

from ha_ingestor_services.enrichment.openweathermap import OpenWeatherMap, ProviderError
from ha_ingestor_services.enrichment.settings import EnrichmentSettings
from ha_ingestor_services.enrichment.weather import MAX_LOOKUPS_PER_BATCH, WeatherStep
from tests.pipeline.fakes import FakeClock
from tests.pipeline.fault_server import FaultServer
from tests.services.conftest import AUTH, Serve

from .conftest import Enrichment, WeatherAPI
from .helpers import envelope

# Characters that URL encoding changes, so the encoded forms differ from the key.
ECHO_KEY = "SeCrEtKeY/+ 0123456789abcdef0123456789"
KEY_STARTS = ("SeCrEt", quote("SeCrEt/"), "SeCrEtKeY%2F", "SeCrEtKeY/%2B", "SeCrEtKeY%2F%2B")


def echo_app() -> web.Application:
    """Answers with the request's URL in the body, after ``pad`` characters: a cut at
    any position lands somewhere in the key for one of the paddings."""

    async def weather(request: web.Request) -> web.Response:
        pad = "." * 12 * int(request.query["lat"][-1])
        status = 200 if request.query.get("lon", "").startswith("9") else 400
        return web.Response(
            status=status, text=f"bad request{pad}: {request.url} ({request.path_qs})"
        )

    app = web.Application()
    app.router.add_get("/data/2.5/weather", weather)
    return app


async def post_batch(
    session: aiohttp.ClientSession, url: str, events: list[dict[str, Any]]
) -> tuple[int, dict[str, Any]]:
    async with session.post(
        url + "/api/v1/events/batch", json={"events": events}, headers=AUTH
    ) as answer:
        return answer.status, await answer.json()


def assert_no_key(text: str) -> None:
    for start in (*KEY_STARTS, quote(ECHO_KEY, safe=""), quote_plus(ECHO_KEY)):
        assert start not in text, (start, text)


async def test_an_echoing_upstream_does_not_leak_the_key(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    url = await serve(echo_app())
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()
    async with aiohttp.ClientSession() as session:
        provider = OpenWeatherMap(url, ECHO_KEY, session, timeout_s=2.0, clock=clock)
        messages = []
        # lat's last digit is the padding: the cut (120 characters) falls before, inside
        # and after the key; lon 9... answers 200 with the echo (not JSON).
        for latitude in (10.0, 10.3, 10.6, 10.9):
            for longitude in (1.0, 9.0):
                with pytest.raises(ProviderError) as caught:
                    await provider.current(latitude, longitude, 1)
                messages.append(str(caught.value))
        step = WeatherStep(provider, clock=clock)
        await step.resolve([envelope(location={"latitude": 20.1, "longitude": 1.0})])
        health = step.health()[1]
        snapshot = str(step.snapshot())
        await step.close()
    assert any("bad request" in message for message in messages)
    logs = "\n".join(
        record.getMessage() for record in caplog.records if record.name.startswith("ha_ingestor")
    )
    for text in (*messages, health, snapshot, logs):
        assert_no_key(text)
    assert "***" in messages[0]


async def test_a_batch_of_many_locations_makes_a_bounded_number_of_calls(
    enrichment: Enrichment, weather_api: WeatherAPI, storage: FaultServer
) -> None:
    """5,000 distinct places in one batch: 20 upstream calls (the default), the other
    events stored without weather, saying why; the next batch looks up the next ones."""
    places = [
        envelope(location={"latitude": index // 100 - 25, "longitude": index % 100})
        for index in range(5000)
    ]
    async with aiohttp.ClientSession() as session:
        status, body = await post_batch(session, enrichment.url, places)
        assert status == 200
        assert {result["status"] for result in body["results"]} == {"stored"}
        assert len(weather_api.calls) == MAX_LOOKUPS_PER_BATCH
        sent = list({event["event_id"]: event for event in storage.received}.values())
        counts = Counter(event["processing"]["weather_status"] for event in sent)
        assert counts == {"provider": 20, "too_many_locations": 4980}
        skipped = next(e for e in sent if e["processing"]["weather_status"] != "provider")
        assert skipped["weather"] is None
        # The same places again: the 20 come from the cache, 20 more are looked up.
        status, _ = await post_batch(session, enrichment.url, places)
        assert status == 200
        assert len(weather_api.calls) == 2 * MAX_LOOKUPS_PER_BATCH
    snapshot = enrichment.service.stats()["weather"]
    assert snapshot["lookups_skipped"] == 4980 + 4960


@pytest.mark.parametrize("lookups", [0, 1001])
def test_the_lookup_limit_is_checked(lookups: int) -> None:
    with pytest.raises(ValueError, match="weather_max_lookups: "):
        EnrichmentSettings(storage_token="t", weather_max_lookups=lookups)
