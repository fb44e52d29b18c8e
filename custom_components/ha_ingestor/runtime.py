"""What one config entry runs: outbox, registry, clients, forwarder, bus listener, and the
backfiller with its capture mark (backfill.py: gaps filled from the recorder at start).

`IngestorRuntime` builds the delivery core from the entry's data and options, starts and
stops it in the right order (listener last on, first off; outbox last off, so everything
in memory reaches the file), and applies changed options live without losing events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from homeassistant.const import EVENT_STATE_CHANGED
from homeassistant.core import Event, EventStateChangedData, HomeAssistant, callback
from homeassistant.helpers import instance_id
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.entityfilter import EntityFilter
from homeassistant.helpers.event import async_track_state_change_event
from homeassistant.util.hass_dict import HassKey

from .backfill import Backfiller, CaptureMark
from .const import (
    ALL_EVENTS,
    CONF_API_TOKEN,
    CONF_BATCH_SIZE,
    CONF_DURABILITY,
    CONF_ENRICHMENT_FAILOVER_URLS,
    CONF_ENRICHMENT_URL,
    CONF_EVENT_TYPES,
    CONF_EXCLUDE_DOMAINS,
    CONF_EXCLUDE_ENTITIES,
    CONF_EXCLUDE_ENTITY_GLOBS,
    CONF_FALLBACK_TO_STORAGE,
    CONF_GAP_FILL,
    CONF_GAP_FILL_MAX_HOURS,
    CONF_HEALTH_INTERVAL,
    CONF_INCLUDE_DOMAINS,
    CONF_INCLUDE_ENTITIES,
    CONF_INCLUDE_ENTITY_GLOBS,
    CONF_LINGER_MS,
    CONF_MAX_EVENTS,
    CONF_MAX_MEGABYTES,
    CONF_PROBLEM_AFTER,
    CONF_STORAGE_FAILOVER_URLS,
    CONF_STORAGE_URL,
    CONF_VERIFY_SSL,
    CONF_WEATHER_ENTITY,
    DEFAULT_BATCH_SIZE,
    DEFAULT_DURABILITY,
    DEFAULT_EVENT_TYPES,
    DEFAULT_FALLBACK_TO_STORAGE,
    DEFAULT_GAP_FILL,
    DEFAULT_GAP_FILL_MAX_HOURS,
    DEFAULT_HEALTH_INTERVAL,
    DEFAULT_LINGER_MS,
    DEFAULT_MAX_EVENTS,
    DEFAULT_MAX_MEGABYTES,
    DEFAULT_PROBLEM_AFTER,
    DOMAIN,
    LOGGER,
    SERVICE_ENRICHMENT,
    SERVICE_STORAGE,
)
from .listener import Captured, EventEncoder, EventListener, weather_from_state
from .pipeline.endpoint_health import ServiceRegistry
from .pipeline.envelope import EnvelopeContext, EventValidator
from .pipeline.forwarder import EventForwarder, ForwarderConfig, Route
from .pipeline.http_client import ServiceHTTPClient, Timeouts
from .pipeline.metrics import PipelineMetrics
from .pipeline.outbox import Durability, Outbox

if TYPE_CHECKING:
    from collections.abc import Callable

    from homeassistant.config_entries import ConfigEntry

FILTER_KEYS = (
    CONF_INCLUDE_DOMAINS,
    CONF_INCLUDE_ENTITIES,
    CONF_INCLUDE_ENTITY_GLOBS,
    CONF_EXCLUDE_DOMAINS,
    CONF_EXCLUDE_ENTITIES,
    CONF_EXCLUDE_ENTITY_GLOBS,
)
# How long a batch may take before its service counts as not answering (and shows as
# disconnected); how long a health check may take; how often a service that is down is
# probed (jittered), which bounds how long delivery takes to resume once it is back.
REQUEST_TIMEOUTS = Timeouts(connect=5.0, total=30.0)
HEALTH_TIMEOUT = 5.0
PROBE_INTERVAL = 1.0
# Entity ids of every HA Ingestor entity, across entries: never forwarded.
DATA_OWN_ENTITIES: HassKey[set[str]] = HassKey(f"{DOMAIN}_own_entities")


def outbox_path(hass: HomeAssistant, entry_id: str) -> Path:
    """One outbox file per entry, under the config directory."""
    return Path(hass.config.path(".storage", DOMAIN, f"outbox_{entry_id}.db"))


def own_entities(hass: HomeAssistant) -> set[str]:
    return hass.data.setdefault(DATA_OWN_ENTITIES, set())


def _urls(first: str | None, more: list[str] | None) -> tuple[str, ...]:
    urls = [url for url in [first, *(more or [])] if url]
    return tuple(dict.fromkeys(urls))


@dataclass(frozen=True, slots=True)
class IngestorSettings:
    """Everything the runtime needs from an entry's data and options."""

    storage_urls: tuple[str, ...]
    enrichment_urls: tuple[str, ...]
    token: str | None
    verify_ssl: bool
    event_types: tuple[str, ...]
    entity_filter: tuple[tuple[str, tuple[str, ...]], ...]
    batch_size: int
    linger_ms: int
    durability: Durability
    max_events: int
    max_megabytes: int
    fallback_to_storage: bool
    health_interval: int
    problem_after: int
    weather_entity: str | None
    gap_fill: bool = DEFAULT_GAP_FILL
    gap_fill_max_hours: int = DEFAULT_GAP_FILL_MAX_HOURS

    @classmethod
    def from_entry(cls, entry: ConfigEntry) -> IngestorSettings:
        data: dict[str, Any] = dict(entry.data)
        options: dict[str, Any] = dict(entry.options)
        return cls(
            storage_urls=_urls(data[CONF_STORAGE_URL], data.get(CONF_STORAGE_FAILOVER_URLS)),
            enrichment_urls=_urls(
                data.get(CONF_ENRICHMENT_URL), data.get(CONF_ENRICHMENT_FAILOVER_URLS)
            ),
            token=data.get(CONF_API_TOKEN) or None,
            verify_ssl=bool(data.get(CONF_VERIFY_SSL, True)),
            event_types=tuple(options.get(CONF_EVENT_TYPES) or DEFAULT_EVENT_TYPES),
            entity_filter=tuple((key, tuple(options.get(key) or ())) for key in FILTER_KEYS),
            batch_size=int(options.get(CONF_BATCH_SIZE, DEFAULT_BATCH_SIZE)),
            linger_ms=int(options.get(CONF_LINGER_MS, DEFAULT_LINGER_MS)),
            durability=Durability(options.get(CONF_DURABILITY, DEFAULT_DURABILITY)),
            max_events=int(options.get(CONF_MAX_EVENTS, DEFAULT_MAX_EVENTS)),
            max_megabytes=int(options.get(CONF_MAX_MEGABYTES, DEFAULT_MAX_MEGABYTES)),
            fallback_to_storage=bool(
                options.get(CONF_FALLBACK_TO_STORAGE, DEFAULT_FALLBACK_TO_STORAGE)
            ),
            health_interval=int(options.get(CONF_HEALTH_INTERVAL, DEFAULT_HEALTH_INTERVAL)),
            problem_after=int(options.get(CONF_PROBLEM_AFTER, DEFAULT_PROBLEM_AFTER)),
            weather_entity=options.get(CONF_WEATHER_ENTITY) or None,
            gap_fill=bool(options.get(CONF_GAP_FILL, DEFAULT_GAP_FILL)),
            gap_fill_max_hours=int(
                options.get(CONF_GAP_FILL_MAX_HOURS, DEFAULT_GAP_FILL_MAX_HOURS)
            ),
        )

    def entity_filter_object(self) -> EntityFilter:
        return EntityFilter({key: list(values) for key, values in self.entity_filter})

    def forwarder_config(self) -> ForwarderConfig:
        return ForwarderConfig(
            batch_size=self.batch_size,
            linger=self.linger_ms / 1000.0,
            use_fallback=self.fallback_to_storage,
        )


