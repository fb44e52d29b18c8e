"""The entities' common base: devices, unique ids and the feedback-loop exclusion.

Every HA Ingestor entity reads the coordinator's once-a-second snapshot and never writes
its state from anywhere else, so however fast events flow, an entity writes at most once
per tick (and not at all while its figure stays the same). Each entity also puts its
entity id into `own_entities` while it exists: the bus listener never forwards those
state changes, or every write would become an event to forward, and so on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from homeassistant.core import callback
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.device_registry import DeviceEntryType, DeviceInfo
from homeassistant.helpers.update_coordinator import CoordinatorEntity
from homeassistant.loader import async_get_loaded_integration

from .const import DOMAIN, SERVICE_ENRICHMENT, SERVICE_STORAGE
from .coordinator import IngestorCoordinator
from .runtime import own_entities

if TYPE_CHECKING:
    from homeassistant.core import HomeAssistant
    from homeassistant.helpers.entity import EntityDescription

    from .coordinator import IngestorConfigEntry, ServiceHealth

MANUFACTURER = "HA Ingestor"
# Device names are translated: strings.json "device" holds them under these keys.
FORWARDER_TRANSLATION_KEY = "forwarder"
# Translation key and model per configured service.
SERVICE_DEVICES: dict[str, tuple[str, str]] = {
    SERVICE_ENRICHMENT: ("enrichment", "Enrichment pipeline"),
    SERVICE_STORAGE: ("storage", "Data storage service"),
}


# Entities whose key was renamed, by their new key: the old key, which stays the suffix of
# their unique id (the registry keeps existing entity ids by it) and their object id (so a
# new install gets the same entity id). Issue 11: "forwarded" became "delivered".
RENAMED_KEYS: dict[str, str] = {"events_delivered": "events_forwarded"}


def forwarder_identifier(entry_id: str) -> tuple[str, str]:
    return (DOMAIN, f"{entry_id}_forwarder")


def service_identifier(entry_id: str, service: str) -> tuple[str, str]:
    return (DOMAIN, f"{entry_id}_{service}")


def forwarder_device_info(hass: HomeAssistant, entry_id: str) -> DeviceInfo:
    """The forwarder: the integration's own part of the pipeline, inside Home Assistant."""
    version = async_get_loaded_integration(hass, DOMAIN).version
    return DeviceInfo(
        entry_type=DeviceEntryType.SERVICE,
        identifiers={forwarder_identifier(entry_id)},
        manufacturer=MANUFACTURER,
        model="Forwarder",
        translation_key=FORWARDER_TRANSLATION_KEY,
        sw_version=str(version) if version else None,
    )


def status_page_url(url: str) -> str:
    """What "Visit" on a service's device opens: the service's status page at ``/``, the
    one page it serves without the token (services/ha_ingestor_services/status_page.py)."""
    return url.rstrip("/") + "/"


def service_device_info(entry_id: str, service: str, url: str) -> DeviceInfo:
    """One external service (all its URLs); `async_prepare_devices` links it to the forwarder."""
    translation_key, model = SERVICE_DEVICES.get(service, (service, service))
    return DeviceInfo(
        configuration_url=status_page_url(url),
        entry_type=DeviceEntryType.SERVICE,
        identifiers={service_identifier(entry_id, service)},
        manufacturer=MANUFACTURER,
        model=model,
        translation_key=translation_key,
    )


def service_url(coordinator: IngestorCoordinator, service: str) -> str:
    """The URL of a service in use now (the first one before any health check)."""
    health = coordinator.data.services.get(service)
    if health is not None:
        return health.url
    return coordinator.config_entry.runtime_data.runtime.registry.get_service_url(service)


def async_prepare_devices(hass: HomeAssistant, entry: IngestorConfigEntry) -> None:
    """Create the forwarder, then each service's device linked through it; drop the rest.

    Both platforms call this before adding entities, so the devices and their links
    exist whichever platform comes first. The link is set by device id: newer Home
    Assistant releases deprecate DeviceInfo's ``via_device`` (an identifier), DeviceInfo
    of 2025.4 has no ``via_device_id``, and ``async_update_device`` takes it in both.
    A service removed by a reconfigure loses its device (and entities).
    """
    registry = dr.async_get(hass)
    entry_id = entry.entry_id
    coordinator = entry.runtime_data.coordinator
    forwarder = registry.async_get_or_create(
        config_entry_id=entry_id, **forwarder_device_info(hass, entry_id)
    )
    wanted = {forwarder.id}
    for service in entry.runtime_data.runtime.clients:
        device = registry.async_get_or_create(
            config_entry_id=entry_id,
            **service_device_info(entry_id, service, service_url(coordinator, service)),
        )
        registry.async_update_device(device.id, via_device_id=forwarder.id)
        wanted.add(device.id)
    for device in dr.async_entries_for_config_entry(registry, entry_id):
        if device.id not in wanted:
            registry.async_remove_device(device.id)


class IngestorEntity(CoordinatorEntity[IngestorCoordinator]):
    """An entity of the forwarder device."""

    _attr_has_entity_name = True

    def __init__(self, coordinator: IngestorCoordinator, description: EntityDescription) -> None:
        super().__init__(coordinator)
        self.entity_description = description
        entry_id = coordinator.config_entry.entry_id
        self._attr_unique_id = f"{entry_id}_{RENAMED_KEYS.get(description.key, description.key)}"
        self._attr_device_info = forwarder_device_info(coordinator.hass, entry_id)

    @property
    def suggested_object_id(self) -> str | None:
        """The object id of a renamed entity stays that of its old key (RENAMED_KEYS)."""
        old_key = RENAMED_KEYS.get(self.entity_description.key)
        return super().suggested_object_id if old_key is None else old_key

    async def async_internal_added_to_hass(self) -> None:
        # Not in async_added_to_hass: that is too late. Adding a sensor stores its
        # suggested display precision in the entity registry, and the registry update
        # writes the entity's first state before async_added_to_hass runs.
        own_entities(self.hass).add(self.entity_id)
        await super().async_internal_added_to_hass()

    async def async_will_remove_from_hass(self) -> None:
        await super().async_will_remove_from_hass()
        # Removing the entity still writes a last state ("unavailable", or removed) just
        # after this returns, and the listener handles it synchronously: let the id go
        # only after that, on the next turn of the loop.
        self.hass.loop.call_soon(own_entities(self.hass).discard, self.entity_id)


class IngestorServiceEntity(IngestorEntity):
    """An entity of one service's device; reads that service's part of the snapshot."""

    def __init__(
        self, coordinator: IngestorCoordinator, description: EntityDescription, service: str
    ) -> None:
        super().__init__(coordinator, description)
        self.service = service
        entry_id = coordinator.config_entry.entry_id
        self._attr_unique_id = f"{entry_id}_{service}_{description.key}"
        self._url = service_url(coordinator, service)
        self._attr_device_info = service_device_info(entry_id, service, self._url)

    @property
    def health(self) -> ServiceHealth | None:
        return self.coordinator.data.services.get(self.service)

    @property
    def available(self) -> bool:
        return super().available and self.health is not None

    @callback
    def _handle_coordinator_update(self) -> None:
        health = self.health
        if health is not None and health.url != self._url:
            # Failover: the device links to the status page of the URL in use now.
            self._url = health.url
            if self.device_entry is not None:
                dr.async_get(self.hass).async_update_device(
                    self.device_entry.id, configuration_url=status_page_url(health.url)
                )
        super()._handle_coordinator_update()
