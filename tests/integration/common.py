"""Helpers shared by the integration test modules: entries on real receivers, time, waiting.

Fixtures live in conftest.py; these are plain functions the tests call.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from homeassistant.config_entries import ConfigEntryState
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

    from tests.pipeline.fault_server import FaultServer

ENTRY_ID = "01JHAINGESTORTESTENTRY0001"
"""A fixed entry id, for snapshots that hold ids derived from it."""


def make_entry(
    storage_url: str,
    enrichment_url: str | None = None,
    *,
    entry_id: str | None = None,
    data: dict[str, Any] | None = None,
    **options: Any,
) -> MockConfigEntry:
    """An entry for receivers at these URLs with `TOKEN`; batches leave at once (linger 0).

    ``data`` adds entry data (failover URLs, ...), keyword arguments are options; give
    ``entry_id`` where a snapshot holds ids derived from it.
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
    assert await entry.runtime_data.runtime.forwarder.flush(timeout=10)


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
