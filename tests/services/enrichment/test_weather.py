"""The weather step against the OpenWeatherMap stand-in: sources, cache, single flight,
TTL (injected clock), negative cache, and what a failing provider does to events."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import pytest

from ha_ingestor_services.enrichment.openweathermap import (
    OpenWeatherMap,
    ProviderError,
    condition_of,
    number,
    parse_current,
)
from ha_ingestor_services.enrichment.weather import (
    WeatherStep,
    from_home_assistant,
    location_key,
)
from tests.pipeline.fakes import FakeClock

from .conftest import OWM_KEY, WeatherAPI
from .helpers import HA_WEATHER, HOME, envelope


def make_step(
    api: WeatherAPI,
    session: aiohttp.ClientSession,
    clock: FakeClock,
    *,
    key: str = OWM_KEY,
    timeout_s: float = 2.0,
    **options: Any,
) -> WeatherStep:
    provider = OpenWeatherMap(api.url, key, session, timeout_s=timeout_s, clock=clock)
    return WeatherStep(provider, clock=clock, **options)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# -- mapping ----------------------------------------------------------------------------


def test_home_assistant_weather_is_mapped() -> None:
    assert from_home_assistant(HA_WEATHER) == {
        "condition": "rainy",
        "temperature_c": 11.5,
        "humidity": 87.0,
        "pressure_hpa": 1008.0,
        "wind_speed_ms": None,
        "source": "home_assistant",
        "observed_at": None,
    }
    with_time = from_home_assistant({**HA_WEATHER, "observed_at": "2026-11-26T21:00:00+01:00"})
    assert with_time is not None
    assert with_time["observed_at"] == "2026-11-26T20:00:00Z"
    odd = from_home_assistant(
        {"condition": "sunny", "temperature_c": "warm", "humidity": True, "observed_at": 5}
    )
    assert odd is not None
    assert (odd["temperature_c"], odd["humidity"], odd["observed_at"]) == (None, None, None)


def test_home_assistant_weather_that_says_nothing_is_none() -> None:
    assert from_home_assistant({"entity_id": "weather.home", "condition": "unavailable"}) is None
    assert from_home_assistant({}) is None


def test_location_is_rounded() -> None:
    assert location_key(HOME, 2) == (52.37, 4.89)
    assert location_key({"latitude": -0.001, "longitude": 0.004}, 2) == (0.0, 0.0)
    assert location_key({"latitude": None, "longitude": 4.0}, 2) is None
    assert location_key({"latitude": True, "longitude": 4.0}, 2) is None
    assert location_key(None, 2) is None


@pytest.mark.parametrize(
    ("code", "icon", "condition"),
    [
        (800, "01d", "sunny"),
        (800, "01n", "clear-night"),
        (500, "10d", "rainy"),
        (502, "10d", "pouring"),
        (211, "11d", "lightning"),
        (804, "04n", "cloudy"),
        (999, "01d", None),
        ("800", "01d", None),
    ],
)
def test_openweathermap_conditions(code: object, icon: str, condition: str | None) -> None:
    assert condition_of(code, icon) == condition


def test_openweathermap_answer_is_parsed() -> None:
    weather = parse_current(
        {
            "weather": [{"id": 801, "icon": "02d"}],
            "main": {"temp": -3.25, "humidity": 40, "pressure": 1030},
            "wind": {"speed": 7},
            "dt": 1_764_000_000,
        }
    )
    assert weather == {
        "condition": "partlycloudy",
        "temperature_c": -3.25,
        "humidity": 40.0,
        "pressure_hpa": 1030.0,
        "wind_speed_ms": 7.0,
        "source": "openweathermap",
        "observed_at": "2025-11-24T16:00:00Z",
    }
    with pytest.raises(ProviderError):
        parse_current({"cod": 200})
    sparse = parse_current({"main": {}, "weather": "x", "wind": None, "dt": -1})
    assert sparse["condition"] is None
    assert sparse["observed_at"] is None


# -- the step against the stand-in -------------------------------------------------------


async def test_sources_in_order(
    weather_api: WeatherAPI, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    step = make_step(weather_api, client, clock)
    answers = await step.resolve(
        [
            envelope(weather=HA_WEATHER),
            envelope(),
            envelope(location=None),
            envelope(weather={"condition": "unknown"}),  # says nothing: provider instead
            envelope(location={"latitude": [1], "longitude": {}}),  # unchecked input
        ]
    )
    assert [status for _, status in answers] == [
        "home_assistant",
        "provider",
        "no_location",
        "provider",
        "no_location",
    ]
    assert answers[0][0] is not None
    assert answers[0][0]["source"] == "home_assistant"
    weather = answers[1][0]
    assert weather is not None
    assert weather["source"] == "openweathermap"
    assert weather["temperature_c"] == 11.5
    assert weather["condition"] == "rainy"
    assert weather_api.calls == [
        {"lat": "52.37", "lon": "4.89", "appid": OWM_KEY, "units": "metric"}
    ]
    assert step.snapshot()["events"]["provider"] == 2
    await step.close()


async def test_no_provider_means_not_configured() -> None:
    step = WeatherStep(None)
    answers = await step.resolve([envelope(), envelope(weather=HA_WEATHER)])
    assert [status for _, status in answers] == ["not_configured", "home_assistant"]
    assert step.health() == (True, "no provider configured; weather only from Home Assistant")


async def test_single_flight_across_batches_and_events(
    weather_api: WeatherAPI, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    """Many concurrent batches (and many events in each) for one location: one call."""
    weather_api.gate = asyncio.Event()
    step = make_step(weather_api, client, clock)
    batches = [[envelope() for _ in range(20)] for _ in range(25)]
    waiting = [asyncio.create_task(step.resolve(events)) for events in batches]
    while not weather_api.calls:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)  # every batch is now waiting on the one call
    weather_api.gate.set()
    results = await asyncio.gather(*waiting)
    assert len(weather_api.calls) == 1
    assert all(status == "provider" for answers in results for _, status in answers)
    snapshot = step.snapshot()
    assert snapshot["upstream_calls"] == 1
    assert snapshot["single_flight_joins"] == 24
    # Later batches are answered from the cache.
    answers = await step.resolve([envelope(), envelope()])
    assert [status for _, status in answers] == ["cache", "cache"]
    assert len(weather_api.calls) == 1
    await step.close()


async def test_one_call_per_rounded_location(
    weather_api: WeatherAPI, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    step = make_step(weather_api, client, clock, precision=2)
    near = {"latitude": 52.3729, "longitude": 4.8921}  # rounds to HOME's key
    far = {"latitude": 40.7128, "longitude": -74.006}
    answers = await step.resolve([envelope(), envelope(location=near), envelope(location=far)])
    assert [status for _, status in answers] == ["provider"] * 3
    assert sorted((call["lat"], call["lon"]) for call in weather_api.calls) == [
        ("40.71", "-74.01"),
        ("52.37", "4.89"),
    ]
    await step.close()


async def test_cache_expires_after_ttl(
    weather_api: WeatherAPI, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    step = make_step(weather_api, client, clock, cache_ttl_s=900)
    assert (await step.resolve([envelope()]))[0][1] == "provider"
    clock.advance(899)
    assert (await step.resolve([envelope()]))[0][1] == "cache"
    assert len(weather_api.calls) == 1
    weather_api.temperature = 3.0
    clock.advance(2)
    answer = (await step.resolve([envelope()]))[0]
    assert answer[1] == "provider"
    assert answer[0] is not None
    assert answer[0]["temperature_c"] == 3.0
    assert len(weather_api.calls) == 2
    await step.close()


async def test_failures_are_remembered_briefly(
    weather_api: WeatherAPI, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    weather_api.status = 500
    step = make_step(weather_api, client, clock, failure_ttl_s=60)
    assert await step.resolve([envelope(), envelope()]) == [(None, "unavailable")] * 2
    ok, detail = step.health()
    assert not ok
    assert "HTTP 500" in detail
    clock.advance(59)
    assert await step.resolve([envelope()]) == [(None, "unavailable")]
    assert len(weather_api.calls) == 1  # not hammered
    weather_api.status = 200
    clock.advance(2)
    assert (await step.resolve([envelope()]))[0][1] == "provider"
    assert step.health()[0]
    snapshot = step.snapshot()
    assert (snapshot["upstream_failures"], snapshot["negative_cache_hits"]) == (1, 1)
    await step.close()


async def test_rate_limit_keeps_the_provider_alone_for_retry_after(
    weather_api: WeatherAPI, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    weather_api.status = 429
    weather_api.retry_after = "120"
    step = make_step(weather_api, client, clock, failure_ttl_s=60)
    assert (await step.resolve([envelope()]))[0][1] == "unavailable"
    clock.advance(100)
    assert (await step.resolve([envelope()]))[0][1] == "unavailable"
    assert len(weather_api.calls) == 1
    await step.close()


async def test_wrong_api_key_says_so(
    weather_api: WeatherAPI, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    step = make_step(weather_api, client, clock, key="wrong")
    assert (await step.resolve([envelope()]))[0][1] == "unavailable"
    ok, detail = step.health()
    assert not ok
    assert "API key was refused" in detail
    assert "wrong" not in detail  # never the key itself
    await step.close()


async def test_slow_provider_does_not_hold_events_back(
    weather_api: WeatherAPI, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    weather_api.delay = 5.0
    step = make_step(weather_api, client, clock, timeout_s=0.2)
    started = time.monotonic()
    assert (await step.resolve([envelope()] * 10)) == [(None, "unavailable")] * 10
    assert time.monotonic() - started < 2.0
    await step.close()


async def test_unreachable_provider_opens_its_breaker(
    client: aiohttp.ClientSession, clock: FakeClock, socket_enabled: None
) -> None:
    """Three failed locations in a row and the provider is not called for a while."""
    api = WeatherAPI(url="http://127.0.0.1:9")  # discard port: refused
    step = make_step(api, client, clock)
    for n in range(5):
        answers = await step.resolve([envelope(location={"latitude": n, "longitude": 1.0})])
        assert answers == [(None, "unavailable")]
    assert step.snapshot()["upstream_failures"] == 5
    assert "circuit is open" in (step.snapshot()["last_error"] or "")
    await step.close()


async def test_close_cancels_calls_in_flight(
    weather_api: WeatherAPI, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    weather_api.gate = asyncio.Event()
    step = make_step(weather_api, client, clock)
    waiting = asyncio.create_task(step.resolve([envelope()]))
    while not weather_api.calls:
        await asyncio.sleep(0.005)
    await step.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    weather_api.gate.set()


async def test_cache_is_bounded(
    weather_api: WeatherAPI, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    step = make_step(weather_api, client, clock, max_entries=3)
    for n in range(5):
        await step.resolve([envelope(location={"latitude": float(n), "longitude": 0.0})])
    assert step.snapshot()["cache_entries"] == 3
    await step.close()


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3.0), (2.5, 2.5), (True, None), ("1", None), (float("nan"), None), (10**400, None)],
)
def test_number(value: object, expected: float | None) -> None:
    assert number(value) == expected


async def test_api_key_never_shows_in_errors(
    client: aiohttp.ClientSession,
    clock: FakeClock,
    socket_enabled: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broken answer makes aiohttp quote the URL, which carries the key (appid=)."""

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 ZZZ broken\r\n\r\n")
        await writer.drain()
        writer.close()

    caplog.set_level(logging.DEBUG)
    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        step = make_step(WeatherAPI(url=f"http://127.0.0.1:{port}"), client, clock)
        assert await step.resolve([envelope()]) == [(None, "unavailable")]
        ok, detail = step.health()
        assert not ok
        assert OWM_KEY not in detail, detail
        assert OWM_KEY not in str(step.snapshot())
        # Three failures open the client's breaker, and it logs the last error.
        for latitude in (1, 2):
            await step.resolve([envelope(location={"latitude": latitude, "longitude": 0})])
        assert "pausing calls" in caplog.text
        assert "appid=***" in caplog.text
        assert OWM_KEY not in caplog.text
        await step.close()
    finally:
        server.close()
        await server.wait_closed()
