"""HTTP views behind Home Assistant's auth: health, stats and forwarding one event.

- ``GET /api/ha_ingestor/health``: per entry, each service up or down with its endpoints
  and breakers, the forwarder's state and the outbox depth; an overall ``status`` of
  ``healthy``, ``degraded`` or ``unhealthy`` (503 when unhealthy, so a monitor can
  alert on the status code alone).
- ``GET /api/ha_ingestor/stats``: counters, rates, latency percentiles, outbox figures
  and per-service call counters.
- ``POST /api/ha_ingestor/events/forward`` (administrators only): the ``forward_event``
  action over HTTP.

All three take an optional ``entry_id`` query parameter (404 when it names no HA Ingestor
entry, 503 when that entry is not loaded). Errors use the contract's error body; bad input
is a 4xx, never a 500.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final

import orjson
import voluptuous as vol
from aiohttp import web
from homeassistant.components.http.const import KEY_HASS_USER
from homeassistant.const import ATTR_ENTITY_ID
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers.http import KEY_HASS, HomeAssistantView

from .actions import ATTR_CONFIG_ENTRY_ID, FORWARD_EVENT_SCHEMA, async_get_loaded_entry
from .const import DOMAIN
from .coordinator import build_snapshot
from .forward import ATTR_EVENT_DATA, ATTR_EVENT_TYPE, ForwardError, async_forward_event
from .pipeline.envelope import PAYLOAD_TOO_LARGE, VALIDATION_ERROR, error_response, utc_now_iso
from .pipeline.forwarder import ForwarderState

if TYPE_CHECKING:
    from homeassistant.auth.models import User

    from .coordinator import IngestorConfigEntry, IngestorSnapshot
    from .runtime import IngestorRuntime

HEALTH_URL: Final = f"/api/{DOMAIN}/health"
STATS_URL: Final = f"/api/{DOMAIN}/stats"
FORWARD_URL: Final = f"/api/{DOMAIN}/events/forward"

QUERY_ENTRY_ID: Final = "entry_id"
# One event is at most 256 KiB encoded (EventValidator); the request may be a bit bigger.
MAX_FORWARD_BODY: Final = 512 * 1024

STATUS_HEALTHY: Final = "healthy"
STATUS_DEGRADED: Final = "degraded"
STATUS_UNHEALTHY: Final = "unhealthy"
_STATUS_RANK: Final = {STATUS_HEALTHY: 0, STATUS_DEGRADED: 1, STATUS_UNHEALTHY: 2}

# Entry look-up errors (actions.async_get_loaded_entry) as HTTP answers.
_ENTRY_ERRORS: Final = {
    "entry_not_found": (HTTPStatus.NOT_FOUND, "ENTRY_NOT_FOUND"),
    "entry_not_loaded": (HTTPStatus.SERVICE_UNAVAILABLE, "ENTRY_NOT_LOADED"),
    "no_loaded_entry": (HTTPStatus.SERVICE_UNAVAILABLE, "NOT_LOADED"),
    "several_entries": (HTTPStatus.BAD_REQUEST, "ENTRY_ID_REQUIRED"),
}


@callback
def async_register_views(hass: HomeAssistant) -> None:
    """Register the views (once, from async_setup)."""
    hass.http.register_view(IngestorHealthView())
    hass.http.register_view(IngestorStatsView())
    hass.http.register_view(IngestorForwardView())


def _error(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    *,
    correlation_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return HomeAssistantView.json(
        error_response(code, message, details, correlation_id), status, headers=headers
    )


def _entry_error(err: ServiceValidationError) -> web.Response:
    status, code = _ENTRY_ERRORS.get(
        err.translation_key or "", (HTTPStatus.BAD_REQUEST, "BAD_REQUEST")
    )
    return _error(status, code, str(err))


def _requested_entries(
    request: web.Request, *, none_loaded_ok: bool = False
) -> list[IngestorConfigEntry] | web.Response:
    """The entries a request is about (the one named by ``entry_id``, or every loaded
    one), or the error answer when there are none.

    With ``none_loaded_ok``, no loaded entry (and no ``entry_id``) is an empty list.
    """
    hass = request.app[KEY_HASS]
    entry_id = request.query.get(QUERY_ENTRY_ID)
    try:
        if entry_id is not None:
            return [async_get_loaded_entry(hass, entry_id)]
        entries: list[IngestorConfigEntry] = hass.config_entries.async_loaded_entries(DOMAIN)
        if not entries and not none_loaded_ok:
            async_get_loaded_entry(hass, None)  # raises no_loaded_entry
    except ServiceValidationError as err:
        return _entry_error(err)
    return entries


def _iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat()


def _worst(statuses: list[str]) -> str:
    return max(statuses, key=_STATUS_RANK.__getitem__, default=STATUS_HEALTHY)


# -- health ------------------------------------------------------------------------------


def entry_health(runtime: IngestorRuntime, snapshot: IngestorSnapshot) -> dict[str, Any]:
    """The health of one entry; ``status`` is healthy, degraded or unhealthy.

    unhealthy: nothing can be delivered (every usable route down or refusing the token,
    or the forwarder stopped); degraded: delivery goes on but something needs attention
    (a service or one of its URLs down, a breaker not closed, paused, backing off, or
    events dropped at the outbox cap); healthy otherwise.
    """
    forwarder = runtime.forwarder
    services: dict[str, Any] = {}
    problems: list[str] = []
    for name, client in runtime.clients.items():
        service = snapshot.services[name]
        endpoints = []
        for endpoint in runtime.registry.status(name):
            breaker = client.breakers.get(endpoint.url)
            breaker_state = breaker.state.value if breaker is not None else None
            latency = endpoint.last_latency_ms
            endpoints.append(
                {
                    "url": endpoint.url,
                    "available": endpoint.available,
                    "breaker": breaker_state,
                    "last_error": endpoint.last_error,
                    "latency_ms": None if latency is None else round(latency, 1),
                }
            )
            if endpoint.available is False or breaker_state not in (None, "closed"):
                problems.append(f"{name} at {endpoint.url} is not healthy")
        services[name] = {
            "status": "up" if service.available else "down",
            "available": service.available,
            "circuit": service.circuit,
            "url": service.url,
            "down_since": None if service.down_since is None else service.down_since.isoformat(),
            "auth_failed": name in snapshot.auth_failed,
            "endpoints": endpoints,
        }
        if not service.available:
            problems.append(f"{name} is down")
        if name in snapshot.auth_failed:
            problems.append(f"{name} refused the API token")
    routes = [forwarder.primary]
    if forwarder.config.use_fallback and forwarder.fallback is not None:
        routes.append(forwarder.fallback)
    deliverable = any(
        snapshot.services[route.name].available and route.name not in snapshot.auth_failed
        for route in routes
    )
    state = snapshot.forwarder_state
    if snapshot.paused:
        problems.append("the forwarder is paused")
    elif state == ForwarderState.BACKING_OFF:
        problems.append("the forwarder is backing off after failed deliveries")
    elif state == ForwarderState.WAITING:
        problems.append(f"the forwarder is waiting for a service ({snapshot.problem_error})")
    if snapshot.dropped:
        problems.append(f"{snapshot.dropped} events were dropped at the outbox cap")
    if state in (ForwarderState.STOPPED, ForwarderState.WAITING) or not deliverable:
        status = STATUS_UNHEALTHY
    elif problems:
        status = STATUS_DEGRADED
    else:
        status = STATUS_HEALTHY
    return {
        "status": status,
        "problems": problems,
        "forwarder": {"state": state, "paused": snapshot.paused},
        "outbox": {
            "pending": snapshot.pending,
            "oldest_pending_age_s": snapshot.oldest_pending_age_s,
            "dead_letters": snapshot.dead_letters,
            "dropped": snapshot.dropped,
        },
        "services": services,
        "last_delivery": None
        if snapshot.last_delivery is None
        else snapshot.last_delivery.isoformat(),
    }


class IngestorHealthView(HomeAssistantView):
    """GET /api/ha_ingestor/health."""

    url = HEALTH_URL
    name = f"api:{DOMAIN}:health"
    requires_auth = True

    async def get(self, request: web.Request) -> web.Response:
        entries = _requested_entries(request, none_loaded_ok=True)
        if isinstance(entries, web.Response):
            return entries
        now = time.time()
        result: dict[str, Any] = {}
        for entry in entries:
            runtime = entry.runtime_data.runtime
            health = entry_health(runtime, build_snapshot(runtime, now))
            result[entry.entry_id] = {"title": entry.title, **health}
        # No loaded entry: nothing is forwarded, which is as unhealthy as it gets.
        overall = (
            _worst([health["status"] for health in result.values()]) if result else STATUS_UNHEALTHY
        )
        body = {"status": overall, "timestamp": utc_now_iso(), "entries": result}
        code = HTTPStatus.SERVICE_UNAVAILABLE if overall == STATUS_UNHEALTHY else HTTPStatus.OK
        return self.json(body, code)


# -- stats -------------------------------------------------------------------------------


async def entry_stats(runtime: IngestorRuntime) -> dict[str, Any]:
    """Counters, rates, latency percentiles, outbox and per-service figures of one entry."""
    metrics = runtime.metrics
    p50, p95, p99 = metrics.latency.percentiles(50, 95, 99)
    outbox = runtime.outbox
    stats = outbox.stats_nowait() if outbox.closed else await outbox.stats()
    return {
        "counters": dict(sorted(metrics.counters.items())),
        "rates": {
            "delivered_per_second": round(metrics.delivered_rate.per_second(), 3),
            "delivered_per_minute": round(metrics.delivered_rate.per_minute(), 1),
            "success_rate": metrics.success_rate(),
        },
        "latency_ms": {
            "p50": p50,
            "p95": p95,
            "p99": p99,
            "samples": len(metrics.latency),
        },
        "last_delivery": _iso(metrics.last_delivery),
        "last_error": metrics.last_error,
        "last_error_at": _iso(metrics.last_error_at),
        "outbox": {
            "durability": outbox.durability.value,
            "pending": stats.pending,
            "pending_bytes": stats.pending_bytes,
            "in_flight": stats.in_flight,
            "on_disk": stats.on_disk,
            "oldest_enqueued_at": _iso(stats.oldest_enqueued_at),
            "dead_letters": stats.dead_letters,
            "dead_letters_dropped": stats.dead_letters_dropped,
            "dropped": stats.dropped,
            "appended": stats.appended,
            "acked": stats.acked,
        },
        "forwarder": {
            "state": runtime.forwarder.state.value,
            "paused": runtime.forwarder.paused,
        },
        "services": {
            name: {
                key: value
                for key, value in client.snapshot().items()
                if key in ("requests", "failures", "circuit_open_rejections", "outcomes")
            }
            for name, client in runtime.clients.items()
        },
    }


class IngestorStatsView(HomeAssistantView):
    """GET /api/ha_ingestor/stats."""

    url = STATS_URL
    name = f"api:{DOMAIN}:stats"
    requires_auth = True

    async def get(self, request: web.Request) -> web.Response:
        entries = _requested_entries(request)
        if isinstance(entries, web.Response):
            return entries
        result = {
            entry.entry_id: {"title": entry.title, **await entry_stats(entry.runtime_data.runtime)}
            for entry in entries
        }
        return self.json({"timestamp": utc_now_iso(), "entries": result})


# -- forward one event -------------------------------------------------------------------


class IngestorForwardView(HomeAssistantView):
    """POST /api/ha_ingestor/events/forward (administrators only).

    The body is the ``forward_event`` action's data: ``event_type``, optional
    ``event_data``, ``entity_id`` and ``config_entry_id``. The answer is the contract's
    success shape with the receiver's result for the event.

    Home Assistant's ``require_admin`` answers 401 to a signed-in user who is not an
    administrator; this view answers 403, which is what that case means.
    """

    url = FORWARD_URL
    name = f"api:{DOMAIN}:events:forward"
    requires_auth = True

    async def post(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        user: User | None = request.get(KEY_HASS_USER)
        if user is None or not user.is_admin:
            return _error(HTTPStatus.FORBIDDEN, "FORBIDDEN", "administrator access required")
        raw = await _read_body(request)
        if isinstance(raw, web.Response):
            return raw
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            return _error(
                HTTPStatus.BAD_REQUEST,
                "MALFORMED_REQUEST",
                "the body is not valid JSON",
                {"issue": str(err)},
            )
        if not isinstance(body, dict):
            return _error(
                HTTPStatus.BAD_REQUEST,
                "MALFORMED_REQUEST",
                "the body must be a JSON object",
                {"field": "body", "issue": f"is {type(body).__name__}", "expected": "object"},
            )
        try:
            data = FORWARD_EVENT_SCHEMA(body)
        except vol.Invalid as err:
            return _schema_error(err)
        hass = request.app[KEY_HASS]
        try:
            entry = async_get_loaded_entry(hass, data.get(ATTR_CONFIG_ENTRY_ID))
        except ServiceValidationError as err:
            return _entry_error(err)
        try:
            result = await async_forward_event(
                entry.runtime_data.runtime,
                data[ATTR_EVENT_TYPE],
                data[ATTR_EVENT_DATA],
                data.get(ATTR_ENTITY_ID),
                self.context(request),
            )
        except ForwardError as err:
            return _forward_error(err)
        correlation_id = result.pop("correlation_id")
        service = result.pop("service")
        return self.json(
            {
                "success": True,
                "processed_at": utc_now_iso(),
                "processing_time_ms": round((time.perf_counter() - started) * 1000, 1),
                "correlation_id": correlation_id,
                "metadata": {"service": DOMAIN, "route": service},
                "results": [result],
            }
        )


async def _read_body(request: web.Request) -> bytes | web.Response:
    """The body, at most MAX_FORWARD_BODY bytes (413 beyond, even without Content-Length)."""
    too_large = _error(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        PAYLOAD_TOO_LARGE,
        f"the body is over {MAX_FORWARD_BODY} bytes",
        {"limit": MAX_FORWARD_BODY},
    )
    if request.content_length is not None and request.content_length > MAX_FORWARD_BODY:
        return too_large
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > MAX_FORWARD_BODY:
            return too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _schema_error(err: vol.Invalid) -> web.Response:
    """A voluptuous error as the contract's 422 body, naming the field."""
    first = err.errors[0] if isinstance(err, vol.MultipleInvalid) and err.errors else err
    field = ".".join(str(part) for part in first.path) or "body"
    return _error(
        HTTPStatus.UNPROCESSABLE_ENTITY,
        VALIDATION_ERROR,
        f"{field}: {first.error_message}",
        {"field": field, "issue": first.error_message},
    )


def _forward_error(err: ForwardError) -> web.Response:
    headers = None
    if err.retry_after is not None:
        headers = {"Retry-After": str(max(1, round(err.retry_after)))}
    return _error(
        err.status,
        err.code,
        str(err.to_ha_error()),
        err.details or dict(err.placeholders),
        headers=headers,
    )
