"""Fixtures of the enrichment tests: the real enrichment app on a loopback port, a real
receiver standing in for storage (`FaultServer`, or storage itself), and a local
stand-in for the OpenWeatherMap API (the one thing that lives on the internet)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web

from ha_ingestor_services.enrichment.service import EnrichmentService
from ha_ingestor_services.enrichment.settings import EnrichmentSettings
from ha_ingestor_services.limits import Limits
from ha_ingestor_services.web import create_app
from tests.pipeline.fakes import FakeClock
from tests.pipeline.fault_server import FaultServer
from tests.services.conftest import TOKEN, Serve

STORAGE_TOKEN = "storage-test-token"
OWM_KEY = "owm-test-key"


@dataclass
class WeatherAPI:
    """A stand-in for api.openweathermap.org's current weather API, counting calls.

    ``status`` other than 200 answers an error; ``gate`` (when set to an unset Event)
    holds every answer until it is set; ``delay`` answers late.
    """

    url: str = ""
    calls: list[dict[str, str]] = field(default_factory=list)
    status: int = 200
    retry_after: str | None = None
    delay: float = 0.0
    gate: asyncio.Event | None = None
    temperature: float = 11.5
    weather_id: int = 500
    icon: str = "10d"
    closing: asyncio.Event = field(default_factory=asyncio.Event)  # ends delays and gates

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/data/2.5/weather", self._current)
        return app

    async def _current(self, request: web.Request) -> web.Response:
        self.calls.append(dict(request.query))
        if self.gate is not None:
            await _first(self.gate.wait(), self.closing.wait())
        if self.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closing.wait(), self.delay)
        if request.query.get("appid") != OWM_KEY:
            return web.json_response({"cod": 401, "message": "Invalid API key."}, status=401)
        if self.status != 200:
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return web.json_response(
                {"cod": self.status, "message": "trouble"}, status=self.status, headers=headers
            )
        body = {
            "coord": {"lon": float(request.query["lon"]), "lat": float(request.query["lat"])},
            "weather": [{"id": self.weather_id, "main": "Rain", "icon": self.icon}],
            "main": {"temp": self.temperature, "pressure": 1008, "humidity": 87},
            "wind": {"speed": 3.6, "deg": 200},
            "dt": 1_764_000_000,
            "name": "Somewhere",
            "cod": 200,
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")


async def _first(*waits: Awaitable[Any]) -> None:
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def weather_api(serve: Serve) -> AsyncIterator[WeatherAPI]:
    api = WeatherAPI()
    api.url = await serve(api.app())
    yield api
    api.closing.set()  # before the server's shutdown waits on held answers


@pytest.fixture
async def storage(
    fault_server_factory: Callable[..., Awaitable[FaultServer]],
) -> FaultServer:
    """A real receiver of the storage contract, with failure switches."""
    return await fault_server_factory(token=STORAGE_TOKEN, name="data-storage")


@dataclass
class Enrichment:
    url: str
    service: EnrichmentService
    clock: FakeClock
    app: web.Application


StartEnrichment = Callable[..., Awaitable[Enrichment]]


@pytest.fixture
async def start_enrichment(serve: Serve) -> StartEnrichment:
    """``await start_enrichment(storage_urls=(...,), limits=Limits(...), **settings)``."""

    async def start(*, limits: Limits | None = None, **overrides: Any) -> Enrichment:
        settings: dict[str, Any] = {"storage_token": STORAGE_TOKEN, "storage_attempts": 1}
        settings.update(overrides)
        clock = FakeClock()
        service = EnrichmentService(EnrichmentSettings(**settings), clock=clock)
        app = create_app(service, token=TOKEN, limits=limits or Limits())
        return Enrichment(await serve(app), service, clock, app)

    return start


@pytest.fixture
async def enrichment(
    start_enrichment: StartEnrichment, storage: FaultServer, weather_api: WeatherAPI
) -> Enrichment:
    """Enrichment with storage and the OpenWeatherMap stand-in."""
    return await start_enrichment(
        storage_urls=(storage.url,),
        weather_provider="openweathermap",
        openweathermap_api_key=OWM_KEY,
        openweathermap_url=weather_api.url,
    )
