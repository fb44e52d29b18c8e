"""HA Ingestor: every chosen Home Assistant event, durably forwarded to a pipeline."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import TYPE_CHECKING, Any

from homeassistant.const import EVENT_HOMEASSISTANT_FINAL_WRITE, Platform
from homeassistant.core import Event, HomeAssistant
from homeassistant.exceptions import ConfigEntryNotReady
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.storage import Store

from .actions import async_setup_actions
from .backfill import MARK_VERSION, mark_key
from .const import DOMAIN, LOGGER
from .coordinator import IngestorConfigEntry, IngestorCoordinator, IngestorData
from .http import async_register_views
from .identity import async_follow_service_id
from .runtime import IngestorRuntime, outbox_path

if TYPE_CHECKING:
    from homeassistant.config_entries import ConfigEntry
    from homeassistant.helpers.typing import ConfigType

CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)

PLATFORMS: list[Platform] = [Platform.BINARY_SENSOR, Platform.SENSOR]


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Set up what the integration offers regardless of entries: actions and views."""
    async_setup_actions(hass)
    async_register_views(hass)
    return True


async def async_setup_entry(hass: HomeAssistant, entry: IngestorConfigEntry) -> bool:
    """Start the pipeline of one entry: outbox, delivery, health checks, listener."""
    runtime = IngestorRuntime(hass, entry)
    # Before the registry's first check: that check seeing storage up asks for its id.
    session = async_get_clientsession(hass, verify_ssl=runtime.settings.verify_ssl)
    entry.async_on_unload(async_follow_service_id(hass, entry, runtime.registry, session))
    try:
        await runtime.async_start()
    except (OSError, sqlite3.OperationalError) as err:
        # The outbox file cannot be opened yet (a full disk, a folder not mounted yet,
        # a locked file): Home Assistant retries later. async_start released what it began.
        raise ConfigEntryNotReady(
            translation_domain=DOMAIN,
            translation_key="outbox_unavailable",
            translation_placeholders={"path": str(runtime.outbox.path), "error": str(err)},
        ) from err
    coordinator = IngestorCoordinator(hass, entry, runtime)
    try:
        await coordinator.async_config_entry_first_refresh()
    except BaseException:
        await runtime.async_stop()
        raise
    entry.runtime_data = IngestorData(runtime=runtime, coordinator=coordinator)

    async def _final_write(_: Event[Any]) -> None:
        # Home Assistant does not unload entries when it stops: write what is queued now.
        await runtime.async_stop()

    # Not listen_once: its remover fails once it has fired, and stopping twice is harmless.
    entry.async_on_unload(hass.bus.async_listen(EVENT_HOMEASSISTANT_FINAL_WRITE, _final_write))
    entry.async_on_unload(entry.add_update_listener(_async_options_updated))
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    return True


async def _async_options_updated(hass: HomeAssistant, entry: IngestorConfigEntry) -> None:
    await entry.runtime_data.runtime.async_apply_options(entry)
    await entry.runtime_data.coordinator.async_request_refresh()


async def async_unload_entry(hass: HomeAssistant, entry: IngestorConfigEntry) -> bool:
    """Stop the pipeline; queued events stay in the outbox file for next time."""
    unloaded = await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
    if unloaded:
        await entry.runtime_data.runtime.async_stop()
    return unloaded


async def async_remove_entry(hass: HomeAssistant, entry: ConfigEntry) -> None:
    """The entry is gone for good: delete its outbox file and its capture mark."""
    path = outbox_path(hass, entry.entry_id)

    def _remove() -> None:
        for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            with contextlib.suppress(FileNotFoundError):
                file.unlink()

    await hass.async_add_executor_job(_remove)
    await Store[dict[str, Any]](hass, MARK_VERSION, mark_key(entry.entry_id)).async_remove()


async def async_migrate_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
    """Bring older entries to the current version; refuse entries from the future.

    1.1 to 1.2: the data stays; the unique id (1.1: the storage URL) becomes the storage
    service's id when the service first tells it (identity.py), which needs the network.
    """
    if entry.version > 1:
        LOGGER.error(
            "This HA Ingestor entry was made by a newer version (%s); downgrade not supported",
            entry.version,
        )
        return False
    if entry.minor_version < 2:
        hass.config_entries.async_update_entry(entry, minor_version=2)
    return True
