"""The wire formats: the services' paths, event envelope, per-event results and errors.

The contract they make up is described in docs/ARCHITECTURE.md, "Contracts".

`EventValidator` turns a raw Home Assistant event (a mapping with ``event_type``,
``time_fired`` and ``data``) into an encoded envelope, or raises `ValidationError`
naming the field, what is wrong with it and what was expected. Encoding happens off the
event loop (on the outbox's worker thread), so this module is plain synchronous code.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hashlib import sha1
from typing import Any, Literal, NotRequired, TypedDict, TypeIs

import orjson

SOURCE = "ha_ingestor"
# What each companion service calls itself in its answers (health's "service", metadata).
STORAGE_SERVICE_NAME = "data-storage"
ENRICHMENT_SERVICE_NAME = "enrichment-pipeline"
DEFAULT_MAX_EVENT_BYTES = 256 * 1024

# The paths both services serve (docs/ARCHITECTURE.md, "Contracts", Endpoints).
EVENTS_PATH = "/api/v1/events"  # POST one envelope; the storage's GET queries events
BATCH_PATH = "/api/v1/events/batch"  # POST {"events": [envelope, ...]}
HEALTH_PATH = "/api/v1/health"  # open; details with the token
STATS_PATH = "/api/v1/stats"  # behind the bearer token; the config flow's auth check
OPENAPI_PATH = "/api/v1/openapi.json"

# Reason codes shared by dead letters, per-event results and error bodies.
VALIDATION_ERROR = "VALIDATION_ERROR"
PAYLOAD_TOO_LARGE = "payload_too_large"

ResultStatus = Literal["stored", "duplicate", "rejected"]


class StateContext(TypedDict):
    """Home Assistant's context of the change."""

    id: str | None
    user_id: str | None
    parent_id: str | None


class EventData(TypedDict, total=False):
    """The event itself, flattened for the receivers."""

    event_type: str
    entity_id: str
    state: str | None
    attributes: dict[str, Any]
    old_state: str | None
    context: StateContext
    data: dict[str, Any]


class Location(TypedDict):
    latitude: float
    longitude: float
    elevation: float
    time_zone: str


class Weather(TypedDict, total=False):
    entity_id: str
    condition: str | None
    temperature_c: float | None
    humidity: float | None
    pressure_hpa: float | None


class EnvelopeContext(TypedDict, total=False):
    instance_id: str
    location: Location
    weather: Weather


class Envelope(TypedDict):
    event_id: str
    timestamp: str
    source: str
    correlation_id: NotRequired[str]
    data: EventData
    context: EnvelopeContext


class ErrorInfo(TypedDict):
    code: str
    message: str
    details: NotRequired[dict[str, Any]]


class EventResult(TypedDict):
    event_id: str
    status: ResultStatus
    error: NotRequired[ErrorInfo]


class BatchResponse(TypedDict, total=False):
    success: bool
    processed_at: str
    processing_time_ms: float
    correlation_id: str
    metadata: dict[str, Any]
    results: list[EventResult]


class ErrorResponse(TypedDict):
    success: Literal[False]
    error: ErrorInfo
    timestamp: str
    correlation_id: str | None


class ValidationError(ValueError):
    """An event (or request) that does not match the contract.

    ``code`` is the machine-readable reason (``VALIDATION_ERROR`` or
    ``payload_too_large``); ``field``, ``issue`` and ``expected`` say what to fix.
    """

    def __init__(
        self,
        field: str,
        issue: str,
        expected: str | None = None,
        *,
        code: str = VALIDATION_ERROR,
    ) -> None:
        self.field = field
        self.issue = issue
        self.expected = expected
        self.code = code
        text = f"{field}: {issue}"
        if expected:
            text += f" (expected {expected})"
        super().__init__(text)

    @property
    def message(self) -> str:
        return str(self)

    def details(self) -> dict[str, Any]:
        details: dict[str, Any] = {"field": self.field, "issue": self.issue}
        if self.expected is not None:
            details["expected"] = self.expected
        return details

    def to_error(self) -> ErrorInfo:
        return {"code": self.code, "message": self.message, "details": self.details()}


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """An envelope serialized once, ready to be stored and sent as is."""

    event_id: str
    payload: bytes


