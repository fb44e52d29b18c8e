"""Sensors and devices: snapshots, live values, the feedback-loop exclusion, write rate.

Every test talks to a real receiver (`FaultServer`) on 127.0.0.1 through the real
delivery pipeline. `tick` fires the coordinator's next one-second refresh at once with
`async_fire_time_changed`. Time is not frozen: Home Assistant's test loop takes its clock
from `time.monotonic`, so under `freezer` every asyncio timer of the pipeline (sleeps,
aiohttp timeouts, the forwarder's backoff) would stand still; where a test needs the
wall clock ahead, it moves the coordinator's clock alone.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest.mock import patch

import pytest
from homeassistant.const import EVENT_STATE_CHANGED, STATE_UNAVAILABLE, STATE_UNKNOWN, Platform
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.loader import async_get_loaded_integration
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.ha_ingestor.const import (
    CONF_ENRICHMENT_URL,
    DOMAIN,
)
from custom_components.ha_ingestor.entity import FORWARDER_TRANSLATION_KEY, SERVICE_DEVICES
from custom_components.ha_ingestor.runtime import own_entities
from tests.integration.common import (
    ENTRY_ID,
    device_snapshot,
    flush,
    make_entry,
    setup_entry,
    snapshot_entities,
    state_of,
    tick,
    unload,
    wait_until,
)
from tests.pipeline.fault_server import FaultServer

if TYPE_CHECKING:
    from syrupy.assertion import SnapshotAssertion

    from custom_components.ha_ingestor.coordinator import IngestorCoordinator

FORWARDER = "sensor.ha_ingestor_forwarder"
# Its entity id keeps the old word: entity.RENAMED_KEYS.
DELIVERED = f"{FORWARDER}_events_forwarded"
DEPTH = f"{FORWARDER}_outbox_depth"
OLDEST_AGE = f"{FORWARDER}_oldest_pending_event_age"
STORAGE_CIRCUIT = "sensor.data_storage_circuit_breaker"


@pytest.fixture
def storage(storage_server: FaultServer) -> FaultServer:
    return storage_server


@pytest.fixture
def enrichment(enrichment_server: FaultServer) -> FaultServer:
    return enrichment_server


class _WallClockLater(datetime):
    """The coordinator's wall clock, 30 seconds ahead."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> _WallClockLater:
        return cls.fromtimestamp(datetime.now(tz).timestamp() + 30, tz)


def entity_ids(hass: HomeAssistant, entry: MockConfigEntry) -> set[str]:
    registry = er.async_get(hass)
    return {e.entity_id for e in er.async_entries_for_config_entry(registry, entry.entry_id)}


def count_refreshes(coordinator: IngestorCoordinator) -> list[int]:
    """Count the coordinator's refreshes from now on (one element, incremented)."""
    counter = [0]
    update = coordinator._async_update_data

    async def _counted() -> Any:
        counter[0] += 1
        return await update()

    coordinator._async_update_data = _counted  # type: ignore[method-assign]
    return counter


# -- snapshots ---------------------------------------------------------------------------


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_sensors(
    hass: HomeAssistant,
    storage: FaultServer,
    enrichment: FaultServer,
    snapshot: SnapshotAssertion,
) -> None:
    """Every sensor's registry entry and first state, with both services configured.

    All enabled (every entity must have a state to snapshot); which ones start disabled
    is `test_less_important_sensors_start_disabled`'s business.
    """
    entry = make_entry(storage.url, enrichment.url, entry_id=ENTRY_ID)
    with patch("custom_components.ha_ingestor.PLATFORMS", [Platform.SENSOR]):
        await setup_entry(hass, entry)
        snapshot_entities(hass, snapshot, entry.entry_id)
        await unload(hass, entry)


