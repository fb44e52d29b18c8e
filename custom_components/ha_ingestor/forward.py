"""Forwarding one event now, for the ``forward_event`` action and the HTTP view.

`async_forward_event` validates and encodes one event and POSTs it at once through the
route the forwarder would use (`EventForwarder.route`), bypassing the outbox: a person is
waiting. It raises `ForwardError`, which the action (actions.py) turns into a translated
`ServiceValidationError` or `HomeAssistantError` and the view (http.py) into the
contract's error body with the matching status code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import orjson
from homeassistant.const import ATTR_ENTITY_ID
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.util import dt as dt_util

from .const import DOMAIN
from .pipeline.envelope import (
    EVENTS_PATH,
    PAYLOAD_TOO_LARGE,
    VALIDATION_ERROR,
    ValidationError,
    new_event_id,
    parse_results,
)
from .pipeline.http_client import CircuitOpenError, ServiceCallError, Timeouts
from .pipeline.retry import Outcome

if TYPE_CHECKING:
    from homeassistant.core import Context

    from .runtime import IngestorRuntime

# The event's fields, as the action and the view name them.
ATTR_EVENT_TYPE: Final = "event_type"
ATTR_EVENT_DATA: Final = "event_data"

# A person is waiting: a short timeout per attempt (the client makes a few attempts).
INTERACTIVE_TIMEOUTS: Final = Timeouts(connect=5.0, total=10.0)


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
    # The forwarder's choice; with every breaker open its route fails at once and says when.
    route = runtime.forwarder.route(even_if_open=True)
    if route is None:  # every route refused the credentials
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
