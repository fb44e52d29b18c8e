"""Binary sensors: whether each configured service can be reached."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

# The `unused-ignore` marks: types that differ between the supported Home Assistant
# releases (docs/ARCHITECTURE.md, "Supported Home Assistant releases").
from homeassistant.components.binary_sensor import (  # type: ignore[attr-defined, unused-ignore]
    BinarySensorDeviceClass,
    BinarySensorEntity,
    BinarySensorEntityDescription,
)

from .entity import IngestorServiceEntity, async_prepare_devices

if TYPE_CHECKING:
    from homeassistant.core import HomeAssistant
    from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

    from .coordinator import HaIngestorConfigEntry, ServiceHealth

# The coordinator is the only writer; entities never poll on their own.
PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class IngestorServiceBinarySensorEntityDescription(BinarySensorEntityDescription):
    """A binary sensor of each service's device."""

    is_on_fn: Callable[[ServiceHealth], bool]


SERVICE_BINARY_SENSORS: tuple[IngestorServiceBinarySensorEntityDescription, ...] = (
    IngestorServiceBinarySensorEntityDescription(
        # Named by its device class ("Connectivity"): on while some URL of the service
        # answers its health check and its circuit is not open.
        key="connectivity",
        device_class=BinarySensorDeviceClass.CONNECTIVITY,
        is_on_fn=lambda health: health.available,
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: HaIngestorConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add each configured service's binary sensors."""
    async_prepare_devices(hass, entry)
    coordinator = entry.runtime_data.coordinator
    async_add_entities(
        IngestorServiceBinarySensorEntity(coordinator, description, service)
        for service in entry.runtime_data.runtime.clients
        for description in SERVICE_BINARY_SENSORS
    )


class IngestorServiceBinarySensorEntity(IngestorServiceEntity, BinarySensorEntity):
    """A yes/no fact about one service."""

    entity_description: IngestorServiceBinarySensorEntityDescription

    @property
    def is_on(self) -> bool | None:
        health = self.health
        return None if health is None else self.entity_description.is_on_fn(health)