async def test_less_important_sensors_start_disabled(
    hass: HomeAssistant, storage: FaultServer, entity_registry: er.EntityRegistry
) -> None:
    """Fast-changing figures and circuit states start disabled; enabling one works."""
    entry = make_entry(storage.url, entry_id=ENTRY_ID)
    await setup_entry(hass, entry)
    disabled = {
        entity.entity_id
        for entity in er.async_entries_for_config_entry(entity_registry, entry.entry_id)
        if entity.disabled_by is er.RegistryEntryDisabler.INTEGRATION
    }
    assert disabled == {
        f"{FORWARDER}_events_per_minute",
        f"{FORWARDER}_delivery_latency_p95",
        f"{FORWARDER}_delivery_success_rate",
        OLDEST_AGE,
        STORAGE_CIRCUIT,
    }
    for entity_id in disabled:
        assert hass.states.get(entity_id) is None
    # Everything a dashboard needs is there from the start.
    for entity_id in (DELIVERED, DEPTH, f"{FORWARDER}_dead_letters", f"{FORWARDER}_status"):
        assert hass.states.get(entity_id) is not None

    # The user enables one: after the entry reloads it has a state, and its own
    # changes are not forwarded like any other entity of the integration.
    entity_registry.async_update_entity(STORAGE_CIRCUIT, disabled_by=None)
    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    assert state_of(hass, STORAGE_CIRCUIT) == "closed"
    assert STORAGE_CIRCUIT in own_entities(hass)
    await unload(hass, entry)


async def test_renamed_sensor_keeps_its_entity_id(
    hass: HomeAssistant, storage: FaultServer, entity_registry: er.EntityRegistry
) -> None:
    """An entity registered before a rename ("Events forwarded" became "Events delivered",
    issue 11) keeps the entity id it had: its unique id kept the old key."""
    old = entity_registry.async_get_or_create(
        Platform.SENSOR,
        DOMAIN,
        f"{ENTRY_ID}_events_forwarded",
        suggested_object_id="events_before_the_rename",
    )
    assert old.entity_id == "sensor.events_before_the_rename"
    entry = make_entry(storage.url, entry_id=ENTRY_ID)
    await setup_entry(hass, entry)

    renamed = entity_registry.async_get(old.entity_id)
    assert renamed is not None
    assert renamed.config_entry_id == entry.entry_id
    assert renamed.translation_key == "events_delivered"
    assert state_of(hass, old.entity_id) == "0"
    assert DELIVERED not in entity_ids(hass, entry)  # no second entity beside it
    await unload(hass, entry)


async def test_devices(
    hass: HomeAssistant,
    storage: FaultServer,
    enrichment: FaultServer,
    device_registry: dr.DeviceRegistry,
    snapshot: SnapshotAssertion,
) -> None:
    """The forwarder and one device per service, reached through the forwarder."""
    entry = make_entry(storage.url, enrichment.url, entry_id=ENTRY_ID)
    await setup_entry(hass, entry)

    devices = sorted(
        dr.async_entries_for_config_entry(device_registry, entry.entry_id),
        key=lambda device: device.name or "",
    )
    # The URLs carry the receivers' random ports, the version changes with releases.
    assert [device_snapshot(hass, device.id) for device in devices] == snapshot
    by_name = {device.name: device for device in devices}
    forwarder = by_name["HA Ingestor forwarder"]
    assert forwarder.sw_version == str(async_get_loaded_integration(hass, DOMAIN).version)
    assert forwarder.via_device_id is None
    # "Visit" opens the service's status page at / (the one page open without the token).
    assert by_name["Data storage"].configuration_url == storage.url + "/"
    assert by_name["Enrichment pipeline"].configuration_url == enrichment.url + "/"
    assert forwarder.configuration_url is None  # inside Home Assistant: nothing to visit
    for name in ("Data storage", "Enrichment pipeline"):
        assert by_name[name].via_device_id == forwarder.id
    await unload(hass, entry)


def test_device_names_are_translations() -> None:
    """Each device's translation key names it in strings.json; keys are valid ones."""
    strings_path = Path(__file__).parents[2] / "custom_components" / DOMAIN / "strings.json"
    strings = json.loads(strings_path.read_text(encoding="utf-8"))
    keys = {FORWARDER_TRANSLATION_KEY, *(key for key, _ in SERVICE_DEVICES.values())}
    assert set(strings["device"]) == keys
    for key in keys:
        assert re.fullmatch(r"[a-z0-9]([a-z0-9_-]*[a-z0-9])?", key), key
        assert strings["device"][key]["name"], key


