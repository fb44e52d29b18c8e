"""Diagnostics of a config entry: configuration, pipeline state, last errors, dead letters.

Secrets never leave: the API token is redacted from the entry data, credentials in URLs
are masked, the home's coordinates and tokens in event payloads are redacted, so are the
``code`` and ``pin`` of action calls (alarm and lock codes), and as a last guard every
text that contains the token is masked wherever it appears.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Final

import orjson
from homeassistant.components.diagnostics import REDACTED, async_redact_data
from homeassistant.const import (
    ATTR_SERVICE_DATA,
    CONF_CODE,
    CONF_LATITUDE,
    CONF_LONGITUDE,
    CONF_PASSWORD,
    CONF_PIN,
    CONF_TOKEN,
    EVENT_CALL_SERVICE,
)

from .const import CONF_API_TOKEN
from .coordinator import ISSUE_FIGURES, build_snapshot

if TYPE_CHECKING:
    from homeassistant.core import HomeAssistant

    from .coordinator import IngestorConfigEntry
    from .pipeline.outbox import DeadLetter

# Keys redacted wherever they appear (entry data, event payloads, attributes).
TO_REDACT: Final = {
    CONF_API_TOKEN,
    CONF_TOKEN,
    CONF_PASSWORD,
    "access_token",
    "refresh_token",
    "authorization",
    CONF_LATITUDE,
    CONF_LONGITUDE,
    "entity_picture",  # camera and media player pictures carry an access token
}
# Keys redacted in the service data of action calls (call_service events): alarm and lock
# codes. Only there: elsewhere "code" is often harmless (an error code).
SERVICE_DATA_TO_REDACT: Final = {CONF_CODE, CONF_PIN}
MAX_DEAD_LETTERS: Final = 5
MAX_PAYLOAD_CHARS: Final = 2000  # per text value of a dead letter's payload
MAX_STRING: Final = 200

_URL_USERINFO: Final = re.compile(r"(?<=://)[^/@\s]+@")


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: IngestorConfigEntry
) -> dict[str, Any]:
    """Return diagnostics for a config entry."""
    runtime = entry.runtime_data.runtime
    coordinator = entry.runtime_data.coordinator
    outbox = runtime.outbox
    stats = outbox.stats_nowait() if outbox.closed else await outbox.stats()
    dead = [] if outbox.closed else await outbox.list_dead_letters(MAX_DEAD_LETTERS)
    forwarder = runtime.forwarder.snapshot()
    clients = {name: client.snapshot() for name, client in runtime.clients.items()}
    registry = runtime.registry.snapshot()
    snapshot = coordinator.data or build_snapshot(runtime, 0.0)
    data = {
        "entry": {
            "title": entry.title,
            "version": entry.version,
            "minor_version": entry.minor_version,
            "data": async_redact_data(dict(entry.data), TO_REDACT),
            "options": async_redact_data(dict(entry.options), TO_REDACT),
        },
        "settings": {
            "event_types": list(runtime.settings.event_types),
            "durability": runtime.settings.durability.value,
            "batch_size": runtime.settings.batch_size,
            "linger_ms": runtime.settings.linger_ms,
            "max_events": runtime.settings.max_events,
            "max_megabytes": runtime.settings.max_megabytes,
            "fallback_to_storage": runtime.settings.fallback_to_storage,
            "health_interval": runtime.settings.health_interval,
            "subscribed": list(runtime.listener.event_types),
        },
        "snapshot": {
            key: value for key, value in asdict(snapshot).items() if key not in ISSUE_FIGURES
        },
        "forwarder": forwarder,
        "outbox": {"durability": outbox.durability.value, **asdict(stats)},
        "clients": clients,
        "registry": registry,
        "last_errors": _last_errors(forwarder, clients, registry),
        "dead_letters": [_dead_letter(letter) for letter in dead],
    }
    scrubbed: dict[str, Any] = _scrub(data, runtime.settings.token)
    return scrubbed


def _last_errors(
    forwarder: dict[str, Any], clients: dict[str, Any], registry: dict[str, Any]
) -> list[dict[str, Any]]:
    """The latest error each part remembers (the forwarder, each client, each URL)."""
    errors: list[dict[str, Any]] = []
    metrics = forwarder["metrics"]
    if metrics.get("last_error"):
        errors.append(
            {
                "source": "forwarder",
                "message": metrics["last_error"],
                "at": metrics["last_error_at"],
            }
        )
    for name, client in clients.items():
        if client.get("last_error"):
            last = client["last_error"]
            errors.append(
                {
                    "source": f"{name} client",
                    "message": last.get("message"),
                    "endpoint": last.get("endpoint"),
                    "at": last.get("time"),
                }
            )
    for name, service in registry.get("services", {}).items():
        for endpoint in service.get("endpoints", []):
            if endpoint.get("last_error"):
                errors.append(
                    {
                        "source": f"{name} health check",
                        "message": endpoint["last_error"],
                        "endpoint": endpoint.get("url"),
                        "at": endpoint.get("last_check"),
                    }
                )
    return errors


def _dead_letter(letter: DeadLetter) -> dict[str, Any]:
    """One dead letter with its payload decoded (redacted and truncated)."""
    payload: Any
    try:
        payload = orjson.loads(letter.payload)
    except orjson.JSONDecodeError:
        payload = letter.payload[:MAX_STRING].decode("utf-8", "replace")
    else:
        if isinstance(payload, dict):
            payload = redact_event(payload)
    return {
        "id": letter.id,
        "event_id": letter.event_id,
        "reason": letter.reason,
        "message": letter.message[:MAX_PAYLOAD_CHARS],
        "target": letter.target,
        "attempts": letter.attempts,
        "first_failure": letter.first_failure,
        "last_failure": letter.last_failure,
        "payload_bytes": len(letter.payload),
        "payload": _truncate(payload),
    }


def redact_event(envelope: dict[str, Any]) -> dict[str, Any]:
    """An event envelope with its secrets redacted, for every place diagnostics show one.

    Events other than state changes keep their data under ``data.data`` (the envelope
    contract); a ``call_service`` event's ``service_data`` may hold an alarm or lock code.
    """
    redacted: dict[str, Any] = async_redact_data(envelope, TO_REDACT)
    event = redacted.get("data")
    if not isinstance(event, dict) or event.get("event_type") != EVENT_CALL_SERVICE:
        return redacted
    event_data = event.get("data")
    if isinstance(event_data, dict) and isinstance(event_data.get(ATTR_SERVICE_DATA), dict):
        service_data = async_redact_data(event_data[ATTR_SERVICE_DATA], SERVICE_DATA_TO_REDACT)
        event_data = {**event_data, ATTR_SERVICE_DATA: service_data}
        redacted = {**redacted, "data": {**event, "data": event_data}}
    return redacted


def _truncate(value: Any, depth: int = 0) -> Any:
    """Long texts cut, deep or wide structures trimmed: a dead letter may be 256 KiB."""
    if isinstance(value, str):
        return value if len(value) <= MAX_STRING else value[:MAX_STRING] + "…"
    if depth >= 6:
        return "…"
    if isinstance(value, dict):
        items = list(value.items())
        trimmed = {str(key): _truncate(item, depth + 1) for key, item in items[:50]}
        if len(items) > 50:
            trimmed["…"] = f"{len(items) - 50} more keys"
        return trimmed
    if isinstance(value, list):
        trimmed_list = [_truncate(item, depth + 1) for item in value[:20]]
        if len(value) > 20:
            trimmed_list.append(f"… {len(value) - 20} more items")
        return trimmed_list
    return value


def _scrub(value: Any, token: str | None) -> Any:
    """Mask credentials in URLs and the token itself in every text, recursively."""
    if isinstance(value, str):
        if token and token in value:
            value = value.replace(token, REDACTED)
        return _URL_USERINFO.sub(f"{REDACTED}@", value) if "@" in value else value
    if isinstance(value, dict):
        return {_scrub(key, token): _scrub(item, token) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(item, token) for item in value]
    return value
