"""What a service is, apart from the HTTP server that drives it.

`web.create_app` serves any `EventService` (the enrichment or the storage). A service
reports its dependencies as `DependencyHealth` and signals failures with the errors
here: `StartupError` at start, `RequestError` (the standard error body) or
`ServiceUnavailable` (503 with Retry-After) while answering. The error codes are those
of the error body (docs/ARCHITECTURE.md, "Contracts").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Callable

    from aiohttp import web

    from ha_ingestor_pipeline.envelope import EventResult

# Error codes of the standard error body.
BAD_REQUEST = "BAD_REQUEST"
UNAUTHORIZED = "UNAUTHORIZED"
FORBIDDEN = "FORBIDDEN"
NOT_FOUND = "NOT_FOUND"
METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
INTERNAL_ERROR = "INTERNAL_ERROR"


class StartupError(Exception):
    """A bad setting or an unreachable dependency at start; the CLI prints the message."""


class RequestError(Exception):
    """A request the service answers with the standard error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.retry_after = retry_after


class ServiceUnavailable(RequestError):
    """The service cannot do its job now (its dependency is down): 503 with Retry-After."""

    def __init__(self, message: str, *, retry_after: float = 5.0) -> None:
        super().__init__(503, SERVICE_UNAVAILABLE, message, retry_after=retry_after)


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """A batch body a service read itself (`EventService.decode_batch`)."""

    items: list[Any]  # one per event, in the service's own form, in order
    correlation_id: object  # the body's, checked by the app as for any batch


@dataclass(frozen=True, slots=True)
class DependencyHealth:
    """One dependency's state for ``GET /api/v1/health``."""

    healthy: bool
    detail: str = ""
    required: bool = True  # an unhealthy optional dependency only degrades the service

    def as_dict(self) -> dict[str, Any]:
        return {"status": "healthy" if self.healthy else "unhealthy", "detail": self.detail}


class EventService(Protocol):
    """The part that differs between the enrichment and the storage."""

    name: str  # "enrichment-pipeline" or "data-storage", as in response metadata
    role: str  # "enrichment" or "storage": health's "role", the announcement's TXT "role"
    processing_steps: list[str]

    @property
    def service_id(self) -> str:
        """The stable id (identity.py), known once `start` has run."""

    async def start(self) -> None:
        """Open backends and clients; raise `StartupError` with a one-line message."""

    async def stop(self) -> None:
        """Finish what was accepted, then close."""

    async def process(
        self, envelopes: list[dict[str, Any]], correlation_id: str
    ) -> list[EventResult]:
        """One result per checked envelope, in order; raise `ServiceUnavailable` to answer 503."""

    async def health(self) -> dict[str, DependencyHealth]:
        """Each dependency's state."""

    def stats(self) -> dict[str, Any]:
        """The service's own figures for ``GET /api/v1/stats``."""

    def count_requests_with(self, in_progress: Callable[[], int]) -> None:
        """Told once, by the app: how many event requests are in progress now."""

    def routes(self) -> list[web.RouteDef]:
        """Routes of its own (behind the token); they answer with `responses.json_response`
        and raise `RequestError`."""

    def openapi_paths(self) -> dict[str, Any]:
        """OpenAPI path items of `routes` (the shared routes are documented already)."""


@runtime_checkable
class DecodesBatches(Protocol):
    """An `EventService` that reads the usual batch body itself in one typed pass
    (storage); `web.create_app` uses it where a service has it."""

    def decode_batch(self, body: bytes, max_events: int) -> DecodedBatch | None:
        """The batch body read in one typed pass when every event is the usual case, for
        `process_decoded`; None sends it the long way (JSON, `check_envelope`, `process`),
        which answers each event by itself. Answers the same results either way."""

    async def process_decoded(self, items: list[Any], correlation_id: str) -> list[EventResult]:
        """`process` for the items of `decode_batch`: one result each, in order."""