async def test_storage_only(hass: HomeAssistant, storage: FaultServer) -> None:
    """Without an enrichment URL there is no enrichment device or entity."""
    entry = make_entry(storage.url, entry_id=ENTRY_ID)
    await setup_entry(hass, entry)

    devices = dr.async_entries_for_config_entry(dr.async_get(hass), entry.entry_id)
    assert sorted(device.name or "" for device in devices) == [
        "Data storage",
        "HA Ingestor forwarder",
    ]
    ids = entity_ids(hass, entry)
    assert STORAGE_CIRCUIT in ids
    assert not [entity_id for entity_id in ids if "enrichment" in entity_id]
    await unload(hass, entry)


async def test_removed_service_loses_its_device(
    hass: HomeAssistant, storage: FaultServer, enrichment: FaultServer
) -> None:
    """A reconfigure that drops the enrichment removes its device and entities."""
    entry = make_entry(storage.url, enrichment.url, entry_id=ENTRY_ID)
    await setup_entry(hass, entry)
    assert "sensor.enrichment_pipeline_circuit_breaker" in entity_ids(hass, entry)

    hass.config_entries.async_update_entry(
        entry, data={k: v for k, v in entry.data.items() if k != CONF_ENRICHMENT_URL}
    )
    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()

    devices = dr.async_entries_for_config_entry(dr.async_get(hass), entry.entry_id)
    assert sorted(device.name or "" for device in devices) == [
        "Data storage",
        "HA Ingestor forwarder",
    ]
    ids = entity_ids(hass, entry)
    assert not [entity_id for entity_id in ids if "enrichment" in entity_id]
    assert STORAGE_CIRCUIT in ids
    await unload(hass, entry)


# -- live values -------------------------------------------------------------------------


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_values_after_forwarding(hass: HomeAssistant, storage: FaultServer) -> None:
    entry = make_entry(storage.url, entry_id=ENTRY_ID)
    await setup_entry(hass, entry)
    assert state_of(hass, DELIVERED) == "0"
    assert state_of(hass, f"{FORWARDER}_last_successful_delivery") == STATE_UNKNOWN

    for value in range(25):
        hass.states.async_set("sensor.temperature", str(value))
    await hass.async_block_till_done()
    await flush(entry)
    await tick(hass)

    assert state_of(hass, DELIVERED) == "25"
    assert state_of(hass, f"{FORWARDER}_events_per_minute") == "25"
    assert state_of(hass, DEPTH) == "0"
    assert state_of(hass, OLDEST_AGE) == "0"
    assert state_of(hass, f"{FORWARDER}_dead_letters") == "0"
    assert state_of(hass, f"{FORWARDER}_events_dropped") == "0"
    assert state_of(hass, f"{FORWARDER}_delivery_success_rate") == "100.0"
    assert float(state_of(hass, f"{FORWARDER}_delivery_latency_p95")) >= 0
    assert state_of(hass, f"{FORWARDER}_status") == "delivering"
    assert dt_util.parse_datetime(state_of(hass, f"{FORWARDER}_last_successful_delivery"))
    assert state_of(hass, STORAGE_CIRCUIT) == "closed"

    # More events: the total rises.
    hass.states.async_set("sensor.temperature", "99")
    await hass.async_block_till_done()
    await flush(entry)
    await tick(hass)
    assert state_of(hass, DELIVERED) == "26"
    await unload(hass, entry)


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_pending_while_the_receiver_refuses(
    hass: HomeAssistant, storage: FaultServer
) -> None:
    """Events wait in the outbox, their age grows, the circuit opens; then all arrive."""
    entry = make_entry(storage.url, entry_id=ENTRY_ID)
    await setup_entry(hass, entry)
    runtime = entry.runtime_data.runtime
    await storage.refuse()

    for value in range(7):
        hass.states.async_set("sensor.pressure", str(value))
    await hass.async_block_till_done()
    breakers = runtime.clients["storage"].breakers.values()
    # Flushing wakes the forwarder at once instead of after its backoff.
    await wait_until(
        lambda: all(b.state == "open" for b in breakers),
        nudge=lambda: runtime.forwarder.flush(timeout=0.05),
    )
    with patch("custom_components.ha_ingestor.coordinator.datetime", _WallClockLater):
        await tick(hass)

    assert state_of(hass, DEPTH) == "7"
    assert 25 <= int(state_of(hass, OLDEST_AGE)) <= 30
    assert state_of(hass, DELIVERED) == "0"
    assert state_of(hass, STORAGE_CIRCUIT) == "open"
    assert state_of(hass, f"{FORWARDER}_status") == "waiting"
    assert float(state_of(hass, f"{FORWARDER}_delivery_success_rate")) < 100

    await storage.restore()
    for breaker in breakers:  # skip the breaker's real-time wait before its probe
        breaker.record_success()
    await flush(entry)
    await tick(hass)
    assert state_of(hass, DEPTH) == "0"
    assert state_of(hass, OLDEST_AGE) == "0"
    assert state_of(hass, DELIVERED) == "7"
    assert state_of(hass, STORAGE_CIRCUIT) == "closed"
    await unload(hass, entry)


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_unavailable_when_the_coordinator_fails(
    hass: HomeAssistant, storage: FaultServer
) -> None:
    entry = make_entry(storage.url, entry_id=ENTRY_ID)
    await setup_entry(hass, entry)
    with patch(
        "custom_components.ha_ingestor.coordinator.build_snapshot", side_effect=RuntimeError
    ):
        await tick(hass)
        assert state_of(hass, DELIVERED) == STATE_UNAVAILABLE
        assert state_of(hass, STORAGE_CIRCUIT) == STATE_UNAVAILABLE
    await tick(hass)
    assert state_of(hass, DELIVERED) == "0"
    await unload(hass, entry)


