"""What the storage service needs from a backend, and the query it asks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ha_ingestor_pipeline.envelope import ErrorInfo
from ha_ingestor_services.contract import DependencyHealth
from ha_ingestor_services.storage.records import Record, StoredEvent

# Per record: written now, already there, or refused by the backend (with why).
Outcome = Literal["stored", "duplicate"] | ErrorInfo

STORED: Outcome = "stored"
DUPLICATE: Outcome = "duplicate"


class BackendUnavailable(Exception):
    """The backend cannot take or answer anything now; the request gets a 503."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class BadQuery(Exception):
    """The backend refused a query for what it asks (answered 400, not 503)."""


@dataclass(frozen=True, slots=True)
class EventQuery:
    """``GET /api/v1/events``: a time range (inclusive, ns), optional filters, newest first."""

    start_ns: int
    end_ns: int
    entity_id: str | None = None
    event_type: str | None = None
    limit: int = 100


class StorageBackend(Protocol):
    name: str  # "sqlite", "influxdb-v1", "influxdb-v2": shown in health and stats
    # The service id kept with the data once open (SQLite's meta table), else None.
    service_id: str | None

    async def open(self) -> None:
        """Connect and prepare the schema; raise `StartupError` with one line."""

    async def close(self) -> None:
        """Release connections and threads."""

    async def write(self, records: Sequence[Record]) -> list[Outcome]:
        """Make ``records`` durable; one outcome each, in order. `BackendUnavailable` when down."""

    async def query(self, query: EventQuery) -> list[StoredEvent]:
        """Events in the range, newest first, at most ``query.limit``; `BadQuery` if refused."""

    async def expire(self, before_ns: int) -> int:
        """Delete events older than ``before_ns``; how many went (0 when the server does it)."""

    async def probe(self) -> DependencyHealth:
        """A live check (write and read, or ping) for ``GET /api/v1/health``."""

    def stats(self) -> dict[str, Any]:
        """Backend-specific figures for ``GET /api/v1/stats``."""
