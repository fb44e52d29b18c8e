"""What the forwarder says about delivery, and how fast it resumes when a service is back.

Real receivers on 127.0.0.1 (FaultServer), a real outbox and a real registry: the state
follows the batches (delivering until one fails, waiting or backing off until one is
accepted), and a returning service is used within a probe interval, however long it
was away (docs/ARCHITECTURE.md, "Recovery").
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest

from custom_components.ha_ingestor.pipeline.circuit_breaker import BreakerConfig
from custom_components.ha_ingestor.pipeline.endpoint_health import ServiceRegistry
from custom_components.ha_ingestor.pipeline.forwarder import (
    DeliveryProblem,
    EventForwarder,
    ForwarderConfig,
    ForwarderState,
    Route,
)
from custom_components.ha_ingestor.pipeline.http_client import ServiceHTTPClient, Timeouts
from custom_components.ha_ingestor.pipeline.retry import BackoffPolicy
from tests.pipeline.fakes import FakeClock
from tests.pipeline.fault_server import Fault, FaultServer
from tests.pipeline.forwarding import Harness, event, numbers

if TYPE_CHECKING:
    from collections.abc import Callable

    import aiohttp

    from custom_components.ha_ingestor.pipeline.outbox import Outbox

# What a long outage leaves behind: backoff and breaker grown to minutes. The backoff's
# jitter is pinned to its ceiling (SLEEP_CEILING): a full-jitter draw can be near zero.
LONG_BACKOFF = BackoffPolicy(base=60.0, cap=300.0)
SLEEP_CEILING = lambda: 1.0  # noqa: E731
LONG_BREAKER = BreakerConfig(failure_threshold=1, open_interval=60.0, max_open_interval=300.0)


async def wait_for_state(
    forwarder: EventForwarder, state: ForwarderState, timeout: float = 5.0
) -> float:
    """Seconds until the forwarder says ``state``."""
    started = time.monotonic()
    while forwarder.state is not state:
        if time.monotonic() - started > timeout:
            raise AssertionError(f"still {forwarder.state}, not {state}, after {timeout} s")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def test_refused_then_back(harness: Harness, fault_server: FaultServer) -> None:
    wall = FakeClock(1_700_000_000.0)
    forwarder = harness.forwarder(harness.route("storage", fault_server))
    forwarder._clock = wall  # the problem's "since" is wall time
    harness.outbox.append_many(event(n) for n in range(3))
    assert (await forwarder.flush(timeout=5)).done
    assert forwarder.state is ForwarderState.DELIVERING
    assert forwarder.problem is None

    await fault_server.refuse()
    harness.outbox.append_many(event(n) for n in range(3, 6))
    await wait_for_state(forwarder, ForwarderState.WAITING)
    problem = forwarder.problem
    assert problem is not None
    assert (problem.service, problem.since) == ("storage", wall.now)
    assert "storage" in problem.error
    assert forwarder.snapshot()["problem"] == problem.as_dict()
    # Later failures keep "since" at the first failed batch; the error is the latest.
    wall.advance(30)
    await asyncio.sleep(0.1)
    assert forwarder.state is ForwarderState.WAITING
    assert forwarder.problem is not None
    assert forwarder.problem.since == problem.since

    await fault_server.restore()
    assert (await forwarder.flush(timeout=5)).done
    assert forwarder.state is ForwarderState.DELIVERING
    assert forwarder.problem is None
    assert numbers(fault_server) == list(range(6))


async def test_error_answers_are_backing_off(harness: Harness, fault_server: FaultServer) -> None:
    forwarder = harness.forwarder(harness.route("storage", fault_server))
    fault_server.fail_next(3, 500)
    harness.outbox.append(event(0))
    await wait_for_state(forwarder, ForwarderState.BACKING_OFF)
    assert forwarder.problem is not None
    assert forwarder.problem.error.startswith("storage: HTTP 500: ")  # and its own words
    assert (await forwarder.flush(timeout=5)).done
    assert forwarder.state is ForwarderState.DELIVERING


async def test_unavailable_is_waiting(harness: Harness, fault_server: FaultServer) -> None:
    """503: the service says it cannot take events now (the enrichment, while storage
    is away): waiting for a service, as when nothing answers."""
    forwarder = harness.forwarder(harness.route("storage", fault_server))
    fault_server.fail_next(3, 503)
    harness.outbox.append(event(0))
    await wait_for_state(forwarder, ForwarderState.WAITING)
    assert forwarder.problem is not None
    assert forwarder.problem.error.startswith("storage: HTTP 503")
    assert (await forwarder.flush(timeout=5)).done
    assert forwarder.state is ForwarderState.DELIVERING


async def test_waiting_stays_waiting_until_a_batch_is_accepted(
    harness: Harness, fault_server_factory: Any
) -> None:
    """Enrichment answering 500 while the storage fallback refuses: not a flip between
    backing off and waiting with every route tried."""
    enrichment: FaultServer = await fault_server_factory()
    storage: FaultServer = await fault_server_factory()
    forwarder = harness.forwarder(
        harness.route("enrichment", enrichment), harness.route("storage", storage)
    )
    await storage.refuse()
    enrichment.fail_next(100, 500)
    harness.outbox.append(event(0))
    seen: list[ForwarderState] = []
    for _ in range(300):  # the states in order, each run of equal ones once
        if not seen or seen[-1] is not forwarder.state:
            seen.append(forwarder.state)
        await asyncio.sleep(0.005)
    # Backing off after the enrichment's first 500, waiting once the fallback refused,
    # and waiting from then on, though the enrichment is tried (and answers 500) again.
    assert seen == [ForwarderState.DELIVERING, ForwarderState.BACKING_OFF, ForwarderState.WAITING]
    enrichment.clear_faults()
    assert (await forwarder.flush(timeout=5)).done
    assert forwarder.state is ForwarderState.DELIVERING


async def test_a_hung_service_is_waiting_within_its_request_timeout(
    harness: Harness, fault_server: FaultServer
) -> None:
    timeout = 0.3
    forwarder = harness.forwarder(
        harness.route("storage", fault_server, timeouts=Timeouts(connect=timeout, total=timeout))
    )
    fault_server.add_faults(*[Fault.slow(30) for _ in range(20)])
    harness.outbox.append(event(0))
    took = await wait_for_state(forwarder, ForwarderState.WAITING)
    assert took < timeout + 0.5
    assert forwarder.problem is not None
    assert "timed out" in forwarder.problem.error
    fault_server.clear_faults()


async def test_a_slow_answer_within_the_timeout_is_still_delivering(
    harness: Harness, fault_server: FaultServer
) -> None:
    forwarder = harness.forwarder(
        harness.route("storage", fault_server, timeouts=Timeouts(connect=1.0, total=1.0))
    )
    fault_server.add_faults(Fault.slow(0.3), Fault.slow(0.3))
    seen: set[ForwarderState] = set()
    harness.outbox.append_many(event(n) for n in range(2))
    flushing = asyncio.ensure_future(forwarder.flush(timeout=5))
    while not flushing.done():
        seen.add(forwarder.state)
        await asyncio.sleep(0.01)
    assert flushing.result().done
    assert seen == {ForwarderState.DELIVERING}


async def test_paused_and_stopped(harness: Harness, fault_server: FaultServer) -> None:
    forwarder = harness.forwarder(harness.route("storage", fault_server))
    await fault_server.refuse()
    harness.outbox.append(event(0))
    await wait_for_state(forwarder, ForwarderState.WAITING)
    forwarder.pause()  # the user's choice says more than the outage
    assert forwarder.state is ForwarderState.PAUSED
    forwarder.resume()
    assert forwarder.state is ForwarderState.WAITING
    await forwarder.stop()
    assert forwarder.state is ForwarderState.STOPPED


async def test_flush_says_what_was_delivered_and_why_the_rest_waits(
    harness: Harness, fault_server: FaultServer
) -> None:
    forwarder = harness.forwarder(harness.route("storage", fault_server))
    harness.outbox.append_many(event(n) for n in range(4))
    result = await forwarder.flush(timeout=5)
    assert (result.done, result.delivered, result.waiting, result.problem) == (True, 4, 0, None)

    await fault_server.refuse()
    harness.outbox.append_many(event(n) for n in range(4, 7))
    result = await forwarder.flush(timeout=0.5)
    assert (result.done, result.delivered, result.waiting) == (False, 0, 3)
    assert isinstance(result.problem, DeliveryProblem)
    assert result.problem.service == "storage"
    await fault_server.restore()


# -- recovery --------------------------------------------------------------------------


class Pipeline:
    """A forwarder to one storage route, with a registry probing it as the runtime does."""

    def __init__(
        self, session: aiohttp.ClientSession, outbox: Outbox[dict[str, Any]], url: str
    ) -> None:
        self.registry = ServiceRegistry(session, interval=30.0, probe_interval=0.1, timeout=1.0)
        self.registry.register_service("storage", [url])
        client = ServiceHTTPClient(
            "storage", [url], session, breaker_config=LONG_BREAKER, registry=self.registry
        )
        self.forwarder = EventForwarder(
            outbox,
            Route("storage", client),
            config=ForwarderConfig(linger=0, backoff=LONG_BACKOFF),
            sleep_rng=SLEEP_CEILING,
        )
        self.registry.add_listener(self.forwarder.on_availability)

    async def __aenter__(self) -> Pipeline:
        self.forwarder.start()
        self.registry.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.registry.stop()
        await self.forwarder.stop()


@pytest.fixture
def pipeline(
    http_session: aiohttp.ClientSession, outbox: Outbox[dict[str, Any]], fault_server: FaultServer
) -> Callable[[], Pipeline]:
    return lambda: Pipeline(http_session, outbox, fault_server.url)


@pytest.mark.parametrize("outage", [0.2, 1.5])
async def test_delivery_resumes_within_a_probe_interval_however_long_the_outage(
    pipeline: Callable[[], Pipeline],
    outbox: Outbox[dict[str, Any]],
    fault_server: FaultServer,
    outage: float,
) -> None:
    async with pipeline() as running:
        outbox.append(event(0))
        await fault_server.wait_for_stored(1)
        await fault_server.refuse()
        outbox.append_many(event(n) for n in range(1, 50))
        await wait_for_state(running.forwarder, ForwarderState.WAITING)
        # The breaker opened with a minute to wait and the backoff is a minute or more.
        assert running.forwarder.snapshot()["retry_at"] is not None
        await asyncio.sleep(outage)
        await fault_server.restore()
        back = time.monotonic()
        await fault_server.wait_for_stored(50, timeout=5)
        resumed_after = time.monotonic() - back
        # Probes every 0.05-0.15 s: the next one finds it, and the batch goes at once.
        assert resumed_after < 1.0
        assert numbers(fault_server) == list(range(50))
        await wait_for_state(running.forwarder, ForwarderState.DELIVERING)


async def test_a_service_that_answers_errors_keeps_its_backoff(
    pipeline: Callable[[], Pipeline], outbox: Outbox[dict[str, Any]], fault_server: FaultServer
) -> None:
    # Health answers, batches get 500: no probe wakes the forwarder; the backoff stands.
    fault_server.fail_next(3, 500)
    async with pipeline() as running:
        outbox.append(event(0))
        await wait_for_state(running.forwarder, ForwarderState.BACKING_OFF)
        await asyncio.sleep(0.5)  # several probe intervals
        batches = fault_server.requests_to("/api/v1/events/batch")
        assert len(batches) == 1
        [endpoint] = running.registry.status("storage")
        assert endpoint.available is True


async def test_wake_cuts_a_backoff_short(harness: Harness, fault_server: FaultServer) -> None:
    forwarder = harness.forwarder(
        harness.route("storage", fault_server), backoff=LONG_BACKOFF, sleep_rng=SLEEP_CEILING
    )
    fault_server.fail_next(1, 500)
    harness.outbox.append(event(0))
    await wait_for_state(forwarder, ForwarderState.BACKING_OFF)
    await asyncio.sleep(0.1)
    assert fault_server.stored_ids == []
    forwarder.wake()
    await fault_server.wait_for_stored(1, timeout=2)  # not after the 60 s backoff


async def test_the_route_it_delivers_through(harness: Harness, fault_server: FaultServer) -> None:
    """route(): the primary, else the fallback when allowed; never a route whose
    credentials were refused; with every breaker open, None, or with ``even_if_open`` the
    first route still allowed (the forward_event action's choice)."""
    primary = harness.route("enrichment", fault_server, breaker_config=LONG_BREAKER)
    fallback = harness.route("storage", fault_server, breaker_config=LONG_BREAKER)
    forwarder = harness.forwarder(primary, fallback)
    assert forwarder.route() is primary

    for breaker in primary.client.breakers.values():
        breaker.record_failure()
    assert forwarder.route() is fallback
    forwarder.update_config(ForwarderConfig(use_fallback=False))
    assert forwarder.route() is None
    assert forwarder.route(even_if_open=True) is primary

    forwarder.update_config(ForwarderConfig(use_fallback=True))
    assert fallback.client.available()
    for breaker in fallback.client.breakers.values():
        breaker.record_failure()
    assert forwarder.route() is None
    assert forwarder.route(even_if_open=True) is primary

    forwarder._auth_failed.add("enrichment")
    assert forwarder.route(even_if_open=True) is fallback
    forwarder._auth_failed.add("storage")
    assert forwarder.route(even_if_open=True) is None
