"""Once a second, a snapshot of the pipeline's health for the entities.

Reading is cheap (the outbox keeps a ready-made snapshot; metrics are in memory), and
figures are rounded so that entities, which only write when the snapshot changed,
update at most once a second and not at all while nothing happens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from homeassistant.config_entries import ConfigEntry
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator

from .backfill import BackfillProgress
from .const import DOMAIN, LOGGER
from .issues import async_update_issues
from .pipeline.circuit_breaker import BreakerState

if TYPE_CHECKING:
    from homeassistant.core import HomeAssistant

    from .runtime import IngestorRuntime

UPDATE_INTERVAL = timedelta(seconds=1)

# Worst first: the state a service shows is that of its best endpoint.
_BREAKER_ORDER = (BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN)


@dataclass(frozen=True, slots=True)
class ServiceHealth:
    """How one service (all its URLs) looks right now."""

    name: str
    available: bool
    down_since: datetime | None  # when the last of its URLs went down
    circuit: str  # BreakerState value of its best endpoint
    latency_ms: float | None  # last health-check latency of the URL in use
    url: str  # the URL in use


@dataclass(frozen=True, slots=True)
class IngestorSnapshot:
    delivered: int
    dead_letters: int
    dropped: int
    pending: int
    oldest_pending_age_s: int | None
    success_rate: float | None
    p95_latency_ms: float | None
    events_per_minute: int
    last_delivery: datetime | None
    forwarder_state: str
    paused: bool
    auth_failed: tuple[str, ...]
    # Why nothing is delivered (pipeline/forwarder.py DeliveryProblem), None while it is.
    problem_service: str | None = None
    problem_since: datetime | None = None
    problem_error: str | None = None
    # The oldest waiting event is older than the entry's "problem after" option.
    delivery_problem: bool = False
    services: dict[str, ServiceHealth] = field(default_factory=dict)
    # The current or last backfill (backfill.py): the Backfill sensor.
    backfill: BackfillProgress = field(default_factory=BackfillProgress)
    # For the repair issues (issues.py) only: no entity shows them, so a change in them
    # alone does not make the entities write (not compared), and diagnostics show them
    # under "settings" and "outbox" instead (ISSUE_FIGURES).
    pending_bytes: int = field(default=0, compare=False)
    max_events: int = field(default=0, compare=False)
    max_megabytes: int = field(default=0, compare=False)
    fallback_to_storage: bool = field(default=False, compare=False)


ISSUE_FIGURES: Final = frozenset(
    {"pending_bytes", "max_events", "max_megabytes", "fallback_to_storage"}
)


def _rounded(value: float | None) -> float | None:
    return None if value is None else float(round(value))


def _as_datetime(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


def build_snapshot(runtime: IngestorRuntime, now: float) -> IngestorSnapshot:
    """The current figures of ``runtime``; ``now`` is wall time (time.time())."""
    stats = runtime.outbox.stats_nowait()
    metrics = runtime.metrics
    p95 = metrics.latency.percentile(95)
    services: dict[str, ServiceHealth] = {}
    for name, client in runtime.clients.items():
        statuses = runtime.registry.status(name)
        url = runtime.registry.get_service_url(name)
        in_use = next((status for status in statuses if status.url == url), None)
        states = {breaker.state for breaker in client.breakers.values()}
        circuit = next((state for state in _BREAKER_ORDER if state in states), BreakerState.CLOSED)
        available = runtime.registry.is_available(name) and circuit is not BreakerState.OPEN
        down = [status.since for status in statuses if status.available is False and status.since]
        services[name] = ServiceHealth(
            name=name,
            available=available,
            down_since=None if available or not down else _as_datetime(max(down)),
            circuit=circuit.value,
            latency_ms=_rounded(in_use.last_latency_ms if in_use else None),
            url=url,
        )
    forwarder = runtime.forwarder
    problem = forwarder.problem
    oldest = stats.oldest_enqueued_at
    oldest_age = None if oldest is None else max(0, int(now - oldest))
    return IngestorSnapshot(
        delivered=metrics.get("delivered"),
        dead_letters=stats.dead_letters,
        dropped=stats.dropped,
        pending=stats.pending,
        oldest_pending_age_s=oldest_age,
        success_rate=metrics.success_rate(),
        p95_latency_ms=None if p95 is None else round(p95, 1),
        events_per_minute=round(metrics.delivered_rate.per_minute()),
        last_delivery=_as_datetime(
            None if metrics.last_delivery is None else round(metrics.last_delivery)
        ),
        forwarder_state=forwarder.state.value,
        paused=forwarder.paused,
        auth_failed=tuple(sorted(forwarder.auth_failed)),
        problem_service=None if problem is None else problem.service,
        problem_since=None if problem is None else _as_datetime(round(problem.since)),
        problem_error=None if problem is None else problem.error,
        delivery_problem=oldest_age is not None and oldest_age >= runtime.settings.problem_after,
        services=services,
        backfill=runtime.backfill.progress,
        pending_bytes=stats.pending_bytes,
        max_events=runtime.settings.max_events,
        max_megabytes=runtime.settings.max_megabytes,
        fallback_to_storage=runtime.settings.fallback_to_storage,
    )


@dataclass(slots=True)
class IngestorData:
    """What a loaded entry holds (``entry.runtime_data``)."""

    runtime: IngestorRuntime
    coordinator: IngestorCoordinator


type IngestorConfigEntry = ConfigEntry[IngestorData]


class IngestorCoordinator(DataUpdateCoordinator[IngestorSnapshot]):
    """Polls the in-memory figures once a second; entities write only on change."""

    config_entry: IngestorConfigEntry

    def __init__(
        self, hass: HomeAssistant, entry: IngestorConfigEntry, runtime: IngestorRuntime
    ) -> None:
        super().__init__(
            hass,
            LOGGER,
            config_entry=entry,
            name=DOMAIN,
            update_interval=UPDATE_INTERVAL,
            always_update=False,
        )
        # Its own reference: the entry's runtime_data is set after the first refresh.
        self._runtime = runtime

    async def _async_update_data(self) -> IngestorSnapshot:
        snapshot = build_snapshot(self._runtime, datetime.now(UTC).timestamp())
        async_update_issues(self.hass, self.config_entry, snapshot)
        return snapshot
