"""The options flow of HA Ingestor: what to forward and how.

Every option, its type and its default: `default_options`. The form shows the filters
on top and the delivery tuning in a collapsed section; the options are stored flat.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import voluptuous as vol
from homeassistant.config_entries import ConfigFlowResult, OptionsFlow
from homeassistant.const import MAX_LENGTH_EVENT_EVENT_TYPE
from homeassistant.core import HomeAssistant, split_entity_id, valid_domain
from homeassistant.data_entry_flow import section
from homeassistant.helpers.selector import (
    BooleanSelector,
    EntitySelector,
    EntitySelectorConfig,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TextSelector,
    TextSelectorConfig,
)

from .const import (
    ALL_EVENTS,
    ALL_EVENTS_OPTION,
    CONF_BATCH_SIZE,
    CONF_DURABILITY,
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
    SUGGESTED_EVENT_TYPES,
)
from .pipeline.outbox import Durability

# Bounds of the numeric options: (min, max).
BATCH_SIZE_RANGE = (1, 5000)
LINGER_MS_RANGE = (0, 1000)
MAX_EVENTS_RANGE = (1_000, 10_000_000)
MAX_MEGABYTES_RANGE = (1, 10_000)
HEALTH_INTERVAL_RANGE = (5, 3600)
PROBLEM_AFTER_RANGE = (10, 86_400)
GAP_FILL_MAX_HOURS_RANGE = (1, 720)

_FILTER_LIST_KEYS = (
    CONF_INCLUDE_DOMAINS,
    CONF_INCLUDE_ENTITIES,
    CONF_INCLUDE_ENTITY_GLOBS,
    CONF_EXCLUDE_DOMAINS,
    CONF_EXCLUDE_ENTITIES,
    CONF_EXCLUDE_ENTITY_GLOBS,
)
# Numeric options: whole numbers, stored as int.
_WHOLE_NUMBER_KEYS = (
    CONF_BATCH_SIZE,
    CONF_LINGER_MS,
    CONF_MAX_EVENTS,
    CONF_MAX_MEGABYTES,
    CONF_HEALTH_INTERVAL,
    CONF_PROBLEM_AFTER,
    CONF_GAP_FILL_MAX_HOURS,
)
# The options form's collapsed section with the delivery tuning. Only the form nests
# them: the options are stored flat, as they always were.
ADVANCED_DELIVERY = "advanced_delivery"
ADVANCED_DELIVERY_KEYS = (
    CONF_BATCH_SIZE,
    CONF_LINGER_MS,
    CONF_DURABILITY,
    CONF_MAX_EVENTS,
    CONF_MAX_MEGABYTES,
    CONF_FALLBACK_TO_STORAGE,
    CONF_HEALTH_INTERVAL,
    CONF_PROBLEM_AFTER,
    CONF_GAP_FILL,
    CONF_GAP_FILL_MAX_HOURS,
)


def default_options() -> dict[str, Any]:
    """Every option with its default; a new entry starts with these (fresh lists each call).

    Types: ``event_types`` list[str] (``"*"`` alone means every event type); the six
    entity-filter keys list[str] (the shape of Home Assistant's
    ``entityfilter.BASE_FILTER_SCHEMA``, so ``convert_filter`` takes them as they are);
    ``batch_size``, ``linger_ms``, ``max_events``, ``max_megabytes``,
    ``health_check_interval`` and ``problem_after`` (both seconds) int; ``durability``
    ``"always"`` or ``"on_backlog"``; ``fallback_to_storage`` bool; ``weather_entity``
    str or None; ``gap_fill`` bool and ``gap_fill_max_hours`` int (backfill.py).
    """
    return {
        CONF_EVENT_TYPES: list(DEFAULT_EVENT_TYPES),
        **{key: [] for key in _FILTER_LIST_KEYS},
        CONF_BATCH_SIZE: DEFAULT_BATCH_SIZE,
        CONF_LINGER_MS: DEFAULT_LINGER_MS,
        CONF_DURABILITY: DEFAULT_DURABILITY,
        CONF_MAX_EVENTS: DEFAULT_MAX_EVENTS,
        CONF_MAX_MEGABYTES: DEFAULT_MAX_MEGABYTES,
        CONF_FALLBACK_TO_STORAGE: DEFAULT_FALLBACK_TO_STORAGE,
        CONF_HEALTH_INTERVAL: DEFAULT_HEALTH_INTERVAL,
        CONF_PROBLEM_AFTER: DEFAULT_PROBLEM_AFTER,
        CONF_WEATHER_ENTITY: None,
        CONF_GAP_FILL: DEFAULT_GAP_FILL,
        CONF_GAP_FILL_MAX_HOURS: DEFAULT_GAP_FILL_MAX_HOURS,
    }


# -- the options flow ---------------------------------------------------------------------


def _number(bounds: tuple[int, int], unit: str) -> NumberSelector:
    return NumberSelector(
        NumberSelectorConfig(
            min=bounds[0],
            max=bounds[1],
            step=1,
            mode=NumberSelectorMode.BOX,
            unit_of_measurement=unit,
        )
    )


def _event_type_options(current: Sequence[str]) -> list[str]:
    """The suggested event types, all events, then any custom type already chosen.

    The fixed values are labelled by their translations (selector.event_types).
    """
    values = [*SUGGESTED_EVENT_TYPES, ALL_EVENTS_OPTION]
    return values + [value for value in current if value not in values]


def _shown_event_types(event_types: Any) -> list[str]:
    """Event types as the select holds them: the stored "*" is its "all_events" option."""
    return [
        ALL_EVENTS_OPTION if value == ALL_EVENTS else value
        for value in event_types or []
        if isinstance(value, str)
    ]


def _options_schema(hass: HomeAssistant, current: Mapping[str, Any]) -> vol.Schema:
    domains = {split_entity_id(entity_id)[0] for entity_id in hass.states.async_entity_ids()}
    for key in (CONF_INCLUDE_DOMAINS, CONF_EXCLUDE_DOMAINS):
        domains.update(value for value in current.get(key) or [] if isinstance(value, str))
    domain_selector = SelectSelector(
        SelectSelectorConfig(
            options=sorted(domains),
            multiple=True,
            custom_value=True,
            mode=SelectSelectorMode.DROPDOWN,
        )
    )
    entities_selector = EntitySelector(EntitySelectorConfig(multiple=True))
    globs_selector = TextSelector(TextSelectorConfig(multiple=True))
    event_types = [v for v in current.get(CONF_EVENT_TYPES) or [] if isinstance(v, str)]
    return vol.Schema(
        {
            vol.Required(CONF_EVENT_TYPES): SelectSelector(
                SelectSelectorConfig(
                    options=_event_type_options(event_types),
                    multiple=True,
                    custom_value=True,
                    mode=SelectSelectorMode.DROPDOWN,
                    translation_key=CONF_EVENT_TYPES,
                )
            ),
            vol.Optional(CONF_INCLUDE_DOMAINS): domain_selector,
            vol.Optional(CONF_INCLUDE_ENTITIES): entities_selector,
            vol.Optional(CONF_INCLUDE_ENTITY_GLOBS): globs_selector,
            vol.Optional(CONF_EXCLUDE_DOMAINS): domain_selector,
            vol.Optional(CONF_EXCLUDE_ENTITIES): entities_selector,
            vol.Optional(CONF_EXCLUDE_ENTITY_GLOBS): globs_selector,
            vol.Optional(CONF_WEATHER_ENTITY): EntitySelector(
                EntitySelectorConfig(domain="weather")
            ),
            vol.Required(ADVANCED_DELIVERY): section(
                vol.Schema(  # type: ignore[arg-type, unused-ignore]
                    {
                        vol.Required(CONF_BATCH_SIZE): _number(BATCH_SIZE_RANGE, "events"),
                        vol.Required(CONF_LINGER_MS): _number(LINGER_MS_RANGE, "ms"),
                        vol.Required(CONF_DURABILITY): SelectSelector(
                            SelectSelectorConfig(
                                options=[durability.value for durability in Durability],
                                mode=SelectSelectorMode.LIST,
                                translation_key=CONF_DURABILITY,
                            )
                        ),
                        vol.Required(CONF_MAX_EVENTS): _number(MAX_EVENTS_RANGE, "events"),
                        vol.Required(CONF_MAX_MEGABYTES): _number(MAX_MEGABYTES_RANGE, "MB"),
                        vol.Required(CONF_FALLBACK_TO_STORAGE): BooleanSelector(),
                        vol.Required(CONF_HEALTH_INTERVAL): _number(HEALTH_INTERVAL_RANGE, "s"),
                        vol.Required(CONF_PROBLEM_AFTER): _number(PROBLEM_AFTER_RANGE, "s"),
                        vol.Required(CONF_GAP_FILL): BooleanSelector(),
                        vol.Required(CONF_GAP_FILL_MAX_HOURS): _number(
                            GAP_FILL_MAX_HOURS_RANGE, "h"
                        ),
                    }
                ),
                {"collapsed": True},
            ),
        }
    )


def _nested(options: Mapping[str, Any]) -> dict[str, Any]:
    """Flat options in the form's shape: the delivery tuning inside its section."""
    form = {key: value for key, value in options.items() if key not in ADVANCED_DELIVERY_KEYS}
    form[ADVANCED_DELIVERY] = {
        key: options[key] for key in ADVANCED_DELIVERY_KEYS if key in options
    }
    return form


