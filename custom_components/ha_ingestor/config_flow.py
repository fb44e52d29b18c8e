"""Config flow for HA Ingestor: set up (typed in or discovered), reauthenticate, reconfigure.

Before an entry is created (or its connection changed) every configured URL is checked
(`service_checks`): its health must name the right service and its stats take the token.
When the token would then travel over plain ``http://`` to another machine, a
confirmation step (``plain_http``) says so before anything is saved; the user may go on.

The entry's unique id is its storage service's id (identity.py) when the service gives
one, else (an older service) its storage URL. Services announced over zeroconf start the
``zeroconf`` step (discovery.py): a new storage service gets a confirm form asking only
for the token, with an enrichment service of the same machine offered along; a known one
has its entry follow it to its new address; an enrichment service announced beside an
entry without one is offered to that entry.

Entry data (all keys always present):

- ``storage_url``: str, normalized (lower-case scheme and host, no default port, no
  trailing slash)
- ``storage_failover_urls``: list[str], normalized, without the primary or duplicates
- ``enrichment_url``: str | None (None: events go straight to storage)
- ``enrichment_failover_urls``: list[str] (empty when ``enrichment_url`` is None)
- ``api_token``: str, the bearer token for both services ("" only for a discovered
  service that announced it needs none)
- ``verify_ssl``: bool

Options: the options flow (options_flow.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import voluptuous as vol
from homeassistant.config_entries import (
    SOURCE_IGNORE,
    SOURCE_RECONFIGURE,
    ConfigEntry,
    ConfigFlow,
    ConfigFlowResult,
)
from homeassistant.core import callback
from homeassistant.helpers.selector import (
    BooleanSelector,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)
from yarl import URL

from .const import (
    CONF_API_TOKEN,
    CONF_ENRICHMENT_FAILOVER_URLS,
    CONF_ENRICHMENT_URL,
    CONF_STORAGE_FAILOVER_URLS,
    CONF_STORAGE_URL,
    CONF_VERIFY_SSL,
    DOMAIN,
    LOGGER,
    SERVICE_ENRICHMENT,
)
from .discovery import (
    Announcement,
    enrichment_beside,
    entries_on_machine,
    entry_using,
    is_announced_service,
    parse_announcement,
    remember_enrichment,
    storage_updates,
)
from .identity import async_adopt_service_id, is_service_id
from .options_flow import IngestorOptionsFlow, default_options
from .service_checks import CheckResult, async_check_services, plain_http_urls

if TYPE_CHECKING:
    from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo

__all__ = ["IngestorConfigFlow", "default_options", "normalize_url"]

# The confirmation step shown when the token would cross the network in clear text, and
# where the README says how to run the services safely.
STEP_PLAIN_HTTP = "plain_http"
SAFE_SERVICES_DOCS = "https://github.com/ha-ingestor/ha-ingestor#running-the-services-safely"
# The discovery confirm form's switch for the enrichment service found beside storage.
CONF_USE_ENRICHMENT = "use_enrichment"


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

    # 1.2: the unique id is the storage service's id once it was seen (identity.py).
    VERSION = 1
    MINOR_VERSION = 2

    # Checked connection data waiting for the plain-http confirmation.
    _checked: dict[str, Any] | None = None
    # The announced service this discovery flow is about ...
    _announced: Announcement | None = None
    # ... the enrichment service its confirm form offers along (as last shown) ...
    _beside: Announcement | None = None
    # ... or, for an announced enrichment service, the entry it is offered to.
    _enrich_entry: ConfigEntry | None = None

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> IngestorOptionsFlow:
        """The options flow (it reads the entry from ``self.config_entry``)."""
        return IngestorOptionsFlow()

    def _used_by_another_entry(self, storage_url: str, own: ConfigEntry | None = None) -> bool:
        """True when another HA Ingestor entry has this storage URL."""
        return any(
            storage_url in (entry.unique_id, entry.data.get(CONF_STORAGE_URL))
            for entry in self.hass.config_entries.async_entries(DOMAIN)
            if own is None or entry.entry_id != own.entry_id
        )

    async def _async_validate(self, data: Mapping[str, Any]) -> CheckResult:
        try:
            return await async_check_services(self.hass, data)
        except Exception:
            LOGGER.exception("Unexpected error while checking the HA Ingestor services")
            return CheckResult({"base": "unknown"})

    async def _async_claim(
        self, checked: CheckResult, url: str, own: ConfigEntry | None = None
    ) -> dict[str, str]:
        """Take the service's id (for an older service: its URL) as the flow's unique id;
        an error when another entry has set up that service meanwhile or by another URL."""
        existing = await self.async_set_unique_id(
            checked.storage_id or url, raise_on_progress=False
        )
        if (
            existing is None
            or existing.source == SOURCE_IGNORE
            or (own is not None and existing.entry_id == own.entry_id)
        ):
            return {}
        same_url = existing.data.get(CONF_STORAGE_URL) == url
        return {CONF_STORAGE_URL: "storage_url_in_use" if same_url else "storage_service_in_use"}

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """The user adds the integration: URLs, token, TLS verification."""
        errors: dict[str, str] = {}
        if user_input is not None:
            data, errors = _parse_connection(user_input)
            # A form error, not an abort: the dialog stays open with what was typed.
            if not errors and self._used_by_another_entry(data[CONF_STORAGE_URL]):
                errors[CONF_STORAGE_URL] = "storage_url_in_use"
            if not errors:
                checked = await self._async_validate(data)
                errors = checked.errors or await self._async_claim(checked, data[CONF_STORAGE_URL])
            if not errors:
                return await self._async_save_or_warn(data)
        # The `unused-ignore` marks: types that differ between the supported Home Assistant
        # releases (docs/ARCHITECTURE.md, "Supported Home Assistant releases").
        return self.async_show_form(
            step_id="user",
            data_schema=self.add_suggested_values_to_schema(CONNECTION_SCHEMA, user_input),  # type: ignore[arg-type, unused-ignore]
            errors=errors,
        )

    # -- discovery ------------------------------------------------------------------------

    async def async_step_zeroconf(self, discovery_info: ZeroconfServiceInfo) -> ConfigFlowResult:
        """A service announced itself (discovery.py); storage and enrichment differ."""
        found = parse_announcement(discovery_info)
        if isinstance(found, str):
            return self.async_abort(reason=found)
        self._announced = found
        name = URL(found.url).host_port_subcomponent or found.url
        self.context["title_placeholders"] = {"name": f"{found.role} {name}"}
        if found.role == SERVICE_ENRICHMENT:
            return await self._async_enrichment_announced(found)
        existing = await self.async_set_unique_id(found.service_id)
        if existing is None and (entry := entry_using(self.hass, found)) is not None:
            # Set up already, by URL: an entry from before service ids learns its id
            # here (when this is its main URL). Else it is another entry's failover, or
            # another service took the address of an entry keyed by its own id: that
            # entry keeps its id (reconfigure would refuse this one).
            main = is_announced_service(entry.data[CONF_STORAGE_URL], found)
            if main and not is_service_id(entry.unique_id):
                async_adopt_service_id(self.hass, entry, found.service_id)
            return self.async_abort(reason="already_configured")
        updates: dict[str, Any] = {}
        if existing is not None and existing.source != SOURCE_IGNORE:
            # Known: its URL follows the service (the entry reloads; the outbox keeps
            # what is queued, and the registry starts over at the new address).
            updates = storage_updates(existing, found)
            if updates and existing.title == _title(existing.data[CONF_STORAGE_URL]):
                self.hass.config_entries.async_update_entry(
                    existing, title=_title(updates[CONF_STORAGE_URL])
                )
        self._abort_if_unique_id_configured(updates=updates)
        return await self.async_step_zeroconf_confirm()

    async def async_step_zeroconf_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Add the announced storage service: the token (when it needs one), and the
        enrichment service of the same machine when one was announced."""
        found = self._announced
        assert found is not None
        errors: dict[str, str] = {}
        if user_input is not None:
            beside = self._beside if user_input.get(CONF_USE_ENRICHMENT) else None
            data = {
                CONF_STORAGE_URL: found.url,
                CONF_STORAGE_FAILOVER_URLS: [],
                CONF_ENRICHMENT_URL: beside.url if beside else None,
                CONF_ENRICHMENT_FAILOVER_URLS: [],
                CONF_API_TOKEN: str(user_input.get(CONF_API_TOKEN) or "").strip(),
                CONF_VERIFY_SSL: True,
            }
            if found.token_required and not data[CONF_API_TOKEN]:
                errors[CONF_API_TOKEN] = "invalid_auth"
            else:
                checked = await self._async_validate(data)
                errors = _confirm_errors(checked.errors)
                if not errors and checked.storage_id != found.service_id:
                    # Another service answers at the announced address now.
                    return self.async_abort(reason="wrong_service")
            if not errors:
                return await self._async_save_or_warn(data)
        # Looked up at each showing: the enrichment service may announce itself later.
        beside = enrichment_beside(self.hass, found)
        self._beside = beside if beside and entry_using(self.hass, beside) is None else None
        schema: dict[Any, Any] = {}
        if found.token_required:
            schema[vol.Required(CONF_API_TOKEN)] = _TOKEN_SELECTOR
        if self._beside is not None:
            schema[vol.Required(CONF_USE_ENRICHMENT, default=True)] = BooleanSelector()
        return self.async_show_form(
            step_id="zeroconf_confirm",
            data_schema=vol.Schema(schema),  # type: ignore[arg-type, unused-ignore]
            description_placeholders={
                "url": found.url,
                "enrichment_url": self._beside.url if self._beside else "-",
            },
            errors=errors,
        )

    async def _async_enrichment_announced(self, found: Announcement) -> ConfigFlowResult:
        """An enrichment service: offered to the entry of its machine that has none."""
        # One flow per service, which the user may ignore for good.
        await self.async_set_unique_id(found.service_id)
        self._abort_if_unique_id_configured()
        if entry_using(self.hass, found) is not None:
            return self.async_abort(reason="already_configured")
        # Kept for a storage service of this machine set up later (its confirm form).
        remember_enrichment(self.hass, found)
        on_machine = entries_on_machine(self.hass, found)
        without = [entry for entry in on_machine if not entry.data.get(CONF_ENRICHMENT_URL)]
        if not without:
            reason = "enrichment_already_set" if on_machine else "storage_not_set_up"
            return self.async_abort(reason=reason)
        self._enrich_entry = without[0]
        return await self.async_step_enrichment_confirm()

    async def async_step_enrichment_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Send the entry's events through the announced enrichment service."""
        entry, found = self._enrich_entry, self._announced
        assert entry is not None
        assert found is not None
        errors: dict[str, str] = {}
        if user_input is not None:
            data = {
                **entry.data,
                CONF_ENRICHMENT_URL: found.url,
                CONF_ENRICHMENT_FAILOVER_URLS: [],
            }
            errors = _confirm_errors((await self._async_validate(data)).errors)
            if not errors:
                return await self._async_save_or_warn(data)
        return self.async_show_form(
            step_id="enrichment_confirm",
            data_schema=vol.Schema({}),  # type: ignore[arg-type, unused-ignore]
            description_placeholders={"url": found.url, "entry": entry.title},
            errors={"base": errors[next(iter(errors))]} if errors else {},
        )

    # -- reauth and reconfigure -----------------------------------------------------------

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
                for field, error in found.errors.items():
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
                checked = await self._async_validate(data)
                errors = checked.errors
            if not errors and is_service_id(entry.unique_id):
                # The entry knows its service: another one (or one without an id) is
                # refused, as Home Assistant's integrations refuse another device.
                await self.async_set_unique_id(checked.storage_id, raise_on_progress=False)
                self._abort_if_unique_id_mismatch(reason="wrong_service")
            elif not errors:
                errors = await self._async_claim(checked, data[CONF_STORAGE_URL], entry)
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

    # -- saving ---------------------------------------------------------------------------

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
        """Create the entry, or update the reconfigured (or enriched) one and reload it."""
        if self._enrich_entry is not None:
            return self.async_update_reload_and_abort(
                self._enrich_entry,
                data_updates={
                    CONF_ENRICHMENT_URL: data[CONF_ENRICHMENT_URL],
                    CONF_ENRICHMENT_FAILOVER_URLS: [],
                },
                reason="enrichment_added",
            )
        if self.source != SOURCE_RECONFIGURE:
            # Another flow may have added this service while it was checked.
            self._abort_if_unique_id_configured()
            return self.async_create_entry(
                title=_title(data[CONF_STORAGE_URL]), data=data, options=default_options()
            )
        entry = self._get_reconfigure_entry()
        # Another flow may have taken this URL or service while it was checked.
        entries = self.hass.config_entries
        taken = entries.async_entry_for_domain_unique_id(DOMAIN, self.unique_id or "")
        if self._used_by_another_entry(data[CONF_STORAGE_URL], entry) or (
            taken is not None and taken.entry_id != entry.entry_id
        ):
            return self.async_abort(reason="already_configured")
        title = entry.title
        if title == _title(str(entry.data.get(CONF_STORAGE_URL))):
            title = _title(data[CONF_STORAGE_URL])  # the title was ours: follow the URL
        return self.async_update_reload_and_abort(
            entry, unique_id=self.unique_id, title=title, data_updates=data
        )


def _confirm_errors(errors: Mapping[str, str]) -> dict[str, str]:
    """A confirm form shows no URL fields: their errors go to the form (the token's and
    the offered enrichment's to their own field)."""
    shown: dict[str, str] = {}
    for field, error in errors.items():
        if field in (CONF_ENRICHMENT_URL, CONF_ENRICHMENT_FAILOVER_URLS):
            shown.setdefault(CONF_USE_ENRICHMENT, error)
        else:
            shown.setdefault(field if field == CONF_API_TOKEN else "base", error)
    return shown
