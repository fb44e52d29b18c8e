"""Helpers shared by the integration test modules: entries on real receivers, time, waiting.

Fixtures live in conftest.py; these are plain functions the tests call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from homeassistant.config_entries import ConfigEntryState
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed

from custom_components.ha_ingestor.const import (
    CONF_API_TOKEN,
    CONF_ENRICHMENT_URL,
    CONF_LINGER_MS,
    CONF_STORAGE_URL,
    CONF_VERIFY_SSL,
    DOMAIN,
)
from tests.integration.conftest import TOKEN

if TYPE_CHECKING:
    from homeassistant.core import HomeAssistant
    from syrupy.assertion import SnapshotAssertion

    from tests.pipeline.fault_server import FaultServer

ENTRY_ID = "01JHAINGESTORTESTENTRY0001"
"""A fixed entry id, for snapshots that hold ids derived from it."""

# What the integration decides about an entity's registry entry and a device. The other
# fields (ids, aliases, config subentries, ...) are Home Assistant's bookkeeping and
# change shape between the releases the tests run on, so snapshots leave them out.
ENTITY_FIELDS = (
    "entity_id",
    "unique_id",
    "platform",
    "has_entity_name",
    "original_name",
    "translation_key",
    "original_device_class",
    "original_icon",
    "entity_category",
    "unit_of_measurement",
    "capabilities",
    "supported_features",
    "options",
)
DEVICE_FIELDS = ("identifiers", "name", "manufacturer", "model", "entry_type")


def plain(value: Any) -> Any:
    """Mappings (also nested in lists) as dicts keyed by plain strings.

    Newer Home Assistant releases key state attributes and capabilities by StrEnum
    members (``EntityStateAttribute.FRIENDLY_NAME``), 2025.4 by strings; ``str`` of a
    StrEnum member is its value, so both compare alike.
    """
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def device_snapshot(hass: HomeAssistant, device_id: str | None) -> dict[str, Any] | None:
    """A device as the integration decided it, and the device it is reached through."""
    registry = dr.async_get(hass)
    device = registry.async_get(device_id) if device_id else None
    if device is None:
        return None
    decided = {field: getattr(device, field) for field in DEVICE_FIELDS}
    via = registry.async_get(device.via_device_id) if device.via_device_id else None
    decided["via_device"] = via.identifiers if via else None
    return decided


def snapshot_entities(hass: HomeAssistant, snapshot: SnapshotAssertion, entry_id: str) -> None:
    """Each entity of the entry: its registry entry as the integration decided it, its
    device's name, and its state (``-entry`` and ``-state`` snapshots, like Home
    Assistant's ``snapshot_platform``)."""
    entities = er.async_entries_for_config_entry(er.async_get(hass), entry_id)
    assert entities
    for entity in entities:
        decided = {field: getattr(entity, field) for field in ENTITY_FIELDS}
        device = device_snapshot(hass, entity.device_id)
        decided["device"] = device["name"] if device else None
        assert plain(decided) == snapshot(name=f"{entity.entity_id}-entry")
        state = hass.states.get(entity.entity_id)
        assert state is not None, entity.entity_id
        shown = {"state": state.state, "attributes": plain(state.attributes)}
        assert shown == snapshot(name=f"{entity.entity_id}-state")


def make_entry(
    storage_url: str,
    enrichment_url: str | None = None,
    *,
    entry_id: str | None = None,
    data: dict[str, Any] | None = None,
    minor_version: int = 2,
    **options: Any,
) -> MockConfigEntry:
    """An entry for receivers at these URLs with `TOKEN`; batches leave at once (linger 0).

    ``data`` adds entry data (failover URLs, ...), keyword arguments are options; give
    ``entry_id`` where a snapshot holds ids derived from it. The entry is of the current
    version (1.2); ``minor_version=1`` makes one from before service ids.
    """
    options.setdefault(CONF_LINGER_MS, 0)
    entry_data: dict[str, Any] = {
        CONF_STORAGE_URL: storage_url,
        CONF_API_TOKEN: TOKEN,
        CONF_VERIFY_SSL: True,
    }
    if enrichment_url is not None:
        entry_data[CONF_ENRICHMENT_URL] = enrichment_url
    entry_data.update(data or {})
    return MockConfigEntry(
        domain=DOMAIN,
        entry_id=entry_id,
        title=f"HA Ingestor {storage_url}",
        unique_id=storage_url,
        data=entry_data,
        options=options,
        version=1,
        minor_version=minor_version,
    )


async def setup_entry(hass: HomeAssistant, entry: MockConfigEntry) -> MockConfigEntry:
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    return entry


async def unload(hass: HomeAssistant, *entries: MockConfigEntry) -> None:
    """Unload the entries that are loaded; each is then not loaded."""
    for entry in entries:
        if entry.state is ConfigEntryState.LOADED:
            assert await hass.config_entries.async_unload(entry.entry_id)
            assert entry.state is ConfigEntryState.NOT_LOADED
    await hass.async_block_till_done()


async def refuse(server: FaultServer) -> None:
    """Close the server's port once the entry's first health check got through.

    Closing while a connection is being accepted trips an assertion inside asyncio's
    server (Python 3.13.0), so let the check set up at start land first.
    """
    await server.wait_for_requests(1)
    await server.refuse()


async def flush(entry: MockConfigEntry) -> None:
    assert (await entry.runtime_data.runtime.forwarder.flush(timeout=10)).done


async def tick(hass: HomeAssistant) -> None:
    """Run the coordinator's next refresh now (its timer is at most 1.5 s ahead)."""
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=1))
    await hass.async_block_till_done()


def state_of(hass: HomeAssistant, entity_id: str) -> str:
    state = hass.states.get(entity_id)
    assert state is not None, entity_id
    return state.state


async def wait_until(condition: Any, *, nudge: Any = None, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        if nudge is not None:
            await nudge()
        await asyncio.sleep(0.02)