# -- no feedback loop, bounded writes ------------------------------------------------------


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_own_entities_are_never_forwarded(hass: HomeAssistant, storage: FaultServer) -> None:
    """Our sensors change as events flow, yet only the other entities reach the receiver."""
    entry = make_entry(storage.url, entry_id=ENTRY_ID)
    await setup_entry(hass, entry)
    ours = entity_ids(hass, entry)
    assert len(ours) == 14
    assert ours <= own_entities(hass)

    for value in range(3):
        hass.states.async_set("sensor.outside", str(value))
        await hass.async_block_till_done()
        await flush(entry)
        await tick(hass)
    assert state_of(hass, DELIVERED) == "3"  # so our sensors did change meanwhile

    # A reload writes "unavailable" and then fresh states for each of them.
    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    hass.states.async_set("sensor.outside", "last")
    await hass.async_block_till_done()
    await flush(entry)

    forwarded = [event["data"].get("entity_id") for event in storage.received]
    assert forwarded == ["sensor.outside"] * 4
    await unload(hass, entry)
    await asyncio.sleep(0)  # the ids are let go one loop turn after removal
    assert not ours & own_entities(hass)


async def test_a_burst_writes_each_entity_at_most_once_per_tick(
    hass: HomeAssistant, storage: FaultServer
) -> None:
    entry = make_entry(storage.url, entry_id=ENTRY_ID)
    await setup_entry(hass, entry)
    ours = entity_ids(hass, entry)
    refreshes = count_refreshes(entry.runtime_data.coordinator)
    writes: Counter[str] = Counter()

    @callback
    def _count(event: Event[Any]) -> None:
        if event.data["entity_id"] in ours:
            writes[event.data["entity_id"]] += 1

    unsub = hass.bus.async_listen(EVENT_STATE_CHANGED, _count)
    for value in range(1000):
        hass.states.async_set("sensor.burst", str(value))
    await hass.async_block_till_done()
    await flush(entry)
    for _ in range(3):
        await tick(hass)
    unsub()

    assert len(storage.stored_ids) == 1000
    assert state_of(hass, DELIVERED) == "1000"
    assert 1 <= writes[DELIVERED] <= refreshes[0]
    assert max(writes.values()) <= refreshes[0]
    await unload(hass, entry)
