"""Actions of HA Ingestor: forward one event now, flush, dead letters, pause and resume,
backfill from the recorder and cancel a backfill.

Every action takes an optional ``config_entry_id``; without it the action acts on the
only loaded entry. Every action changes or reveals data, so a user who is not an
administrator is refused (`AdminRequired`); calls without a user (automations, scripts)
are not. Forwarding one event is forward.py, shared with the HTTP view.

The actions' descriptions stay in ``services.yaml``: Home Assistant looks for that name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, cast

import voluptuous as vol
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import ATTR_ENTITY_ID, MAX_LENGTH_EVENT_EVENT_TYPE
from homeassistant.core import (
    Context,
    HomeAssistant,
    ServiceCall,
    ServiceResponse,
    SupportsResponse,
    callback,
)
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError, Unauthorized
from homeassistant.helpers import config_validation as cv
from homeassistant.util import dt as dt_util

from .backfill import recorder_loaded
from .const import DOMAIN
from .forward import ATTR_EVENT_DATA, ATTR_EVENT_TYPE, ForwardError, async_forward_event

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    from .coordinator import IngestorConfigEntry

ATTR_CONFIG_ENTRY_ID: Final = "config_entry_id"
ATTR_TIMEOUT: Final = "timeout"
ATTR_IDS: Final = "ids"
ATTR_START: Final = "start"
ATTR_END: Final = "end"

ACTION_FORWARD_EVENT: Final = "forward_event"
ACTION_FLUSH: Final = "flush"
ACTION_REPLAY_DEAD_LETTERS: Final = "replay_dead_letters"
ACTION_PURGE_DEAD_LETTERS: Final = "purge_dead_letters"
ACTION_PAUSE: Final = "pause"
ACTION_RESUME: Final = "resume"
ACTION_BACKFILL: Final = "backfill"
ACTION_CANCEL_BACKFILL: Final = "cancel_backfill"

DEFAULT_FLUSH_TIMEOUT: Final = 30.0
MAX_FLUSH_TIMEOUT: Final = 3600.0

_ENTRY_SCHEMA: Final[dict[vol.Marker, Any]] = {vol.Optional(ATTR_CONFIG_ENTRY_ID): cv.string}

FORWARD_EVENT_SCHEMA: Final = vol.Schema(
    {
        **_ENTRY_SCHEMA,
        vol.Required(ATTR_EVENT_TYPE): vol.All(
            cv.string, vol.Length(min=1, max=MAX_LENGTH_EVENT_EVENT_TYPE)
        ),
        vol.Optional(ATTR_EVENT_DATA, default=dict): dict,
        vol.Optional(ATTR_ENTITY_ID): cv.entity_id,
    }
)
FLUSH_SCHEMA: Final = vol.Schema(
    {
        **_ENTRY_SCHEMA,
        vol.Optional(ATTR_TIMEOUT, default=DEFAULT_FLUSH_TIMEOUT): vol.All(
            vol.Coerce(float), vol.Range(min=0.1, max=MAX_FLUSH_TIMEOUT)
        ),
    }
)
DEAD_LETTERS_SCHEMA: Final = vol.Schema(
    {
        **_ENTRY_SCHEMA,
        vol.Optional(ATTR_IDS): vol.All(
            cv.ensure_list, [vol.All(vol.Coerce(int), vol.Range(min=1))]
        ),
    }
)
ENTRY_ONLY_SCHEMA: Final = vol.Schema(_ENTRY_SCHEMA)
BACKFILL_SCHEMA: Final = vol.Schema(
    {
        **_ENTRY_SCHEMA,
        vol.Required(ATTR_START): cv.datetime,
        vol.Optional(ATTR_END): cv.datetime,
        vol.Optional(ATTR_ENTITY_ID): cv.entity_ids,
    }
)


# -- which entry -------------------------------------------------------------------------


@callback
def async_get_loaded_entry(hass: HomeAssistant, entry_id: str | None) -> IngestorConfigEntry:
    """The entry an action or view acts on: the one named, or the only loaded one."""
    if entry_id is not None:
        entry = hass.config_entries.async_get_entry(entry_id)
        if entry is None or entry.domain != DOMAIN:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="entry_not_found",
                translation_placeholders={"entry_id": entry_id},
            )
        if entry.state is not ConfigEntryState.LOADED:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="entry_not_loaded",
                translation_placeholders={"title": entry.title},
            )
        return cast("IngestorConfigEntry", entry)
    loaded = hass.config_entries.async_loaded_entries(DOMAIN)
    if not loaded:
        raise ServiceValidationError(translation_domain=DOMAIN, translation_key="no_loaded_entry")
    if len(loaded) > 1:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="several_entries",
            translation_placeholders={"count": str(len(loaded))},
        )
    return cast("IngestorConfigEntry", loaded[0])


# -- the actions -------------------------------------------------------------------------


class AdminRequired(Unauthorized):
    """A user who is not an administrator called an action.

    An `Unauthorized`, so Home Assistant's APIs answer it as one (the REST API with 401),
    with a translated message, which `Unauthorized` itself does not carry.
    """

    def __init__(self, context: Context, action: str) -> None:
        super().__init__(context=context)
        HomeAssistantError.__init__(
            self,
            translation_domain=DOMAIN,
            translation_key="admin_required",
            translation_placeholders={"action": f"{DOMAIN}.{action}"},
        )


def _admin_only(
    action: str, handler: Callable[[ServiceCall], Awaitable[ServiceResponse]]
) -> Callable[[ServiceCall], Coroutine[Any, Any, ServiceResponse]]:
    """The handler, refusing a user who is not an administrator.

    As Home Assistant's `async_register_admin_service` does, which cannot be used here:
    in 2025.4 it neither registers a response nor returns one.
    """

    async def checked(call: ServiceCall) -> ServiceResponse:
        if call.context.user_id is not None:
            user = await call.hass.auth.async_get_user(call.context.user_id)
            if user is None or not user.is_admin:
                raise AdminRequired(call.context, action)
        return await handler(call)

    return checked


def _entry(call: ServiceCall) -> IngestorConfigEntry:
    return async_get_loaded_entry(call.hass, call.data.get(ATTR_CONFIG_ENTRY_ID))


async def _async_forward_event(call: ServiceCall) -> ServiceResponse:
    runtime = _entry(call).runtime_data.runtime
    try:
        result = await async_forward_event(
            runtime,
            call.data[ATTR_EVENT_TYPE],
            call.data[ATTR_EVENT_DATA],
            call.data.get(ATTR_ENTITY_ID),
            call.context,
        )
    except ForwardError as err:
        raise err.to_ha_error() from err
    return cast("ServiceResponse", result)


async def _async_flush(call: ServiceCall) -> ServiceResponse:
    runtime = _entry(call).runtime_data.runtime
    timeout: float = call.data[ATTR_TIMEOUT]
    try:
        result = await runtime.forwarder.flush(timeout)
    except RuntimeError as err:  # the forwarder is paused: nothing would ever leave
        raise ServiceValidationError(
            translation_domain=DOMAIN, translation_key="flush_paused"
        ) from err
    if result.done:
        return {"delivered": result.delivered, "waiting": result.waiting}
    placeholders = {
        "timeout": f"{timeout:g}",
        "delivered": str(result.delivered),
        "pending": str(result.waiting),
    }
    problem = result.problem
    if problem is None:  # nothing failed: still delivering, just not done in time
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="flush_timeout",
            translation_placeholders=placeholders,
        )
    raise HomeAssistantError(
        translation_domain=DOMAIN,
        translation_key="flush_timeout_service",
        translation_placeholders={
            **placeholders,
            "service": problem.service,
            "error": problem.error,
        },
    )


async def _async_replay_dead_letters(call: ServiceCall) -> ServiceResponse:
    entry = _entry(call)
    count = await entry.runtime_data.runtime.outbox.replay_dead_letters(call.data.get(ATTR_IDS))
    await entry.runtime_data.coordinator.async_refresh()
    return {"replayed": count}


async def _async_purge_dead_letters(call: ServiceCall) -> ServiceResponse:
    entry = _entry(call)
    count = await entry.runtime_data.runtime.outbox.purge_dead_letters(call.data.get(ATTR_IDS))
    await entry.runtime_data.coordinator.async_refresh()
    return {"purged": count}


async def _async_pause(call: ServiceCall) -> None:
    entry = _entry(call)
    entry.runtime_data.runtime.forwarder.pause()
    await entry.runtime_data.coordinator.async_refresh()


async def _async_resume(call: ServiceCall) -> None:
    entry = _entry(call)
    entry.runtime_data.runtime.forwarder.resume()
    await entry.runtime_data.coordinator.async_refresh()


async def _async_backfill(call: ServiceCall) -> ServiceResponse:
    """Replay the recorder's states of [start, end) in the background (backfill.py)."""
    entry = _entry(call)
    if not recorder_loaded(call.hass):
        raise ServiceValidationError(translation_domain=DOMAIN, translation_key="no_recorder")
    now = dt_util.utcnow()
    # A time without a zone is in Home Assistant's time zone; the end is at most now.
    start = dt_util.as_utc(call.data[ATTR_START])
    end = min(dt_util.as_utc(call.data.get(ATTR_END) or now), now)
    if start >= end:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="backfill_window",
            translation_placeholders={"start": start.isoformat(), "end": end.isoformat()},
        )
    entity_ids: list[str] | None = call.data.get(ATTR_ENTITY_ID)
    runtime = entry.runtime_data.runtime
    runtime.backfill.async_start(start, end, sorted(set(entity_ids)) if entity_ids else None)
    await entry.runtime_data.coordinator.async_refresh()
    return {"start": start.isoformat(), "end": end.isoformat()}