class IngestorRuntime:
    """The running pipeline of one config entry."""

    def __init__(self, hass: HomeAssistant, entry: ConfigEntry) -> None:
        self.hass = hass
        self.entry = entry
        self.settings = IngestorSettings.from_entry(entry)
        self.metrics = PipelineMetrics()
        self.encoder = EventEncoder(EventValidator())
        session = async_get_clientsession(hass, verify_ssl=self.settings.verify_ssl)
        self.registry = ServiceRegistry(
            session,
            interval=self.settings.health_interval,
            probe_interval=PROBE_INTERVAL,
            timeout=HEALTH_TIMEOUT,
        )
        self.registry.add_listener(self._availability_changed)
        self.clients: dict[str, ServiceHTTPClient] = {}
        for name, urls in self.services().items():
            self.registry.register_service(name, urls)
            self.clients[name] = ServiceHTTPClient(
                name,
                urls,
                session,
                token=self.settings.token,
                timeouts=REQUEST_TIMEOUTS,
                registry=self.registry,
            )
        self.outbox = self._new_outbox()
        self.forwarder = self._new_forwarder()
        self.listener = EventListener(hass, self.outbox, own_entities(hass))
        self._unsub_weather: Callable[[], None] | None = None
        self._base_context: EnvelopeContext = {}
        self.backfill = Backfiller(hass, self)
        self.mark = CaptureMark(hass, self)

    # -- wiring ----------------------------------------------------------------------

    def services(self) -> dict[str, tuple[str, ...]]:
        """The configured services and their URLs (enrichment is optional)."""
        services = {SERVICE_STORAGE: self.settings.storage_urls}
        if self.settings.enrichment_urls:
            services[SERVICE_ENRICHMENT] = self.settings.enrichment_urls
        return services

    def _new_outbox(self) -> Outbox[Captured]:
        return Outbox(
            outbox_path(self.hass, self.entry.entry_id),
            self.encoder,
            durability=self.settings.durability,
            max_events=self.settings.max_events,
            max_bytes=self.settings.max_megabytes * 1024 * 1024,
            logger=LOGGER,
        )

    def _new_forwarder(self) -> EventForwarder:
        storage = Route(SERVICE_STORAGE, self.clients[SERVICE_STORAGE])
        enrichment = self.clients.get(SERVICE_ENRICHMENT)
        primary = Route(SERVICE_ENRICHMENT, enrichment) if enrichment else storage
        return EventForwarder(
            self.outbox,
            primary,
            storage if enrichment else None,
            self.settings.forwarder_config(),
            metrics=self.metrics,
            on_auth_failure=self._auth_failed,
            logger=LOGGER,
        )

    # -- lifecycle -------------------------------------------------------------------

    async def async_start(self) -> None:
        """Open the outbox, start delivery and health checks, then listen.

        When a step fails (the outbox file cannot be opened), whatever had started is
        stopped before the error goes on, so a retried set-up leaves nothing behind.
        """
        try:
            self._base_context = await self._envelope_context()
            self._track_weather()
            since = await self.mark.async_load() if self.settings.gap_fill else None
            await self.outbox.open()
            self.forwarder.start()
            self.registry.start()
            self.listener.subscribe(
                list(self.settings.event_types), self.settings.entity_filter_object()
            )
            if self.settings.gap_fill:
                self.mark.async_start()
                if since is not None and self._forwards_state_changes():
                    # What the recorder kept while nothing listened (backfill.py).
                    self.backfill.async_schedule_gap_fill(
                        since, time.time(), self.settings.gap_fill_max_hours
                    )
        except BaseException:
            await self.async_stop()
            raise

    def _forwards_state_changes(self) -> bool:
        return bool({EVENT_STATE_CHANGED, ALL_EVENTS} & set(self.settings.event_types))

    async def async_stop(self) -> None:
        """Stop listening, let the batch in flight settle, write everything to the file."""
        # Events were captured until now (the gap fill starts here next time).
        captured_until = time.time() if self.listener.subscribed else None
        self.listener.unsubscribe()
        await self.backfill.async_shutdown()
        await self.mark.async_stop(captured_until if self.settings.gap_fill else None)
        if self._unsub_weather is not None:
            self._unsub_weather()
            self._unsub_weather = None
        await self.forwarder.stop()
        await self.registry.stop()
        await self.outbox.close()

    async def async_apply_options(self, entry: ConfigEntry) -> None:
        """Apply changed options live; queued and arriving events are kept."""
        old, new = self.settings, IngestorSettings.from_entry(entry)
        self.settings = new
        if (old.durability, old.max_events, old.max_megabytes) != (
            new.durability,
            new.max_events,
            new.max_megabytes,
        ):
            await self._replace_outbox()
        self.forwarder.update_config(new.forwarder_config())
        if old.health_interval != new.health_interval:
            self.registry.set_interval(new.health_interval)
        if old.weather_entity != new.weather_entity:
            self._track_weather()
        if (old.event_types, old.entity_filter) != (new.event_types, new.entity_filter):
            self.listener.subscribe(list(new.event_types), new.entity_filter_object())
        if new.gap_fill and not old.gap_fill:
            self.mark.async_start(time.time())
        elif old.gap_fill and not new.gap_fill:
            await self.mark.async_stop(None)

    async def _replace_outbox(self) -> None:
        """New durability or caps: reopen the file, holding new events meanwhile."""
        self.listener.hold()
        try:
            paused = self.forwarder.paused
            await self.forwarder.stop()
            await self.outbox.close()
            self.outbox = self._new_outbox()
            await self.outbox.open()
            self.forwarder = self._new_forwarder()
            if paused:
                self.forwarder.pause()
            self.forwarder.start()
        finally:
            self.listener.release_to(self.outbox)

    # -- envelope context ------------------------------------------------------------

    async def _envelope_context(self) -> EnvelopeContext:
        config = self.hass.config
        return {
            "instance_id": await instance_id.async_get(self.hass),
            "location": {
                "latitude": config.latitude,
                "longitude": config.longitude,
                "elevation": config.elevation,
                "time_zone": config.time_zone,
            },
        }

    @callback
    def _track_weather(self) -> None:
        if self._unsub_weather is not None:
            self._unsub_weather()
            self._unsub_weather = None
        entity_id = self.settings.weather_entity
        self._set_weather(entity_id)
        if entity_id is None:
            return

        @callback
        def _weather_changed(event: Event[EventStateChangedData]) -> None:
            self._set_weather(entity_id)

        self._unsub_weather = async_track_state_change_event(
            self.hass, [entity_id], _weather_changed
        )

    @callback
    def _set_weather(self, entity_id: str | None) -> None:
        context: EnvelopeContext = dict(self._base_context)  # type: ignore[assignment]
        weather = weather_from_state(self.hass.states.get(entity_id)) if entity_id else None
        if weather is not None:
            context["weather"] = weather
        self.encoder.set_context(context)

    # -- reactions -------------------------------------------------------------------

    @callback
    def _availability_changed(self, service: str, url: str, available: bool) -> None:
        # The forwarder in use now (a new outbox brings a new forwarder).
        self.forwarder.on_availability(service, url, available)

    @callback
    def _auth_failed(self, service: str) -> None:
        LOGGER.error("The %s service refused the API token; reauthentication needed", service)
        self.entry.async_start_reauth(self.hass)