# Version 4 and RFC 4122 variant bits of a UUID held as a 128-bit integer.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)
_getrandbits = random.getrandbits


def new_event_id() -> str:
    """A random (version 4) UUID as text.

    From the random module (seeded from the OS, reseeded after fork) rather than
    os.urandom: ids must be unique, not secret, and this is on the per-event path.
    """
    h = ((_getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET).to_bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# The namespace of state-change event ids: uuid5(NAMESPACE_URL,
# "https://github.com/ha-ingestor/ha-ingestor/state_changed"), fixed for good.
STATE_CHANGED_NAMESPACE = "bf9c933f-268c-5678-9675-4f6d2fd914a1"
_STATE_CHANGED_NAMESPACE_BYTES = bytes.fromhex(STATE_CHANGED_NAMESPACE.replace("-", ""))
# The 17th hex digit with the RFC 4122 variant bits (10xx) set, by the hash's digit.
_VARIANT_DIGIT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def state_event_id(entity_id: str, last_updated: str, state: str) -> str:
    """The event id of a state change, derived from what it is.

    ``uuid5(STATE_CHANGED_NAMESPACE, f"{entity_id}\\n{last_updated}\\n{state}")`` where
    ``last_updated`` is the new state's last_updated time as the envelope writes its
    timestamp (RFC 3339 UTC with ``Z``, microseconds unless zero). The same change,
    delivered live or read back from the recorder, gets the same id, so receivers that
    dedupe by event id store it once. Exactly what uuid.uuid5 answers, in half its time
    (~1.2 µs): the version and variant digits are set on the hex text.
    """
    h = sha1(_STATE_CHANGED_NAMESPACE_BYTES + f"{entity_id}\n{last_updated}\n{state}".encode())
    x = h.hexdigest()
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT_DIGIT[x[16]]}{x[17:20]}-{x[20:32]}"


def _is_mapping(value: object) -> TypeIs[Mapping[str, Any]]:
    # `type(...) is dict` first: isinstance against the Mapping ABC is slow on a hot path.
    return type(value) is dict or isinstance(value, Mapping)


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


# Second prefixes ("YYYY-MM-DDTHH:MM:SS") known to be canonical, so that text already in
# the form `to_rfc3339` answers (what every envelope carries after its first hop) is
# recognized without parsing and formatting it again. Bounded: cleared when full.
_CANONICAL_SECONDS: set[str] = set()
_CANONICAL_SECONDS_MAX = 4096


def _is_canonical_utc(value: str) -> bool:
    """Whether ``value`` is exactly what `to_rfc3339` answers for it.

    That is ``YYYY-MM-DDTHH:MM:SSZ``, or the same with ``.ffffff`` (six ASCII digits,
    not all zero: ``isoformat`` leaves out a zero fraction) before the ``Z``, where the
    seconds part is a valid date and time written the way ``isoformat`` writes it.
    """
    length = len(value)
    if length == 27:
        if value[26] != "Z" or value[19] != ".":
            return False
        fraction = value[20:26]
        if not (fraction.isascii() and fraction.isdigit()) or fraction == "000000":
            return False
    elif length != 20 or value[19] != "Z":
        return False
    seconds = value[:19]
    if seconds in _CANONICAL_SECONDS:
        return True
    try:
        canonical = datetime.fromisoformat(seconds).isoformat() == seconds
    except ValueError:
        return False
    if canonical:
        if len(_CANONICAL_SECONDS) >= _CANONICAL_SECONDS_MAX:
            _CANONICAL_SECONDS.clear()
        _CANONICAL_SECONDS.add(seconds)
    return canonical


def to_rfc3339(value: object, field: str) -> str:
    """Normalize a datetime or RFC 3339 text to RFC 3339 UTC ('Z')."""
    # Fast path: text already in the answered form is its own answer (same result as
    # the full parse below, see `_is_canonical_utc`).
    if type(value) is str and _is_canonical_utc(value):
        return value
    return _to_rfc3339_parsed(value, field)


