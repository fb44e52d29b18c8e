"""Fixtures of the storage tests: envelopes, storage apps on SQLite files and influxd."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from benchmarks.influxd import Influxd
from ha_ingestor_services.limits import Limits
from ha_ingestor_services.storage.service import StorageService
from ha_ingestor_services.storage.settings import StorageSettings
from ha_ingestor_services.web import create_app
from tests.services.conftest import AUTH, TOKEN, Serve

_DATABASES = itertools.count()


def envelope(
    entity_id: str = "sensor.temperature",
    state: str | None = "22.5",
    *,
    when: datetime | None = None,
    event_id: str | None = None,
    event_type: str = "state_changed",
    **extra: Any,
) -> dict[str, Any]:
    """An envelope as the integration sends it (the contract's event envelope)."""
    moment = when or datetime.now(UTC)
    data: dict[str, Any] = {
        "event_type": event_type,
        "entity_id": entity_id,
        "state": state,
        "old_state": "22.4",
        "attributes": {"unit_of_measurement": "°C", "device_class": "temperature"},
        "context": {"id": "ctx-1", "user_id": None, "parent_id": None},
    }
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "timestamp": moment.isoformat().replace("+00:00", "Z"),
        "source": "ha_ingestor",
        "data": data,
        "context": {
            "instance_id": "home-1",
            "weather": {"condition": "rainy", "temperature_c": 11.5, "humidity": 87},
        },
        **extra,
    }


def ago(**delta: float) -> datetime:
    return datetime.now(UTC) - timedelta(**delta)


def query_batch() -> list[dict[str, Any]]:
    """Five events over 26 hours (one empty state, one call_service) for query tests."""
    call_service = envelope(event_type="call_service", entity_id="light.kitchen", state=None)
    call_service["data"]["data"] = {"domain": "light", "service": "turn_on"}
    return [
        envelope("sensor.a", "1", when=ago(hours=26)),
        envelope("sensor.a", "2", when=ago(hours=3)),
        envelope("binary_sensor.door", "on", when=ago(hours=2)),
        envelope("sensor.a", "", when=ago(minutes=30)),
        call_service,
    ]


StartStorage = Callable[..., Awaitable[tuple[str, StorageService]]]


@pytest.fixture
def start_storage(serve: Serve, tmp_path: Any) -> StartStorage:
    """``url, service = await start_storage(**settings)``: a storage app on loopback.

    SQLite on ``tmp_path/events.db`` unless the settings say otherwise. Health is not
    cached unless ``health_cache_s`` says so: tests break a backend and look at once.
    """

    async def start(
        limits: Limits | None = None, health_cache_s: float = 0.0, **settings: Any
    ) -> tuple[str, StorageService]:
        settings.setdefault("sqlite_path", str(tmp_path / "events.db"))
        service = StorageService(StorageSettings(**settings))
        service.health_cache_s = health_cache_s
        app = create_app(service, token=TOKEN, limits=limits or Limits())
        return await serve(app), service

    return start


@pytest.fixture
def influx_settings(influxd_server: Influxd, socket_enabled: None) -> dict[str, Any]:
    """Settings for the shared influxd with a database of this test's own."""
    return {
        "backend": "influxdb",
        "influx_api": "v1",
        "influx_url": influxd_server.url,
        "influx_database": f"storage_test_{uuid.uuid4().hex[:8]}_{next(_DATABASES)}",
    }


async def post_batch(
    client: aiohttp.ClientSession, url: str, events: list[Any], **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    async with client.post(
        f"{url}/api/v1/events/batch", json={"events": events}, headers=AUTH, **kwargs
    ) as response:
        return response.status, await response.json()


async def get_events(
    client: aiohttp.ClientSession, url: str, **params: Any
) -> tuple[int, dict[str, Any]]:
    async with client.get(
        f"{url}/api/v1/events", params={k: str(v) for k, v in params.items()}, headers=AUTH
    ) as response:
        return response.status, await response.json()


def statuses(body: dict[str, Any]) -> list[str]:
    return [result["status"] for result in body["results"]]
