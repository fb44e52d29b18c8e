"""Binary sensors: whether delivery has a problem, and whether each service can be reached."""

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

from .entity import IngestorEntity, IngestorServiceEntity, async_prepare_devices

if TYPE_CHECKING:
    from homeassistant.core import HomeAssistant
    from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

    from .coordinator import IngestorConfigEntry, IngestorSnapshot, ServiceHealth

# The coordinator is the only writer; entities never poll on their own.
PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class IngestorBinarySensorEntityDescription(BinarySensorEntityDescription):
    """A binary sensor of the forwarder device."""

    is_on_fn: Callable[[IngestorSnapshot], bool]


BINARY_SENSORS: tuple[IngestorBinarySensorEntityDescription, ...] = (
    IngestorBinarySensorEntityDescription(
        # On while the oldest waiting event is older than the entry's "problem after"
        # option, whatever the cause (a service away, paused, refused credentials): the
        # one thing an alert automation needs; the Status sensor says why.
        key="delivery_problem",
        translation_key="delivery_problem",
        device_class=BinarySensorDeviceClass.PROBLEM,
        is_on_fn=lambda data: data.delivery_problem,
    ),
)


@dataclass(frozen=True, kw_only=True)
class IngestorServiceBinarySensorEntityDescription(BinarySensorEntityDescription):
    """A binary sensor of each service's device."""

    is_on_fn: Callable[[ServiceHealth], bool]


SERVICE_BINARY_SENSORS: tuple[IngestorServiceBinarySensorEntityDescription, ...] = (
    IngestorServiceBinarySensorEntityDescription(
        # Named by its device class ("Connectivity"): on while some URL of the service
        # is reachable (its health answers and no real call just went unanswered) and
        # its circuit is not open.
        key="connectivity",
        device_class=BinarySensorDeviceClass.CONNECTIVITY,
        is_on_fn=lambda health: health.available,
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: IngestorConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the forwarder's binary sensors and each configured service's."""
    async_prepare_devices(hass, entry)
    coordinator = entry.runtime_data.coordinator
    entities: list[BinarySensorEntity] = [
        IngestorBinarySensorEntity(coordinator, description) for description in BINARY_SENSORS
    ]
    entities.extend(
        IngestorServiceBinarySensorEntity(coordinator, description, service)
        for service in entry.runtime_data.runtime.clients
        for description in SERVICE_BINARY_SENSORS
    )
    async_add_entities(entities)


class IngestorBinarySensorEntity(IngestorEntity, BinarySensorEntity):
    """A yes/no fact about the forwarder."""

    entity_description: IngestorBinarySensorEntityDescription

    @property
    def is_on(self) -> bool:
        return self.entity_description.is_on_fn(self.coordinator.data)


class IngestorServiceBinarySensorEntity(IngestorServiceEntity, BinarySensorEntity):
    """A yes/no fact about one service."""

    entity_description: IngestorServiceBinarySensorEntityDescription

    @property
    def is_on(self) -> bool | None:
        health = self.health
        return None if health is None else self.entity_description.is_on_fn(health)