def _flat(user_input: Mapping[str, Any]) -> dict[str, Any]:
    """The form's input with the section's fields back at the top, as options are stored."""
    flat = {key: value for key, value in user_input.items() if key != ADVANCED_DELIVERY}
    flat.update(user_input.get(ADVANCED_DELIVERY) or {})
    return flat


def _unique(values: Any) -> list[str]:
    """Stripped strings in first-seen order, without duplicates (None: none)."""
    if values is None:
        return []
    result: list[str] = []
    for value in values:
        text = str(value).strip()
        if text not in result:
            result.append(text)
    return result


def _valid_glob(glob: str) -> bool:
    # Entity ids are lower case without spaces: such a glob could never match.
    return bool(glob) and glob == glob.lower() and not any(char.isspace() for char in glob)


def _parse_options(user_input: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Clean options from the form's input, and what is wrong with it."""
    errors: dict[str, str] = {}
    event_types = _unique(user_input.get(CONF_EVENT_TYPES))
    if not event_types:
        errors[CONF_EVENT_TYPES] = "no_event_types"
    elif any(
        not event_type
        or len(event_type) > MAX_LENGTH_EVENT_EVENT_TYPE
        or any(char.isspace() for char in event_type)
        for event_type in event_types
    ):
        errors[CONF_EVENT_TYPES] = "invalid_event_type"
    elif ALL_EVENTS_OPTION in event_types or ALL_EVENTS in event_types:
        # Every type (chosen, or typed as "*"): naming others as well adds nothing.
        event_types = [ALL_EVENTS]
    options: dict[str, Any] = {CONF_EVENT_TYPES: event_types}
    for key in (CONF_INCLUDE_DOMAINS, CONF_EXCLUDE_DOMAINS):
        options[key] = _unique(user_input.get(key))
        if not all(valid_domain(domain) for domain in options[key]):
            errors[key] = "invalid_domain"
    for key in (CONF_INCLUDE_ENTITIES, CONF_EXCLUDE_ENTITIES):
        options[key] = _unique(user_input.get(key))
    for key in (CONF_INCLUDE_ENTITY_GLOBS, CONF_EXCLUDE_ENTITY_GLOBS):
        options[key] = _unique(user_input.get(key))
        if not all(_valid_glob(glob) for glob in options[key]):
            errors[key] = "invalid_glob"
    for key in _WHOLE_NUMBER_KEYS:
        # The selector gives a float within bounds, but does not enforce the step of 1.
        number = float(user_input[key])
        if not number.is_integer():
            errors[key] = "not_whole_number"
        options[key] = int(number)
    options[CONF_DURABILITY] = str(user_input[CONF_DURABILITY])
    options[CONF_FALLBACK_TO_STORAGE] = bool(user_input[CONF_FALLBACK_TO_STORAGE])
    options[CONF_GAP_FILL] = bool(user_input.get(CONF_GAP_FILL, DEFAULT_GAP_FILL))
    options[CONF_WEATHER_ENTITY] = user_input.get(CONF_WEATHER_ENTITY) or None
    return options, errors


class IngestorOptionsFlow(OptionsFlow):
    """What to forward and how: event types, entity filter, batching, outbox, health."""

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Filters on top, delivery tuning in a collapsed section; current values filled in."""
        errors: dict[str, str] = {}
        if user_input is not None:
            current = _flat(user_input)
            options, errors = _parse_options(current)
            if not errors:
                return self.async_create_entry(data=options)
        else:
            current = {**default_options(), **self.config_entry.options}
        current[CONF_EVENT_TYPES] = _shown_event_types(current.get(CONF_EVENT_TYPES))
        # The frontend shows a section's errors above the section, not at its fields.
        form_errors: dict[str, str] = {}
        for key, error in errors.items():
            form_errors.setdefault(
                ADVANCED_DELIVERY if key in ADVANCED_DELIVERY_KEYS else key, error
            )
        return self.async_show_form(
            step_id="init",
            data_schema=self.add_suggested_values_to_schema(
                _options_schema(self.hass, current),  # type: ignore[arg-type, unused-ignore]
                _nested(current),
            ),
            errors=form_errors,
        )
