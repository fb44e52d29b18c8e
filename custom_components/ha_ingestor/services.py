"""Actions of HA Ingestor: forward one event now, flush, dead letters, pause and resume.

Every action takes an optional ``config_entry_id``; without it the action acts on the
only loaded entry. Every action changes or reveals data, so a user who is not an
administrator is refused (`AdminRequired`); calls without a user (automations, scripts)
are not. `async_forward_event` is shared with the HTTP view
(``POST /api/ha_ingestor/events/forward``): it raises `ForwardError`, which the action
turns into a translated `ServiceValidationError` or `HomeAssistantError` and the view
into the contract's error body with the matching status code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast

import orjson
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

from .const import DOMAIN, EVENTS_PATH
from .pipeline.envelope import (
    PAYLOAD_TOO_LARGE,
    VALIDATION_ERROR,
    ValidationError,
    new_event_id,
    parse_results,
)
from .pipeline.http_client import CircuitOpenError, ServiceCallError, Timeouts
from .pipeline.retry import Outcome

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    from .coordinator import HaIngestorConfigEntry
    from .pipeline.forwarder import Route
    from .runtime import IngestorRuntime

ATTR_CONFIG_ENTRY_ID: Final = "config_entry_id"
ATTR_EVENT_TYPE: Final = "event_type"
ATTR_EVENT_DATA: Final = "event_data"
ATTR_TIMEOUT: Final = "timeout"
ATTR_IDS: Final = "ids"

SERVICE_FORWARD_EVENT: Final = "forward_event"
SERVICE_FLUSH: Final = "flush"
SERVICE_REPLAY_DEAD_LETTERS: Final = "replay_dead_letters"
SERVICE_PURGE_DEAD_LETTERS: Final = "purge_dead_letters"
SERVICE_PAUSE: Final = "pause"
SERVICE_RESUME: Final = "resume"

DEFAULT_FLUSH_TIMEOUT: Final = 30.0
MAX_FLUSH_TIMEOUT: Final = 3600.0
# A person is waiting: a short timeout per attempt (the client makes a few attempts).
INTERACTIVE_TIMEOUTS: Final = Timeouts(connect=5.0, total=10.0)

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


# -- which entry -------------------------------------------------------------------------


@callback
def async_get_loaded_entry(hass: HomeAssistant, entry_id: str | None) -> HaIngestorConfigEntry:
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
        return cast("HaIngestorConfigEntry", entry)
    loaded = hass.config_entries.async_loaded_entries(DOMAIN)
    if not loaded:
        raise ServiceValidationError(translation_domain=DOMAIN, translation_key="no_loaded_entry")
    if len(loaded) > 1:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="several_entries",
            translation_placeholders={"count": str(len(loaded))},
        )
    return cast("HaIngestorConfigEntry", loaded[0])


# -- forwarding one event now ------------------------------------------------------------


@dataclass(slots=True)
class ForwardError(Exception):
    """Why a manual forward failed, for both the action and the HTTP view.

    ``user_error`` marks input the caller must fix (`ServiceValidationError`);
    ``status`` and ``code`` are the HTTP answer of the view.
    """

    translation_key: str
    placeholders: dict[str, str]
    status: int
    code: str
    user_error: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    retry_after: float | None = None

    def __post_init__(self) -> None:
        Exception.__init__(self, self.translation_key)

    def to_ha_error(self) -> HomeAssistantError:
        cls = ServiceValidationError if self.user_error else HomeAssistantError
        return cls(
            translation_domain=DOMAIN,
            translation_key=self.translation_key,
            translation_placeholders=self.placeholders,
        )


def _choose_route(runtime: IngestorRuntime) -> Route | None:
    """The route the forwarder would use now: the primary, else the allowed fallback."""
    forwarder = runtime.forwarder
    candidates = [forwarder.primary]
    if forwarder.config.use_fallback and forwarder.fallback is not None:
        candidates.append(forwarder.fallback)
    usable = [route for route in candidates if route.name not in forwarder.auth_failed]
    for route in usable:
        if route.client.available():
            return route
    # Every breaker is open: try the first route anyway, it fails fast and says when.
    return usable[0] if usable else None


def _encode(
    runtime: IngestorRuntime,
    event_type: str,
    event_data: dict[str, Any],
    entity_id: str | None,
    context: Context | None,
    correlation_id: str,
) -> tuple[str, bytes]:
    """The envelope of a manual event, validated and serialized: (event_id, payload)."""
    data = dict(event_data)
    if entity_id is not None:
        data["entity_id"] = entity_id
    raw = {
        "event_type": event_type,
        "time_fired": dt_util.utcnow(),
        "context": {
            "id": context.id if context else None,
            "user_id": context.user_id if context else None,
            "parent_id": context.parent_id if context else None,
        },
        "data": data,
    }
    validator = runtime.encoder.validator
    try:
        encoded = validator.encode(raw)
    except ValidationError as err:
        too_large = err.code == PAYLOAD_TOO_LARGE
        field_name = _field_name(err.field)
        raise ForwardError(
            "event_too_large" if too_large else "invalid_event",
            {
                "field": field_name,
                "issue": err.issue,
                "expected": err.expected or "a valid value",
                "limit": str(validator.max_event_bytes),
            },
            status=413 if too_large else 422,
            code=err.code,
            user_error=True,
            details=err.details() | {"field": field_name},
        ) from None
    # The correlation id is request metadata, like the forwarder's per-batch one: the
    # size limit applies to the event as the outbox would store it, so the id is added
    # to the encoded envelope afterwards (its last byte is the object's closing brace).
    payload = encoded.payload[:-1] + b',"correlation_id":' + orjson.dumps(correlation_id) + b"}"
    return encoded.event_id, payload


def _field_name(field_path: str) -> str:
    """The validator's field path in the action's own terms."""
    if field_path == "data.entity_id":
        return ATTR_ENTITY_ID
    if field_path.startswith("data."):
        return f"{ATTR_EVENT_DATA}.{field_path.removeprefix('data.')}"
    if field_path == "data":
        return ATTR_EVENT_DATA
    return field_path


def _unavailable(route: str, reason: str, retry_after: float | None = None) -> ForwardError:
    return ForwardError(
        "service_unavailable",
        {"service": route, "reason": reason},
        status=503,
        code="SERVICE_UNAVAILABLE",
        retry_after=retry_after,
    )


async def async_forward_event(
    runtime: IngestorRuntime,
    event_type: str,
    event_data: dict[str, Any],
    entity_id: str | None = None,
    context: Context | None = None,
) -> dict[str, Any]:
    """Validate, encode and POST one event at once; the receiver's result for it.

    The event does not go through the outbox: a person is waiting, so the call retries a
    few times (``retry=True``) and then fails with `ForwardError` instead of queueing.
    """
    correlation_id = new_event_id()
    event_id, payload = _encode(runtime, event_type, event_data, entity_id, context, correlation_id)
    route = _choose_route(runtime)
    if route is None:
        raise ForwardError(
            "auth_failed",
            {"service": runtime.forwarder.primary.name},
            status=502,
            code="UPSTREAM_AUTH_FAILED",
        )
    try:
        response = await route.client.post(
            EVENTS_PATH,
            payload,
            idempotency_key=event_id,
            correlation_id=correlation_id,
            timeout=INTERACTIVE_TIMEOUTS,
            retry=True,
        )
    except CircuitOpenError as err:
        raise _unavailable(route.name, str(err), err.retry_in) from err
    except ServiceCallError as err:
        raise _unavailable(route.name, str(err), err.retry_after) from err

    outcome = response.outcome
    base: dict[str, Any] = {
        "event_id": event_id,
        "correlation_id": correlation_id,
        "service": route.name,
    }
    if outcome in (Outcome.SUCCESS, Outcome.PERMANENT):
        try:
            results = parse_results(response.json())
        except ServiceCallError:
            results = None
        result = None if results is None else results.get(event_id)
        if result is not None:
            return base | dict(result)
        if outcome is Outcome.SUCCESS:
            if results is None:  # a receiver without per-event results: 2xx means stored
                return base | {"status": "stored"}
            raise ForwardError(
                "unconfirmed",
                {"service": route.name},
                status=502,
                code="UNCONFIRMED",
            )
    if outcome in (Outcome.RETRYABLE, Outcome.RATE_LIMITED):
        raise _unavailable(route.name, f"HTTP {response.status}", response.retry_after)
    if outcome is Outcome.AUTH:
        raise ForwardError(
            "auth_failed", {"service": route.name}, status=502, code="UPSTREAM_AUTH_FAILED"
        )
    code, message = response.error()
    if outcome is Outcome.TOO_LARGE:
        raise ForwardError(
            "rejected_by_service",
            {"service": route.name, "code": PAYLOAD_TOO_LARGE, "message": message},
            status=413,
            code=PAYLOAD_TOO_LARGE,
            user_error=True,
        )
    # PERMANENT without a result for the event: the receiver refused the request.
    raise ForwardError(
        "rejected_by_service",
        {"service": route.name, "code": code, "message": message},
        status=422,
        code=code or VALIDATION_ERROR,
        user_error=True,
    )


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


def _entry(call: ServiceCall) -> HaIngestorConfigEntry:
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


@callback
def async_setup_services(hass: HomeAssistant) -> None:
    """Register the actions (once, from async_setup)."""
    actions = (
        (SERVICE_FORWARD_EVENT, _async_forward_event, FORWARD_EVENT_SCHEMA, True),
        (SERVICE_FLUSH, _async_flush, FLUSH_SCHEMA, True),
        (SERVICE_REPLAY_DEAD_LETTERS, _async_replay_dead_letters, DEAD_LETTERS_SCHEMA, True),
        (SERVICE_PURGE_DEAD_LETTERS, _async_purge_dead_letters, DEAD_LETTERS_SCHEMA, True),
        (SERVICE_PAUSE, _async_pause, ENTRY_ONLY_SCHEMA, False),
        (SERVICE_RESUME, _async_resume, ENTRY_ONLY_SCHEMA, False),
    )
    for name, handler, schema, responds in actions:
        # The `unused-ignore` mark: types that differ between the supported Home Assistant
        # releases (docs/ARCHITECTURE.md, "Supported Home Assistant releases").
        hass.services.async_register(
            DOMAIN,
            name,
            _admin_only(name, handler),
            schema=schema,  # type: ignore[arg-type, unused-ignore]
            supports_response=SupportsResponse.OPTIONAL if responds else SupportsResponse.NONE,
        )