def _to_rfc3339_parsed(value: object, field: str) -> str:
    """`to_rfc3339` the long way: parse, convert to UTC, format."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        if value.endswith("z"):  # RFC 3339 allows a lower-case 'z'; fromisoformat does not
            value = value[:-1] + "Z"
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError(field, "is not a valid timestamp", "RFC 3339 date-time") from None
    else:
        raise ValidationError(
            field, f"has type {type(value).__name__}", "RFC 3339 date-time string"
        )
    # utcoffset(), not tzinfo: a tzinfo that answers None is naive too, and astimezone()
    # would silently read it as the machine's local time.
    if moment.tzinfo is UTC:  # the usual case (Home Assistant's time_fired): no conversion
        return moment.isoformat().replace("+00:00", "Z")
    if moment.utcoffset() is None:
        raise ValidationError(field, "has no time zone", "RFC 3339 date-time with offset")
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValidationError(field, "is out of range in UTC", "RFC 3339 date-time") from None
    return moment.isoformat().replace("+00:00", "Z")


def _state_value(state: object, field: str) -> tuple[str | None, dict[str, Any] | None]:
    """Split a state (HA's State.as_dict() shape, or None) into its text and attributes."""
    if state is None:
        return None, None
    if not _is_mapping(state):
        raise ValidationError(field, f"has type {type(state).__name__}", "object or null")
    value = state.get("state")
    attributes = state.get("attributes", {})
    if not _is_mapping(attributes):
        raise ValidationError(f"{field}.attributes", "is not an object", "object")
    attributes = dict(attributes)  # the envelope must not share the caller's dict
    if value is None or isinstance(value, str):
        return value, attributes
    try:
        text = str(value)
    except Exception:  # a value whose __str__ fails must not escape as anything else
        raise ValidationError(f"{field}.state", "cannot be read as text", "string") from None
    return text, attributes


def _context(raw: object) -> StateContext:
    if _is_mapping(raw):
        return {
            "id": raw.get("id"),
            "user_id": raw.get("user_id"),
            "parent_id": raw.get("parent_id"),
        }
    return {"id": None, "user_id": None, "parent_id": None}


@dataclass(slots=True)
class EventValidator:
    """Check a raw event and encode it as an envelope.

    A raw event is a mapping with ``event_type`` (non-empty text), ``time_fired``
    (datetime or RFC 3339 text) and ``data`` (a mapping), plus an optional ``context``.
    ``state_changed`` events are flattened (entity_id, state, attributes, old_state);
    other events keep their data under ``data.data``.
    """

    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    envelope_context: EnvelopeContext = field(default_factory=lambda: EnvelopeContext())

    def validate(self, raw: object) -> str:
        """Raise `ValidationError` when ``raw`` breaks the contract.

        Returns the event's time as RFC 3339 UTC text.
        """
        if not _is_mapping(raw):
            raise ValidationError("event", f"has type {type(raw).__name__}", "object")
        event_type = raw.get("event_type")
        if event_type is None:
            raise ValidationError("event_type", "is required", "string")
        if not isinstance(event_type, str):
            raise ValidationError("event_type", f"has type {type(event_type).__name__}", "string")
        if not event_type.strip():
            raise ValidationError("event_type", "is empty", "non-empty string")
        if "time_fired" not in raw:
            raise ValidationError("time_fired", "is required", "RFC 3339 date-time")
        timestamp = to_rfc3339(raw["time_fired"], "time_fired")
        data = raw.get("data")
        if data is None:
            raise ValidationError("data", "is required", "object")
        if not _is_mapping(data):
            raise ValidationError("data", f"has type {type(data).__name__}", "object")
        if event_type == "state_changed":
            entity_id = data.get("entity_id")
            if not isinstance(entity_id, str) or "." not in entity_id:
                raise ValidationError(
                    "data.entity_id", "is missing or malformed", "'domain.object_id'"
                )
        return timestamp

    def build(self, raw: Mapping[str, Any], event_id: str | None = None) -> Envelope:
        """Validate ``raw`` and build its envelope (not yet serialized)."""
        timestamp = self.validate(raw)
        event_type: str = raw["event_type"]
        data: Mapping[str, Any] = raw["data"]
        event_data: EventData = {"event_type": event_type, "context": _context(raw.get("context"))}
        if event_type == "state_changed":
            state, attributes = _state_value(data.get("new_state"), "data.new_state")
            old_state, _ = _state_value(data.get("old_state"), "data.old_state")
            event_data["entity_id"] = data["entity_id"]
            event_data["state"] = state
            event_data["attributes"] = attributes or {}
            event_data["old_state"] = old_state
        else:
            if isinstance(data.get("entity_id"), str):
                event_data["entity_id"] = data["entity_id"]
            event_data["data"] = dict(data)
        return {
            "event_id": event_id or new_event_id(),
            "timestamp": timestamp,
            "source": SOURCE,
            "data": event_data,
            "context": self.envelope_context,
        }

    def encode(self, raw: Mapping[str, Any], event_id: str | None = None) -> EncodedEvent:
        """Build and serialize the envelope, enforcing the per-event size limit."""
        envelope = self.build(raw, event_id)
        return self.serialize(envelope["event_id"], envelope)

    def serialize(self, event_id: str, envelope: Mapping[str, Any]) -> EncodedEvent:
        """Serialize an envelope that is already valid, enforcing the per-event size limit.

        For producers that build envelopes themselves from trusted objects (the
        integration's encoder for Home Assistant events): the same serialization, the
        same errors and the same limit as `encode`. Values may include
        ``orjson.Fragment`` (JSON text inserted as is).

        Keys that are not plain ``str`` become text, as in Home Assistant's own JSON:
        its state attributes may have keys of a `str` subclass or numbers, and orjson
        refuses both without `OPT_NON_STR_KEYS` (from orjson 3.11 even `str` subclasses).
        """
        try:
            payload = orjson.dumps(envelope, default=str, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as err:  # e.g. a tuple as a key
            raise ValidationError(
                "data", f"cannot be serialized: {err}", "JSON-safe values"
            ) from None
        if len(payload) > self.max_event_bytes:
            raise ValidationError(
                "event",
                f"is {len(payload)} bytes, over the limit of {self.max_event_bytes}",
                f"at most {self.max_event_bytes} bytes",
                code=PAYLOAD_TOO_LARGE,
            )
        return EncodedEvent(event_id, payload)


def batch_body(payloads: list[bytes]) -> bytes:
    """``{"events": [...]}`` from already encoded envelopes, without re-serializing."""
    return b'{"events":[' + b",".join(payloads) + b"]}"


def error_response(
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    correlation_id: str | None = None,
) -> ErrorResponse:
    error: ErrorInfo = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {
        "success": False,
        "error": error,
        "timestamp": utc_now_iso(),
        "correlation_id": correlation_id,
    }


def parse_results(body: object) -> dict[str, EventResult] | None:
    """Per-event results of a success answer keyed by event_id, or None when absent.

    Malformed entries are skipped: a receiver that answers oddly must not make the
    forwarder ack events it did not confirm.
    """
    if not isinstance(body, Mapping):
        return None
    results = body.get("results")
    if not isinstance(results, list):
        return None
    parsed: dict[str, EventResult] = {}
    for item in results:
        if not isinstance(item, Mapping):
            continue
        event_id = item.get("event_id")
        status = item.get("status")
        if not isinstance(event_id, str) or status not in ("stored", "duplicate", "rejected"):
            continue
        result: EventResult = {"event_id": event_id, "status": status}
        error = item.get("error")
        if isinstance(error, Mapping):
            result["error"] = {
                "code": str(error.get("code", VALIDATION_ERROR)),
                "message": str(error.get("message", "")),
            }
            details = error.get("details")
            if isinstance(details, Mapping):
                result["error"]["details"] = dict(details)
        parsed[event_id] = result
    return parsed
