"""Connectivity per service: snapshots, health checks, an open circuit, recovery.

Real receivers on 127.0.0.1 (see test_sensor.py for how time is driven). Health-check
rounds are run directly through the runtime's registry instead of waiting for the
interval, and `tick` runs the coordinator's next refresh.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from unittest.mock import patch

import pytest
from homeassistant.const import STATE_OFF, STATE_ON, Platform
from homeassistant.helpers import device_registry as dr
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.ha_ingestor.const import CONF_STORAGE_FAILOVER_URLS, DOMAIN
from tests.integration.common import (
    ENTRY_ID,
    make_entry,
    setup_entry,
    snapshot_entities,
    state_of,
    tick,
    unload,
    wait_until,
)
from tests.integration.conftest import TOKEN

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from homeassistant.core import HomeAssistant
    from syrupy.assertion import SnapshotAssertion

    from tests.pipeline.fault_server import FaultServer

STORAGE = "binary_sensor.data_storage_connectivity"
ENRICHMENT = "binary_sensor.enrichment_pipeline_connectivity"


def storage_device(hass: HomeAssistant, entry_id: str) -> dr.DeviceEntry:
    """The entry's storage device, found among the entry's devices.

    Not ``async_get_device(identifiers=...)``: newer releases refuse it, identifiers
    being unique only within a config entry there.
    """
    identifier = (DOMAIN, f"{entry_id}_storage")
    devices = dr.async_entries_for_config_entry(dr.async_get(hass), entry_id)
    (device,) = [device for device in devices if identifier in device.identifiers]
    return device


async def test_binary_sensors(
    hass: HomeAssistant,
    storage_server: FaultServer,
    enrichment_server: FaultServer,
    snapshot: SnapshotAssertion,
) -> None:
    """One connectivity sensor per configured service, on its service's device."""
    entry = make_entry(storage_server.url, enrichment_server.url, entry_id=ENTRY_ID)
    with patch("custom_components.ha_ingestor.PLATFORMS", [Platform.BINARY_SENSOR]):
        await setup_entry(hass, entry)
        snapshot_entities(hass, snapshot, entry.entry_id)
        await unload(hass, entry)


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_health_checks_drive_connectivity(
    hass: HomeAssistant, storage_server: FaultServer, enrichment_server: FaultServer
) -> None:
    """A service whose health checks fail is off; the other stays on; it comes back."""
    entry = make_entry(storage_server.url, enrichment_server.url, entry_id=ENTRY_ID)
    await setup_entry(hass, entry)
    registry = entry.runtime_data.runtime.registry
    await registry.check_all_services()
    await tick(hass)
    assert state_of(hass, STORAGE) == STATE_ON
    assert state_of(hass, ENRICHMENT) == STATE_ON

    enrichment_server.health_status = 503
    await registry.check_all_services()  # one failed check is a blip ...
    await tick(hass)
    assert state_of(hass, ENRICHMENT) == STATE_ON
    await registry.check_all_services()  # ... two in a row are an outage
    await tick(hass)
    assert state_of(hass, ENRICHMENT) == STATE_OFF
    assert state_of(hass, STORAGE) == STATE_ON
    # Nothing was sent, so the circuit stays closed: health alone says "down".
    assert state_of(hass, "sensor.enrichment_pipeline_circuit_breaker") == "closed"

    enrichment_server.health_status = 200
    await registry.check_all_services()  # one good answer and it is back
    await tick(hass)
    assert state_of(hass, ENRICHMENT) == STATE_ON
    await unload(hass, entry)


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_refused_connections_open_the_circuit(
    hass: HomeAssistant, storage_server: FaultServer
) -> None:
    """Deliveries to a closed port fail, the circuit opens and connectivity goes off."""
    entry = make_entry(storage_server.url, entry_id=ENTRY_ID)
    await setup_entry(hass, entry)
    runtime = entry.runtime_data.runtime
    await runtime.registry.check_all_services()
    await tick(hass)
    assert state_of(hass, STORAGE) == STATE_ON

    await storage_server.refuse()
    hass.states.async_set("sensor.humidity", "55")
    await hass.async_block_till_done()
    breakers = runtime.clients["storage"].breakers.values()
    await wait_until(
        lambda: all(b.state == "open" for b in breakers),
        nudge=lambda: runtime.forwarder.flush(timeout=0.05),
    )
    await tick(hass)
    assert state_of(hass, STORAGE) == STATE_OFF
    assert state_of(hass, "sensor.data_storage_circuit_breaker") == "open"

    await storage_server.restore()
    for breaker in breakers:  # skip the breaker's real-time wait before its probe
        breaker.record_success()
    await runtime.registry.check_all_services()
    await tick(hass)
    assert state_of(hass, STORAGE) == STATE_ON
    assert state_of(hass, "sensor.data_storage_circuit_breaker") == "closed"
    await unload(hass, entry)


async def test_failover_moves_the_device_link(
    hass: HomeAssistant,
    storage_server: FaultServer,
    fault_server_factory: Callable[..., Awaitable[FaultServer]],
) -> None:
    """With the first storage URL down, the second is in use and the device links to it
    (to its status page at /)."""
    second = await fault_server_factory(token=TOKEN, name="data-storage-2")
    entry = make_entry(storage_server.url, entry_id=ENTRY_ID)
    entry = MockConfigEntry(
        domain=entry.domain,
        entry_id=entry.entry_id,
        unique_id=entry.unique_id,
        data={**entry.data, CONF_STORAGE_FAILOVER_URLS: [second.url]},
        options=dict(entry.options),
    )
    await setup_entry(hass, entry)
    assert storage_device(hass, entry.entry_id).configuration_url == storage_server.url + "/"

    registry = entry.runtime_data.runtime.registry
    storage_server.health_status = 503
    await registry.check_all_services()
    await registry.check_all_services()
    await tick(hass)
    assert storage_device(hass, entry.entry_id).configuration_url == second.url + "/"
    assert state_of(hass, STORAGE) == STATE_ON  # the service is still reachable

    storage_server.health_status = 200
    await registry.check_all_services()
    await tick(hass)
    assert storage_device(hass, entry.entry_id).configuration_url == storage_server.url + "/"
    await unload(hass, entry)
