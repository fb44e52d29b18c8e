"""Config flow for HA Ingestor: set up, reauthenticate, reconfigure and tune the options.

Before an entry is created (or its connection changed) every configured URL is checked
(`service_checks`): its health must name the right service and its stats take the token.
When the token would then travel over plain ``http://`` to another machine, a
confirmation step (``plain_http``) says so before anything is saved; the user may go on.

Entry data (all keys always present):

- ``storage_url``: str, normalized (lower-case scheme and host, no default port, no
  trailing slash); also the entry's unique id
- ``storage_failover_urls``: list[str], normalized, without the primary or duplicates
- ``enrichment_url``: str | None (None: events go straight to storage)
- ``enrichment_failover_urls``: list[str] (empty when ``enrichment_url`` is None)
- ``api_token``: str, the bearer token for both services
- ``verify_ssl``: bool

Options: see `default_options` for every key, its type and its default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import voluptuous as vol
from homeassistant.config_entries import (
    SOURCE_RECONFIGURE,
    ConfigEntry,
    ConfigFlow,
    ConfigFlowResult,
    OptionsFlow,
)
from homeassistant.const import MAX_LENGTH_EVENT_EVENT_TYPE
from homeassistant.core import HomeAssistant, callback, split_entity_id, valid_domain
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
    TextSelectorType,
)
from yarl import URL

from .const import (
    ALL_EVENTS,
    ALL_EVENTS_OPTION,
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
    SUGGESTED_EVENT_TYPES,
)
from .pipeline.outbox import Durability
from .service_checks import async_check_services, plain_http_urls

# The confirmation step shown when the token would cross the network in clear text, and
# where the README says how to run the services safely.
STEP_PLAIN_HTTP = "plain_http"
SAFE_SERVICES_DOCS = "https://github.com/ha-ingestor/ha-ingestor#running-the-services-safely"

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


# -- connection: URLs -------------------------------------------------------------------

_URL_SELECTOR = TextSelector(TextSelectorConfig(type=TextSelectorType.URL, autocomplete="url"))
_URLS_SELECTOR = TextSelector(
    TextSelectorConfig(type=TextSelectorType.URL, autocomplete="url", multiple=True)
)
_TOKEN_SELECTOR = TextSelector(
    TextSelectorConfig(type=TextSelectorType.PASSWORD, autocomplete="current-password")
)

CONNECTION_SCHEMA = vol.Schema(
    {
        vol.Required(CONF_STORAGE_URL): _URL_SELECTOR,
        vol.Optional(CONF_STORAGE_FAILOVER_URLS): _URLS_SELECTOR,
        vol.Optional(CONF_ENRICHMENT_URL): _URL_SELECTOR,
        vol.Optional(CONF_ENRICHMENT_FAILOVER_URLS): _URLS_SELECTOR,
        vol.Required(CONF_API_TOKEN): _TOKEN_SELECTOR,
        vol.Required(CONF_VERIFY_SSL, default=True): BooleanSelector(),
    }
)
REAUTH_SCHEMA = vol.Schema({vol.Required(CONF_API_TOKEN): _TOKEN_SELECTOR})


def normalize_url(value: Any) -> str | None:
    """A service base URL in one spelling, or None when it is not a usable http(s) URL.

    Scheme and host lower-case, the default port dropped, no trailing slash; a path
    prefix (a service behind a reverse proxy) is kept. Credentials, a query or a
    fragment make it unusable: the token is the only credential.
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or any(char.isspace() for char in text):
        return None
    try:
        url = URL(text)
        port = url.port
    except ValueError:
        return None
    if (
        url.scheme not in ("http", "https")
        or not url.host
        or not port
        or url.user is not None
        or url.password is not None
        or url.query_string
        or url.fragment
    ):
        return None
    return str(url.origin()) + url.raw_path.rstrip("/")


def _title(storage_url: str) -> str:
    return f"HA Ingestor ({URL(storage_url).host_port_subcomponent})"