async def _async_cancel_backfill(call: ServiceCall) -> None:
    entry = _entry(call)
    if not await entry.runtime_data.runtime.backfill.async_cancel():
        raise ServiceValidationError(
            translation_domain=DOMAIN, translation_key="no_backfill_running"
        )
    await entry.runtime_data.coordinator.async_refresh()


@callback
def async_setup_actions(hass: HomeAssistant) -> None:
    """Register the actions (once, from async_setup)."""
    actions = (
        (ACTION_FORWARD_EVENT, _async_forward_event, FORWARD_EVENT_SCHEMA, True),
        (ACTION_FLUSH, _async_flush, FLUSH_SCHEMA, True),
        (ACTION_REPLAY_DEAD_LETTERS, _async_replay_dead_letters, DEAD_LETTERS_SCHEMA, True),
        (ACTION_PURGE_DEAD_LETTERS, _async_purge_dead_letters, DEAD_LETTERS_SCHEMA, True),
        (ACTION_PAUSE, _async_pause, ENTRY_ONLY_SCHEMA, False),
        (ACTION_RESUME, _async_resume, ENTRY_ONLY_SCHEMA, False),
        (ACTION_BACKFILL, _async_backfill, BACKFILL_SCHEMA, True),
        (ACTION_CANCEL_BACKFILL, _async_cancel_backfill, ENTRY_ONLY_SCHEMA, False),
    )
    for action, handler, schema, responds in actions:
        # The `unused-ignore` mark: types that differ between the supported Home Assistant
        # releases (docs/ARCHITECTURE.md, "Supported Home Assistant releases").
        hass.services.async_register(
            DOMAIN,
            action,
            _admin_only(action, handler),
            schema=schema,  # type: ignore[arg-type, unused-ignore]
            supports_response=SupportsResponse.OPTIONAL if responds else SupportsResponse.NONE,
        )
