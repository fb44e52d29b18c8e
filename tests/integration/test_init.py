"""Setting up an entry: events on the bus reach a real receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest.mock import patch

import pytest
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import EVENT_HOMEASSISTANT_FINAL_WRITE
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed

import custom_components.ha_ingestor
from custom_components.ha_ingestor.const import (
    CONF_API_TOKEN,
    CONF_DURABILITY,
    CONF_ENRICHMENT_URL,
    CONF_EVENT_TYPES,
    CONF_EXCLUDE_DOMAINS,
    CONF_LINGER_MS,
    CONF_STORAGE_URL,
    CONF_VERIFY_SSL,
    CONF_WEATHER_ENTITY,
    DOMAIN,
)
from custom_components.ha_ingestor.pipeline.retry import BackoffPolicy
from custom_components.ha_ingestor.runtime import outbox_path, own_entities
from tests.integration.conftest import TOKEN
from tests.pipeline.fault_server import BATCH_PATH, FaultServer

if TYPE_CHECKING:
    from homeassistant.core import HomeAssistant


@pytest.fixture
def storage(storage_server: FaultServer) -> FaultServer:
    return storage_server


@pytest.fixture
def enrichment(enrichment_server: FaultServer) -> FaultServer:
    return enrichment_server


def make_entry(
    storage_url: str, data: dict[str, Any] | None = None, **options: Any
) -> MockConfigEntry:
    options.setdefault(CONF_LINGER_MS, 0)
    return MockConfigEntry(
        domain=DOMAIN,
        title="HA Ingestor",
        unique_id=storage_url,
        data={
            CONF_STORAGE_URL: storage_url,
            CONF_API_TOKEN: TOKEN,
            CONF_VERIFY_SSL: True,
            **(data or {}),
        },
        options=options,
        minor_version=2,
    )


async def setup(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED


async def flush(entry: MockConfigEntry) -> None:
    assert (await entry.runtime_data.runtime.forwarder.flush(timeout=10)).done


def stored_states(server: FaultServer) -> list[tuple[str, str | None]]:
    by_id = {event["event_id"]: event for event in server.received}
    return [
        (by_id[event_id]["data"]["entity_id"], by_id[event_id]["data"]["state"])
        for event_id in server.stored_ids
    ]


async def test_state_changes_arrive_as_envelopes(hass: HomeAssistant, storage: FaultServer) -> None:
    entry = make_entry(storage.url)
    await setup(hass, entry)

    hass.states.async_set("sensor.temperature", "21.5", {"unit_of_measurement": "°C"})
    hass.states.async_set("sensor.temperature", "21.6", {"unit_of_measurement": "°C"})
    await hass.async_block_till_done()
    await flush(entry)

    assert stored_states(storage) == [
        ("sensor.temperature", "21.5"),
        ("sensor.temperature", "21.6"),
    ]
    second = storage.received[-1]
    assert second["source"] == "ha_ingestor"
    assert second["data"]["old_state"] == "21.5"
    assert second["data"]["attributes"] == {"unit_of_measurement": "°C"}
    assert second["context"]["location"]["time_zone"] == hass.config.time_zone
    assert second["context"]["instance_id"]
    assert storage.requests[-1].headers["Authorization"] == f"Bearer {TOKEN}"

    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.NOT_LOADED


async def test_filters_and_event_types(hass: HomeAssistant, storage: FaultServer) -> None:
    entry = make_entry(
        storage.url,
        **{CONF_EVENT_TYPES: ["state_changed", "custom_event"], CONF_EXCLUDE_DOMAINS: ["light"]},
    )
    await setup(hass, entry)
    own_entities(hass).add("sensor.ha_ingestor_outbox_depth")

    hass.states.async_set("light.kitchen", "on")
    hass.states.async_set("sensor.ha_ingestor_outbox_depth", "3")
    hass.states.async_set("switch.pump", "off")
    hass.bus.async_fire("custom_event", {"answer": 42})
    hass.bus.async_fire("other_event", {"ignored": True})
    await hass.async_block_till_done()
    await flush(entry)

    types = [
        (event["data"]["event_type"], event["data"].get("entity_id")) for event in storage.received
    ]
    assert types == [("state_changed", "switch.pump"), ("custom_event", None)]
    assert storage.received[-1]["data"]["data"] == {"answer": 42}
    await hass.config_entries.async_unload(entry.entry_id)


async def test_enrichment_primary_with_storage_fallback(
    hass: HomeAssistant, storage: FaultServer, enrichment: FaultServer
) -> None:
    entry = make_entry(storage.url, {CONF_ENRICHMENT_URL: enrichment.url})
    await setup(hass, entry)
    forwarder = entry.runtime_data.runtime.forwarder
    # Production backoff would take ~30 s to open the enrichment's breaker; shorten it.
    forwarder.update_config(replace(forwarder.config, backoff=BackoffPolicy(0.01, 0.05)))

    hass.states.async_set("sensor.a", "1")
    await hass.async_block_till_done()
    await flush(entry)
    assert stored_states(enrichment) == [("sensor.a", "1")]

    await enrichment.refuse()
    for value in range(2, 12):
        hass.states.async_set("sensor.a", str(value))
    await hass.async_block_till_done()
    await flush(entry)
    assert [state for _, state in stored_states(storage)] == [str(v) for v in range(2, 12)]
    await hass.config_entries.async_unload(entry.entry_id)


async def test_weather_travels_in_the_context(hass: HomeAssistant, storage: FaultServer) -> None:
    hass.states.async_set(
        "weather.home",
        "rainy",
        {
            "temperature": 53.6,
            "temperature_unit": "°F",
            "humidity": 87,
            "pressure": 1008,
            "pressure_unit": "hPa",
        },
    )
    entry = make_entry(storage.url, **{CONF_WEATHER_ENTITY: "weather.home"})
    await setup(hass, entry)

    hass.states.async_set("sensor.b", "on")
    await hass.async_block_till_done()
    await flush(entry)

    weather = storage.received[-1]["context"]["weather"]
    assert weather == {
        "entity_id": "weather.home",
        "condition": "rainy",
        "temperature_c": 12.0,
        "humidity": 87.0,
        "pressure_hpa": 1008.0,
    }
    await hass.config_entries.async_unload(entry.entry_id)


async def test_events_queued_while_down_survive_reload_and_stop(
    hass: HomeAssistant, storage: FaultServer
) -> None:
    entry = make_entry(storage.url, **{CONF_DURABILITY: "on_backlog"})
    await setup(hass, entry)
    await storage.refuse()

    for value in range(5):
        hass.states.async_set("sensor.c", str(value))
    await hass.async_block_till_done()
    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    for value in range(5, 8):
        hass.states.async_set("sensor.c", str(value))
    await hass.async_block_till_done()

    # Home Assistant stops (entries are not unloaded): everything reaches the file.
    hass.bus.async_fire(EVENT_HOMEASSISTANT_FINAL_WRITE)
    await hass.async_block_till_done()
    assert outbox_path(hass, entry.entry_id).exists()
    assert entry.runtime_data.runtime.outbox.closed

    await hass.config_entries.async_unload(entry.entry_id)
    await storage.restore()
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    await flush(entry)
    assert [state for _, state in stored_states(storage)] == [str(v) for v in range(8)]

    await hass.config_entries.async_remove(entry.entry_id)
    await hass.async_block_till_done()
    assert not outbox_path(hass, entry.entry_id).exists()


async def test_options_apply_live_without_losing_events(
    hass: HomeAssistant, storage: FaultServer
) -> None:
    entry = make_entry(storage.url)
    await setup(hass, entry)
    runtime = entry.runtime_data.runtime
    await storage.refuse()
    for value in range(3):
        hass.states.async_set("light.desk", str(value))
    await hass.async_block_till_done()

    # New durability (the outbox is reopened), a domain filter and a batch size, live.
    hass.config_entries.async_update_entry(
        entry,
        options={
            **entry.options,
            CONF_DURABILITY: "on_backlog",
            CONF_EXCLUDE_DOMAINS: ["light"],
            "batch_size": 2,
        },
    )
    # Events keep coming while the outbox is swapped: none may be lost.
    for _ in range(5):
        await asyncio.sleep(0)
        hass.states.async_set("switch.mid", "during")
        hass.states.async_set("switch.mid", "swap")
    await hass.async_block_till_done()  # the update listener has applied them
    for value in range(3, 6):
        hass.states.async_set("light.desk", str(value))  # now filtered out
        hass.states.async_set("switch.fan", str(value))
    await hass.async_block_till_done()
    assert entry.runtime_data.runtime is runtime  # not reloaded
    assert runtime.outbox.durability == "on_backlog"
    assert runtime.forwarder.config.batch_size == 2

    await storage.restore()
    await flush(entry)
    assert stored_states(storage) == [
        ("light.desk", "0"),
        ("light.desk", "1"),
        ("light.desk", "2"),
        *[("switch.mid", "during"), ("switch.mid", "swap")] * 5,
        ("switch.fan", "3"),
        ("switch.fan", "4"),
        ("switch.fan", "5"),
    ]
    assert max(len(request.event_ids) for request in storage.requests_to(BATCH_PATH)) <= 2


async def test_migrate_refuses_newer_entries(hass: HomeAssistant, storage: FaultServer) -> None:
    entry = make_entry(storage.url)
    entry = MockConfigEntry(domain=DOMAIN, unique_id=storage.url, data=dict(entry.data), version=2)
    entry.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.MIGRATION_ERROR


async def test_pause_survives_an_outbox_swap(hass: HomeAssistant, storage: FaultServer) -> None:
    entry = make_entry(storage.url)
    await setup(hass, entry)
    runtime = entry.runtime_data.runtime
    runtime.forwarder.pause()
    old_forwarder = runtime.forwarder

    hass.config_entries.async_update_entry(
        entry, options={**entry.options, CONF_DURABILITY: "on_backlog"}
    )
    await hass.async_block_till_done()
    hass.states.async_set("switch.kept", "on")
    await hass.async_block_till_done()

    assert runtime.forwarder is not old_forwarder
    assert runtime.forwarder.paused
    assert storage.requests_to(BATCH_PATH) == []
    runtime.forwarder.resume()
    await flush(entry)
    assert stored_states(storage) == [("switch.kept", "on")]


# -- set-up that cannot open the outbox ----------------------------------------------------

STRINGS = json.loads(
    (Path(custom_components.ha_ingestor.__file__).parent / "strings.json").read_text("utf-8")
)


def our_threads_and_tasks() -> list[str]:
    """The outbox's worker threads, the forwarder's and health checks' tasks still alive."""
    threads = [t.name for t in threading.enumerate() if t.name.startswith("ha_ingestor")]
    tasks = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("ha_ingestor")]
    return threads + tasks


