"""Sensors: how much flows, how much waits, how healthy delivery is, per service circuits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import PERCENTAGE, EntityCategory, UnitOfTime

from .entity import IngestorEntity, IngestorServiceEntity, async_prepare_devices
from .pipeline.circuit_breaker import BreakerState
from .pipeline.forwarder import ForwarderState

if TYPE_CHECKING:
    from datetime import datetime

    from homeassistant.core import HomeAssistant
    from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
    from homeassistant.helpers.typing import StateType

    from .coordinator import IngestorConfigEntry, IngestorSnapshot, ServiceHealth

# The coordinator is the only writer; entities never poll on their own.
PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class IngestorSensorEntityDescription(SensorEntityDescription):
    """A sensor of the forwarder device."""

    value_fn: Callable[[IngestorSnapshot], StateType | datetime]
    attributes_fn: Callable[[IngestorSnapshot], dict[str, Any]] | None = None


@dataclass(frozen=True, kw_only=True)
class IngestorServiceSensorEntityDescription(SensorEntityDescription):
    """A sensor of each service's device."""

    value_fn: Callable[[ServiceHealth], StateType]


def _status_attributes(data: IngestorSnapshot) -> dict[str, Any]:
    """Why nothing is delivered (no attributes while it is): one automation can say it."""
    if data.problem_service is None:
        return {}
    return {
        "service": data.problem_service,
        "since": data.problem_since,
        "last_error": data.problem_error,
    }


def _backfill_attributes(data: IngestorSnapshot) -> dict[str, Any]:
    """The backfill's state, window, how far it got and how many changes it queued."""
    progress = data.backfill
    attributes: dict[str, Any] = {
        "state": progress.status.value,
        "gap_fill": progress.gap_fill,
        "events": progress.events,
        "reached": progress.reached,
        "start": progress.start,
        "end": progress.end,
    }
    if progress.error is not None:
        attributes["error"] = progress.error
    return attributes


def _oldest_pending_age(data: IngestorSnapshot) -> int | None:
    # Nothing waiting is an age of zero, not "unknown".
    return 0 if data.pending == 0 else data.oldest_pending_age_s


# Counts carry their unit ("events", "events/min") through translations.
# Enabled by default: what a dashboard or an alert needs (events delivered, outbox depth,
# dead letters, dropped events, last delivery, status, connectivity). Disabled by
# default: figures that change nearly every second while events flow (events per
# minute, latency, success rate, age of the oldest pending event) and the per-service
# circuit state, which the connectivity sensor and the status already summarize;
# enable them when investigating.
SENSORS: tuple[IngestorSensorEntityDescription, ...] = (
    IngestorSensorEntityDescription(
        key="events_delivered",
        translation_key="events_delivered",
        state_class=SensorStateClass.TOTAL_INCREASING,
        value_fn=lambda data: data.delivered,
    ),
    IngestorSensorEntityDescription(
        key="events_per_minute",
        translation_key="events_per_minute",
        entity_registry_enabled_default=False,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=0,
        value_fn=lambda data: data.events_per_minute,
    ),
    IngestorSensorEntityDescription(
        key="outbox_depth",
        translation_key="outbox_depth",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda data: data.pending,
    ),
    IngestorSensorEntityDescription(
        # A count held, not a running total: replaying or purging lowers it.
        key="dead_letters",
        translation_key="dead_letters",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda data: data.dead_letters,
    ),
    IngestorSensorEntityDescription(
        key="last_delivery",
        translation_key="last_delivery",
        device_class=SensorDeviceClass.TIMESTAMP,
        value_fn=lambda data: data.last_delivery,
    ),
    IngestorSensorEntityDescription(
        key="status",
        translation_key="status",
        device_class=SensorDeviceClass.ENUM,
        options=[state.value for state in ForwarderState],
        value_fn=lambda data: data.forwarder_state,
        attributes_fn=_status_attributes,
    ),
    IngestorSensorEntityDescription(
        # Dropped at the outbox caps since the outbox opened; resets count as such.
        key="events_dropped",
        translation_key="events_dropped",
        entity_category=EntityCategory.DIAGNOSTIC,
        state_class=SensorStateClass.TOTAL_INCREASING,
        value_fn=lambda data: data.dropped,
    ),
    IngestorSensorEntityDescription(
        key="oldest_pending_age",
        translation_key="oldest_pending_age",
        entity_registry_enabled_default=False,
        device_class=SensorDeviceClass.DURATION,
        entity_category=EntityCategory.DIAGNOSTIC,
        native_unit_of_measurement=UnitOfTime.SECONDS,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=0,
        value_fn=_oldest_pending_age,
    ),
    IngestorSensorEntityDescription(
        key="success_rate",
        translation_key="success_rate",
        entity_registry_enabled_default=False,
        entity_category=EntityCategory.DIAGNOSTIC,
        native_unit_of_measurement=PERCENTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=1,
        value_fn=lambda data: data.success_rate,
    ),
    IngestorSensorEntityDescription(
        key="latency_p95",
        translation_key="latency_p95",
        entity_registry_enabled_default=False,
        device_class=SensorDeviceClass.DURATION,
        entity_category=EntityCategory.DIAGNOSTIC,
        native_unit_of_measurement=UnitOfTime.MILLISECONDS,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=1,
        value_fn=lambda data: data.p95_latency_ms,
    ),
    IngestorSensorEntityDescription(
        # Percent of the window queued by the current (or last) backfill; unknown until
        # the first one. The attributes say which, how far, and how it ended.
        key="backfill",
        translation_key="backfill",
        entity_category=EntityCategory.DIAGNOSTIC,
        native_unit_of_measurement=PERCENTAGE,
        suggested_display_precision=0,
        value_fn=lambda data: data.backfill.percent,
        attributes_fn=_backfill_attributes,
    ),
)

SERVICE_SENSORS: tuple[IngestorServiceSensorEntityDescription, ...] = (
    IngestorServiceSensorEntityDescription(
        key="circuit",
        translation_key="circuit",
        entity_registry_enabled_default=False,
        device_class=SensorDeviceClass.ENUM,
        entity_category=EntityCategory.DIAGNOSTIC,
        options=[state.value for state in BreakerState],
        value_fn=lambda health: health.circuit,
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: IngestorConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the forwarder's sensors and each configured service's."""
    async_prepare_devices(hass, entry)
    coordinator = entry.runtime_data.coordinator
    entities: list[SensorEntity] = [
        IngestorSensorEntity(coordinator, description) for description in SENSORS
    ]
    entities.extend(
        IngestorServiceSensorEntity(coordinator, description, service)
        for service in entry.runtime_data.runtime.clients
        for description in SERVICE_SENSORS
    )
    async_add_entities(entities)


class IngestorSensorEntity(IngestorEntity, SensorEntity):
    """A figure of the forwarder."""

    entity_description: IngestorSensorEntityDescription

    @property
    def native_value(self) -> StateType | datetime:
        return self.entity_description.value_fn(self.coordinator.data)

    @property
    def extra_state_attributes(self) -> dict[str, Any] | None:
        attributes_fn = self.entity_description.attributes_fn
        return None if attributes_fn is None else attributes_fn(self.coordinator.data)


class IngestorServiceSensorEntity(IngestorServiceEntity, SensorEntity):
    """A figure of one service."""

    entity_description: IngestorServiceSensorEntityDescription

    @property
    def native_value(self) -> StateType:
        health = self.health
        return None if health is None else self.entity_description.value_fn(health)
