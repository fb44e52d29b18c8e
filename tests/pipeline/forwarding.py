"""Building blocks of the forwarder tests: numbered events and a forwarder harness."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from custom_components.ha_ingestor.pipeline.circuit_breaker import BreakerConfig
from custom_components.ha_ingestor.pipeline.forwarder import (
    EventForwarder,
    ForwarderConfig,
    Route,
)
from custom_components.ha_ingestor.pipeline.http_client import ServiceHTTPClient
from custom_components.ha_ingestor.pipeline.retry import BackoffPolicy

if TYPE_CHECKING:
    from collections.abc import Callable

    import aiohttp

    from custom_components.ha_ingestor.pipeline.outbox import Outbox
    from tests.pipeline.fault_server import FaultServer

FAST_BACKOFF = BackoffPolicy(base=0.005, cap=0.03)
FAST_BREAKER = BreakerConfig(failure_threshold=2, open_interval=0.05, max_open_interval=0.2)
BASE_TIME = datetime(2026, 11, 26, 19, 0, tzinfo=UTC)


def event(n: int, **attributes: Any) -> dict[str, Any]:
    """A raw state_changed event numbered ``n`` (the number travels in the attributes)."""
    return {
        "event_type": "state_changed",
        "time_fired": BASE_TIME + timedelta(milliseconds=n),
        "data": {
            "entity_id": f"sensor.s{n % 7}",
            "old_state": None,
            "new_state": {"state": str(n), "attributes": {"n": n, **attributes}},
        },
    }


def numbers(server: FaultServer) -> list[int]:
    """The event numbers the server stored, in first-storage order."""
    by_id = {item["event_id"]: item["data"]["attributes"]["n"] for item in server.received}
    return [by_id[event_id] for event_id in server.stored_ids]


class Harness:
    """Builds routes and a forwarder; stops the forwarder at the end of the test."""

    def __init__(self, session: aiohttp.ClientSession, outbox: Outbox[dict[str, Any]]) -> None:
        self.session = session
        self.outbox = outbox
        self.forwarders: list[EventForwarder] = []
        self.auth_failures: list[str] = []

    def route(
        self, name: str, *servers: FaultServer, token: str | None = None, **client: Any
    ) -> Route:
        client.setdefault("breaker_config", FAST_BREAKER)
        return Route(
            name,
            ServiceHTTPClient(
                name, [server.url for server in servers], self.session, token=token, **client
            ),
        )

    def forwarder(
        self,
        primary: Route,
        fallback: Route | None = None,
        *,
        sleep_rng: Callable[[], float] = random.random,
        **config: Any,
    ) -> EventForwarder:
        """A started forwarder; a test that needs a backoff of known length passes
        ``sleep_rng`` (full jitter can draw a delay near zero)."""
        config.setdefault("backoff", FAST_BACKOFF)
        config.setdefault("linger", 0.0)
        forwarder = EventForwarder(
            self.outbox,
            primary,
            fallback,
            ForwarderConfig(**config),
            on_auth_failure=self.auth_failures.append,
            sleep_rng=sleep_rng,
        )
        self.forwarders.append(forwarder)
        forwarder.start()
        return forwarder