async def set_up_the_integration(hass: HomeAssistant) -> dict[str, int]:
    """The integration without entries, and the bus listeners it leaves: the baseline.

    The shared HTTP session, which the entry uses and which listens for Home Assistant
    closing, is created now as well: it stays for good and is not the entry's.
    """
    assert await async_setup_component(hass, DOMAIN, {})
    async_get_clientsession(hass, verify_ssl=True)
    await hass.async_block_till_done()
    return hass.bus.async_listeners()


def block_outbox(path: Path, how: str) -> None:
    """Make the outbox file impossible to open: a real failure, no mock."""
    if how == "folder_is_a_file":  # creating the folder fails: OSError
        path.parent.parent.mkdir(parents=True, exist_ok=True)
        path.parent.write_text("not a folder")
    else:  # SQLite cannot open a folder: sqlite3.OperationalError
        path.mkdir(parents=True)


def unblock_outbox(path: Path, how: str) -> None:
    if how == "folder_is_a_file":
        path.parent.unlink()
    else:
        path.rmdir()


@pytest.mark.parametrize("how", ["folder_is_a_file", "outbox_is_a_folder"])
async def test_setup_retries_while_the_outbox_cannot_be_opened(
    hass: HomeAssistant, storage: FaultServer, how: str
) -> None:
    """Set-up is retried with a translated reason, leaks nothing, and works once it can."""
    hass.states.async_set("weather.home", "sunny")
    listeners = await set_up_the_integration(hass)
    entry = make_entry(storage.url, **{CONF_WEATHER_ENTITY: "weather.home"})
    path = outbox_path(hass, entry.entry_id)
    block_outbox(path, how)

    entry.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()

    assert entry.state is ConfigEntryState.SETUP_RETRY
    assert entry.error_reason_translation_key == "outbox_unavailable"
    placeholders = entry.error_reason_translation_placeholders
    assert placeholders is not None
    assert placeholders["path"] == str(path)
    message = STRINGS["exceptions"]["outbox_unavailable"]["message"]
    # Home Assistant drops the final period of a translated exception message.
    assert entry.reason == message.format(**placeholders).rstrip(".")
    # The weather listener set up before the outbox failed is gone again.
    assert hass.bus.async_listeners() == listeners
    assert our_threads_and_tasks() == []

    unblock_outbox(path, how)
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(minutes=2))
    await hass.async_block_till_done(wait_background_tasks=True)  # the retry runs there
    assert entry.state is ConfigEntryState.LOADED
    hass.states.async_set("sensor.after", "1")
    await hass.async_block_till_done()
    await flush(entry)
    assert stored_states(storage) == [("sensor.after", "1")]
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert our_threads_and_tasks() == []


async def test_a_failed_start_stops_what_had_started(
    hass: HomeAssistant, storage: FaultServer
) -> None:
    """A failure after the outbox, forwarder and health checks started stops them all."""
    hass.states.async_set("weather.home", "sunny")
    listeners = await set_up_the_integration(hass)
    entry = make_entry(storage.url, **{CONF_WEATHER_ENTITY: "weather.home"})
    entry.add_to_hass(hass)
    with patch(
        "custom_components.ha_ingestor.runtime.EventListener.subscribe",
        side_effect=RuntimeError("the last step fails"),
    ):
        assert not await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()

    assert entry.state is ConfigEntryState.SETUP_ERROR  # not a transient failure
    assert hass.bus.async_listeners() == listeners
    assert our_threads_and_tasks() == []