def _url_list(values: Any, primary: str | None) -> list[str] | None:
    """Normalized URLs without blanks, duplicates or the primary; None if one is invalid."""
    if values is None:
        return []
    urls: list[str] = []
    for value in values:
        if isinstance(value, str) and not value.strip():
            continue  # an empty row the form left behind
        url = normalize_url(value)
        if url is None:
            return None
        if url != primary and url not in urls:
            urls.append(url)
    return urls


def _parse_connection(user_input: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The entry data for a connection form's input, and the errors found without I/O."""
    errors: dict[str, str] = {}
    storage = normalize_url(user_input.get(CONF_STORAGE_URL))
    if storage is None:
        errors[CONF_STORAGE_URL] = "invalid_url"
    enrichment: str | None = None
    enrichment_text = user_input.get(CONF_ENRICHMENT_URL)
    if isinstance(enrichment_text, str) and not enrichment_text.strip():
        enrichment_text = None
    if enrichment_text is not None:
        enrichment = normalize_url(enrichment_text)
        if enrichment is None:
            errors[CONF_ENRICHMENT_URL] = "invalid_url"
    storage_failover = _url_list(user_input.get(CONF_STORAGE_FAILOVER_URLS), storage)
    if storage_failover is None:
        errors[CONF_STORAGE_FAILOVER_URLS] = "invalid_url"
    enrichment_failover = _url_list(user_input.get(CONF_ENRICHMENT_FAILOVER_URLS), enrichment)
    if enrichment_failover is None:
        errors[CONF_ENRICHMENT_FAILOVER_URLS] = "invalid_url"
    elif enrichment_failover and enrichment_text is None:
        errors[CONF_ENRICHMENT_FAILOVER_URLS] = "failover_without_primary"
    token = str(user_input.get(CONF_API_TOKEN) or "").strip()
    if not token:
        errors[CONF_API_TOKEN] = "invalid_auth"
    data = {
        CONF_STORAGE_URL: storage,
        CONF_STORAGE_FAILOVER_URLS: storage_failover or [],
        CONF_ENRICHMENT_URL: enrichment,
        CONF_ENRICHMENT_FAILOVER_URLS: enrichment_failover or [],
        CONF_API_TOKEN: token,
        CONF_VERIFY_SSL: bool(user_input.get(CONF_VERIFY_SSL, True)),
    }
    return data, errors


# -- the config flow ----------------------------------------------------------------------


class IngestorConfigFlow(ConfigFlow, domain=DOMAIN):
    """Set up HA Ingestor: where the services are and how to authenticate."""

    VERSION = 1
    MINOR_VERSION = 1

    # Checked connection data waiting for the plain-http confirmation.
    _checked: dict[str, Any] | None = None

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> IngestorOptionsFlow:
        """The options flow (it reads the entry from ``self.config_entry``)."""
        return IngestorOptionsFlow()

    def _used_by_another_entry(self, storage_url: str, own: ConfigEntry | None = None) -> bool:
        """True when another HA Ingestor entry has this storage URL (its unique id)."""
        entry = self.hass.config_entries.async_entry_for_domain_unique_id(DOMAIN, storage_url)
        return entry is not None and (own is None or entry.entry_id != own.entry_id)

    async def _async_validate(self, data: Mapping[str, Any]) -> dict[str, str]:
        try:
            return await async_check_services(self.hass, data)
        except Exception:
            LOGGER.exception("Unexpected error while checking the HA Ingestor services")
            return {"base": "unknown"}

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """The user adds the integration: URLs, token, TLS verification."""
        errors: dict[str, str] = {}
        if user_input is not None:
            data, errors = _parse_connection(user_input)
            if not errors:
                await self.async_set_unique_id(data[CONF_STORAGE_URL], raise_on_progress=False)
                # A form error, not an abort: the dialog stays open with what was typed.
                if self._used_by_another_entry(data[CONF_STORAGE_URL]):
                    errors[CONF_STORAGE_URL] = "storage_url_in_use"
            if not errors:
                errors = await self._async_validate(data)
            if not errors:
                return await self._async_save_or_warn(data)
        # The `unused-ignore` marks: types that differ between the supported Home Assistant
        # releases (docs/ARCHITECTURE.md, "Supported Home Assistant releases").
        return self.async_show_form(
            step_id="user",
            data_schema=self.add_suggested_values_to_schema(CONNECTION_SCHEMA, user_input),  # type: ignore[arg-type, unused-ignore]
            errors=errors,
        )

    async def async_step_reauth(self, entry_data: Mapping[str, Any]) -> ConfigFlowResult:
        """A service refused the token (HTTP 401/403)."""
        return await self.async_step_reauth_confirm()

    async def async_step_reauth_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for a new token and check it against every configured URL."""
        entry = self._get_reauth_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            token = str(user_input.get(CONF_API_TOKEN) or "").strip()
            if not token:
                errors[CONF_API_TOKEN] = "invalid_auth"
            else:
                found = await self._async_validate({**entry.data, CONF_API_TOKEN: token})
                # The URLs are not on this form: their errors go to the form as a whole.
                for field, error in found.items():
                    errors.setdefault(field if field == CONF_API_TOKEN else "base", error)
            if not errors:
                return self.async_update_reload_and_abort(
                    entry, data_updates={CONF_API_TOKEN: token}
                )
        return self.async_show_form(
            step_id="reauth_confirm",
            data_schema=REAUTH_SCHEMA,  # type: ignore[arg-type, unused-ignore]
            description_placeholders={"url": str(entry.data.get(CONF_STORAGE_URL, ""))},
            errors=errors,
        )

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Change the URLs, the token or TLS verification of an existing entry."""
        entry = self._get_reconfigure_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            data, errors = _parse_connection(user_input)
            if not errors and self._used_by_another_entry(data[CONF_STORAGE_URL], entry):
                errors[CONF_STORAGE_URL] = "storage_url_in_use"
            if not errors:
                errors = await self._async_validate(data)
            if not errors:
                return await self._async_save_or_warn(data)
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=self.add_suggested_values_to_schema(
                CONNECTION_SCHEMA,  # type: ignore[arg-type, unused-ignore]
                user_input if user_input is not None else entry.data,
            ),
            errors=errors,
        )

    async def _async_save_or_warn(self, data: dict[str, Any]) -> ConfigFlowResult:
        """Save checked connection data, after the plain-http warning when it applies."""
        if plain_http_urls(data):
            self._checked = data
            return await self.async_step_plain_http()
        return self._save(data)

    async def async_step_plain_http(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Warn that the token would cross the network in clear text; the user may go on."""
        assert self._checked is not None
        if user_input is not None:
            return self._save(self._checked)
        return self.async_show_form(
            step_id=STEP_PLAIN_HTTP,
            data_schema=vol.Schema({}),  # type: ignore[arg-type, unused-ignore]
            description_placeholders={
                "urls": ", ".join(plain_http_urls(self._checked)),
                "docs_url": SAFE_SERVICES_DOCS,
            },
        )

    def _save(self, data: dict[str, Any]) -> ConfigFlowResult:
        """Create the entry, or update the reconfigured one and reload it."""
        if self.source != SOURCE_RECONFIGURE:
            # Another flow may have added this URL while the services were checked.
            self._abort_if_unique_id_configured()
            return self.async_create_entry(
                title=_title(data[CONF_STORAGE_URL]), data=data, options=default_options()
            )
        entry = self._get_reconfigure_entry()
        # Another flow may have taken this URL while the services were checked.
        if self._used_by_another_entry(data[CONF_STORAGE_URL], entry):
            return self.async_abort(reason="already_configured")
        title = entry.title
        if title == _title(str(entry.data.get(CONF_STORAGE_URL))):
            title = _title(data[CONF_STORAGE_URL])  # the title was ours: follow the URL
        return self.async_update_reload_and_abort(
            entry, unique_id=data[CONF_STORAGE_URL], title=title, data_updates=data
        )


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
