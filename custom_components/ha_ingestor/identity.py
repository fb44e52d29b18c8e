"""The entry's unique id is its storage service's own id, once Home Assistant has seen it.

Each service has an id of its own (a UUID kept with its data) that survives restarts
and moves; its open ``GET /api/v1/health`` answers it as ``"service_id"``, and its
zeroconf announcement as TXT ``id`` (docs/ARCHITECTURE.md, "Discovery"). A URL is no
good as a unique id: it changes while the service stays the same.

Entries made before services had ids (config entry 1.1) have their storage URL as
unique id. Their id cannot be known offline, so `async_migrate_entry` only bumps the
minor version and `async_follow_service_id` swaps the unique id the first time the
storage service answers its id: at set-up when it is up, or later when it comes back.
An older service without an id keeps the URL as unique id, as before.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from homeassistant.core import HomeAssistant, callback

from .const import CONF_STORAGE_URL, DOMAIN, LOGGER, SERVICE_STORAGE
from .pipeline.envelope import HEALTH_PATH

if TYPE_CHECKING:
    from collections.abc import Callable

    from homeassistant.config_entries import ConfigEntry

    from .pipeline.endpoint_health import ServiceRegistry

ID_TIMEOUT = aiohttp.ClientTimeout(total=5.0)


def parse_service_id(value: Any) -> str | None:
    """A service id in one spelling (a lower-case UUID), or None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        return None


def is_service_id(unique_id: str | None) -> bool:
    """True when an entry's unique id is a service id (not a storage URL from 1.1)."""
    return parse_service_id(unique_id) is not None


def health_service_id(body: Any) -> str | None:
    """The ``service_id`` of a health answer (None: an older service, or not one of ours)."""
    return parse_service_id(body.get("service_id")) if isinstance(body, dict) else None


@callback
def async_adopt_service_id(hass: HomeAssistant, entry: ConfigEntry, service_id: str) -> bool:
    """Make ``service_id`` the entry's unique id, unless another entry has it already.

    Two entries for one service (typed in as two spellings of its address before ids
    existed) cannot share a unique id: the second keeps its URL, and a warning says why.
    """
    other = hass.config_entries.async_entry_for_domain_unique_id(DOMAIN, service_id)
    if other is not None and other.entry_id != entry.entry_id:
        LOGGER.warning(
            "Entry %r reaches the same storage service (id %s) as entry %r; it keeps its "
            "URL as unique id. Remove one of the two",
            entry.title,
            service_id,
            other.title,
        )
        return False
    LOGGER.info("Entry %r now knows its storage service by its id %s", entry.title, service_id)
    hass.config_entries.async_update_entry(entry, unique_id=service_id)
    return True


async def async_fetch_service_id(session: aiohttp.ClientSession, url: str) -> str | None:
    """Ask a storage service's open health for its id (None: no answer, or no id)."""
    try:
        async with session.get(
            url + HEALTH_PATH, timeout=ID_TIMEOUT, allow_redirects=False
        ) as resp:
            if resp.status != 200:
                return None
            return health_service_id(orjson.loads(await resp.read()))
    except (TimeoutError, aiohttp.ClientError, OSError, orjson.JSONDecodeError) as err:
        LOGGER.debug("No service id from %s yet: %s", url, err)
        return None


@callback
def async_follow_service_id(
    hass: HomeAssistant,
    entry: ConfigEntry,
    registry: ServiceRegistry,
    session: aiohttp.ClientSession,
) -> Callable[[], None]:
    """Until the entry's unique id is a service id: whenever its storage service's main
    URL comes up (the registry's first check, or its return after an outage), ask it for
    its id and adopt it. Returns the remover (a no-op when there is nothing to do)."""
    if is_service_id(entry.unique_id):
        return lambda: None
    url = str(entry.data[CONF_STORAGE_URL])
    done = False

    async def _ask() -> None:
        service_id = await async_fetch_service_id(session, url)
        if service_id is not None and not done:
            async_adopt_service_id(hass, entry, service_id)
            # Adopted, or taken by another entry: either way nothing more to learn.
            _stop()

    @callback
    def _available(service: str, endpoint: str, available: bool) -> None:
        if available and not done and service == SERVICE_STORAGE and endpoint == url:
            entry.async_create_background_task(hass, _ask(), f"{DOMAIN} service id")

    remove_listener = registry.add_listener(_available)

    @callback
    def _stop() -> None:
        nonlocal done
        if not done:
            done = True
            remove_listener()

    return _stop
