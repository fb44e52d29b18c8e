"""Constants of the HA Ingestor integration."""

from __future__ import annotations

import logging
from typing import Final

from .pipeline.outbox import Durability

DOMAIN: Final = "ha_ingestor"
LOGGER = logging.getLogger(__package__)

# Entry data (set in the config flow; changed by reauth and reconfigure).
CONF_STORAGE_URL: Final = "storage_url"
CONF_STORAGE_FAILOVER_URLS: Final = "storage_failover_urls"
CONF_ENRICHMENT_URL: Final = "enrichment_url"
CONF_ENRICHMENT_FAILOVER_URLS: Final = "enrichment_failover_urls"
CONF_API_TOKEN: Final = "api_token"
CONF_VERIFY_SSL: Final = "verify_ssl"

# Options (the options flow; applied live).
CONF_EVENT_TYPES: Final = "event_types"
CONF_INCLUDE_DOMAINS: Final = "include_domains"
CONF_INCLUDE_ENTITIES: Final = "include_entities"
CONF_INCLUDE_ENTITY_GLOBS: Final = "include_entity_globs"
CONF_EXCLUDE_DOMAINS: Final = "exclude_domains"
CONF_EXCLUDE_ENTITIES: Final = "exclude_entities"
CONF_EXCLUDE_ENTITY_GLOBS: Final = "exclude_entity_globs"
CONF_BATCH_SIZE: Final = "batch_size"
CONF_LINGER_MS: Final = "linger_ms"
CONF_DURABILITY: Final = "durability"
CONF_MAX_EVENTS: Final = "max_events"
CONF_MAX_MEGABYTES: Final = "max_megabytes"
CONF_FALLBACK_TO_STORAGE: Final = "fallback_to_storage"
CONF_HEALTH_INTERVAL: Final = "health_check_interval"
CONF_WEATHER_ENTITY: Final = "weather_entity"
# Seconds the oldest waiting event may age before "Delivery problem" turns on.
CONF_PROBLEM_AFTER: Final = "problem_after"
# Backfill at start what the recorder kept while the integration was not running, and
# from at most how many hours back.
CONF_GAP_FILL: Final = "gap_fill"
CONF_GAP_FILL_MAX_HOURS: Final = "gap_fill_max_hours"

ALL_EVENTS: Final = "*"  # in CONF_EVENT_TYPES: every event type
# The options flow's select offers ALL_EVENTS under this value: select values are
# translation keys, and "*" is not a valid one. Stored options keep ALL_EVENTS.
ALL_EVENTS_OPTION: Final = "all_events"

DEFAULT_EVENT_TYPES: Final = ["state_changed"]
DEFAULT_BATCH_SIZE: Final = 500
DEFAULT_LINGER_MS: Final = 200
DEFAULT_DURABILITY: Final = Durability.ALWAYS.value
DEFAULT_MAX_EVENTS: Final = 1_000_000
DEFAULT_MAX_MEGABYTES: Final = 512
DEFAULT_FALLBACK_TO_STORAGE: Final = True
DEFAULT_HEALTH_INTERVAL: Final = 30
DEFAULT_PROBLEM_AFTER: Final = 60
DEFAULT_GAP_FILL: Final = True
DEFAULT_GAP_FILL_MAX_HOURS: Final = 24

# The services' own names, as used for routes, devices and translations.
SERVICE_ENRICHMENT: Final = "enrichment"
SERVICE_STORAGE: Final = "storage"

# Event types offered in the options flow (any other type may be typed in).
SUGGESTED_EVENT_TYPES: Final = ("state_changed", "call_service", "automation_triggered")
