"""ServiceHTTPClient against real aiohttp servers on 127.0.0.1: the circuit breaker per endpoint,
failover between endpoints and the service registry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from custom_components.ha_ingestor.pipeline.circuit_breaker import BreakerConfig, BreakerState
from custom_components.ha_ingestor.pipeline.endpoint_health import ServiceRegistry
from custom_components.ha_ingestor.pipeline.http_client import (
    CircuitOpenError,
    ServiceCallError,
    ServiceHTTPClient,
    Timeouts,
)
from custom_components.ha_ingestor.pipeline.retry import Outcome
from tests.pipeline.clients import CLIENT_LOGGER, ServerFactory, batch
from tests.pipeline.fakes import FakeClock, Sleeper
from tests.pipeline.fault_server import (
    BATCH_PATH,
    HEALTH_PATH,
    Fault,
    FaultServer,
)

if TYPE_CHECKING:
    import aiohttp


# -- circuit breaker per endpoint ------------------------------------------------------

BREAKER = BreakerConfig(
    failure_threshold=3, open_interval=5.0, max_open_interval=20.0, interval_multiplier=2.0
)


async def test_breaker_opens_fast_fails_probes_and_closes(
    fault_server: FaultServer,
    make_client: Callable[..., ServiceHTTPClient],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_client(fault_server, breaker_config=BREAKER)
    breaker = client.breakers[fault_server.url]
    transitions: list[tuple[str, BreakerState, BreakerState]] = []
    remove = client.add_breaker_listener(lambda *args: transitions.append(args))
    fault_server.fail_next(100, 503)

    for _ in range(3):
        assert (await client.post(BATCH_PATH, batch(1))).status == 503
    assert breaker.state is BreakerState.OPEN
    assert not client.available()
    assert client.retry_in() == 5.0

    with pytest.raises(CircuitOpenError) as err:
        await client.post(BATCH_PATH, batch(1))
    assert err.value.retry_in == 5.0
    assert err.value.outcome is Outcome.RETRYABLE
    assert len(fault_server.requests) == 3  # nothing was sent

    # Failed probes: the open interval doubles up to the cap.
    for expected_interval in (10.0, 20.0, 20.0):
        clock.advance(breaker.retry_in())
        assert client.available()
        assert breaker.state is BreakerState.OPEN  # available() consumed no probe
        assert (await client.post(BATCH_PATH, batch(1))).status == 503
        assert breaker.state is BreakerState.OPEN
        assert client.retry_in() == expected_interval
        clock.advance(expected_interval - 1)
        with pytest.raises(CircuitOpenError):
            await client.post(BATCH_PATH, batch(1))
        clock.advance(1 - expected_interval)  # undo, so retry_in() is the whole interval

    # A successful probe closes it and the interval starts over.
    fault_server.clear_faults()
    clock.advance(20.0)
    assert (await client.post(BATCH_PATH, batch(1))).outcome is Outcome.SUCCESS
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot()["open_interval"] == 5.0

    url = fault_server.url
    assert transitions == [
        (url, BreakerState.CLOSED, BreakerState.OPEN),
        *[
            (url, BreakerState.OPEN, BreakerState.HALF_OPEN),
            (url, BreakerState.HALF_OPEN, BreakerState.OPEN),
        ]
        * 3,
        (url, BreakerState.OPEN, BreakerState.HALF_OPEN),
        (url, BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]
    # One line when it goes down and one when it is back; none for the probes.
    client_records = [r for r in caplog.records if r.name == CLIENT_LOGGER]
    warnings = [r for r in client_records if r.levelno == logging.WARNING]
    infos = [r for r in client_records if r.levelno == logging.INFO]
    assert len(warnings) == 1
    assert "is down" in warnings[0].getMessage()
    assert "HTTP 503" in warnings[0].getMessage()
    assert len(infos) == 1
    assert "is back after 55 s" in infos[0].getMessage()
    remove()
    fault_server.fail_next(3, 503)
    for _ in range(3):
        await client.post(BATCH_PATH, batch(1))
    assert breaker.state is BreakerState.OPEN
    assert len(transitions) == 9  # the removed listener heard nothing more


async def test_transport_failures_trip_the_breaker(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient]
) -> None:
    client = make_client(fault_server, breaker_config=BREAKER)
    await fault_server.refuse()
    for _ in range(3):
        with pytest.raises(ServiceCallError):
            await client.post(BATCH_PATH, batch(1))
    with pytest.raises(CircuitOpenError):
        await client.post(BATCH_PATH, batch(1))


async def test_health_check_goes_past_an_open_breaker_and_lets_a_probe_through(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient]
) -> None:
    client = make_client(fault_server, breaker_config=BREAKER)
    await fault_server.refuse()
    for _ in range(3):
        with pytest.raises(ServiceCallError):
            await client.post(BATCH_PATH, batch(1))
    with pytest.raises(ServiceCallError, match="no endpoint answered its health"):
        await client.check_health(HEALTH_PATH, timeout=Timeouts(1.0, 1.0))
    assert not client.available()
    await fault_server.restore()
    fault_server.health_status = 503  # answering, not well: no probe let through
    answer = await client.check_health(HEALTH_PATH, timeout=Timeouts(1.0, 1.0))
    assert (answer.status, client.available()) == (503, False)
    fault_server.health_status = 200
    answer = await client.check_health(HEALTH_PATH, timeout=Timeouts(1.0, 1.0))
    assert answer.outcome is Outcome.SUCCESS
    assert "Authorization" not in fault_server.requests[-1].headers  # health is open
    assert client.available()  # the probe may go now, not after the open interval
    response = await client.post(BATCH_PATH, batch(1))
    assert response.outcome is Outcome.SUCCESS
    assert {b.state for b in client.breakers.values()} == {BreakerState.CLOSED}


async def test_interactive_call_fast_fails_when_the_circuit_is_open(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient], sleeper: Sleeper
) -> None:
    client = make_client(fault_server, breaker_config=BREAKER, interactive_attempts=5)
    fault_server.fail_next(100, 500)
    with pytest.raises(CircuitOpenError):
        await client.post(BATCH_PATH, batch(1), retry=True)
    assert len(fault_server.requests) == 3  # the breaker opened on the third attempt
    assert len(sleeper.delays) == 3


async def test_rate_limiting_does_not_trip_the_breaker(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient], clock: FakeClock
) -> None:
    client = make_client(fault_server, breaker_config=BREAKER)
    breaker = client.breakers[fault_server.url]
    fault_server.fail_next(10, 429, retry_after=1)
    for _ in range(10):
        assert (await client.post(BATCH_PATH, batch(1))).outcome is Outcome.RATE_LIMITED
    assert breaker.state is BreakerState.CLOSED
    # In half-open, a 429 gives no verdict: the probe is released, the next may go.
    fault_server.fail_next(3, 503)
    for _ in range(3):
        await client.post(BATCH_PATH, batch(1))
    clock.advance(5.0)
    fault_server.fail_next(1, 429)
    assert (await client.post(BATCH_PATH, batch(1))).outcome is Outcome.RATE_LIMITED
    assert breaker.state is BreakerState.HALF_OPEN
    assert client.available()
    assert (await client.post(BATCH_PATH, batch(1))).outcome is Outcome.SUCCESS
    assert breaker.state is BreakerState.CLOSED


async def test_cancelled_probe_is_released(
    fault_server: FaultServer, make_client: Callable[..., ServiceHTTPClient], clock: FakeClock
) -> None:
    client = make_client(fault_server, breaker_config=BREAKER)
    breaker = client.breakers[fault_server.url]
    fault_server.fail_next(3, 503)
    for _ in range(3):
        await client.post(BATCH_PATH, batch(1))
    clock.advance(5.0)
    fault_server.add_faults(Fault.slow(30))
    call = asyncio.create_task(client.post(BATCH_PATH, batch(1)))
    await fault_server.wait_for_requests(4)
    assert breaker.state is BreakerState.HALF_OPEN
    assert not client.available()  # the probe is in flight
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert breaker.state is BreakerState.HALF_OPEN
    assert client.available()


async def test_circuit_open_error_names_the_soonest_endpoint(
    fault_server_factory: ServerFactory,
    make_client: Callable[..., ServiceHTTPClient],
    clock: FakeClock,
) -> None:
    first, second = await fault_server_factory(), await fault_server_factory()
    client = make_client(first, second, breaker_config=BREAKER)
    first.fail_next(100, 503)
    for _ in range(3):  # first fails over to second each time, then opens at t=0
        assert (await client.post(BATCH_PATH, batch(1))).endpoint == second.url
    clock.advance(2.0)
    second.fail_next(100, 503)
    for _ in range(3):  # second opens at t=2
        assert (await client.post(BATCH_PATH, batch(1))).status == 503
    assert len(first.requests) == 3
    with pytest.raises(CircuitOpenError) as err:
        await client.post(BATCH_PATH, batch(1))
    assert err.value.retry_in == 3.0  # first's 5 s interval, 2 s of it gone
    assert client.snapshot()["circuit_open_rejections"] == 1


# -- failover --------------------------------------------------------------------------


async def test_failover_to_the_second_endpoint_and_back(
    fault_server_factory: ServerFactory,
    make_client: Callable[..., ServiceHTTPClient],
    clock: FakeClock,
) -> None:
    first, second = await fault_server_factory(), await fault_server_factory()
    client = make_client(first, second, breaker_config=BREAKER)
    await first.refuse()
    for n in range(5):
        response = await client.post(BATCH_PATH, batch(n))
        assert (response.outcome, response.endpoint) == (Outcome.SUCCESS, second.url)
    assert client.breakers[first.url].state is BreakerState.OPEN
    assert second.stored_ids == [f"evt-{n:05d}" for n in range(5)]

    await first.restore()
    # Until the open interval passes the first is skipped ...
    assert (await client.post(BATCH_PATH, batch(5))).endpoint == second.url
    assert first.requests == []
    # ... then its probe succeeds and traffic goes back to it.
    clock.advance(5.0)
    assert (await client.post(BATCH_PATH, batch(6))).endpoint == first.url
    assert client.breakers[first.url].state is BreakerState.CLOSED
    assert (await client.post(BATCH_PATH, batch(7))).endpoint == first.url
    assert first.stored_ids == ["evt-00006", "evt-00007"]


async def test_failover_on_503_within_one_call(
    fault_server_factory: ServerFactory,
    make_client: Callable[..., ServiceHTTPClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = await fault_server_factory(), await fault_server_factory()
    client = make_client(first, second)
    first.fail_next(1, 503)
    response = await client.post(BATCH_PATH, batch(1), correlation_id="c-1")
    assert (response.outcome, response.endpoint, response.attempt) == (
        Outcome.SUCCESS,
        second.url,
        1,
    )
    assert len(first.requests) == 1
    assert second.stored_ids == ["evt-00001"]
    # One structured DEBUG record per HTTP attempt.
    attempts = [r for r in caplog.records if r.name == CLIENT_LOGGER and r.levelno == logging.DEBUG]
    assert [(r.endpoint, r.status) for r in attempts] == [(first.url, 503), (second.url, 200)]  # type: ignore[attr-defined]
    for record in attempts:
        assert record.service == "storage"  # type: ignore[attr-defined]
        assert record.method == "POST"  # type: ignore[attr-defined]
        assert record.path == BATCH_PATH  # type: ignore[attr-defined]
        assert record.attempt == 1  # type: ignore[attr-defined]
        assert record.correlation_id == "c-1"  # type: ignore[attr-defined]
        assert record.breaker_state == "closed"  # type: ignore[attr-defined]
        assert record.duration_ms >= 0  # type: ignore[attr-defined]


async def test_no_failover_on_a_final_answer(
    fault_server_factory: ServerFactory, make_client: Callable[..., ServiceHTTPClient]
) -> None:
    first, second = await fault_server_factory(), await fault_server_factory()
    client = make_client(first, second)
    for status in (400, 401, 413, 429):
        first.fail_next(1, status)
        assert (await client.post(BATCH_PATH, batch(1))).status == status
    assert second.requests == []


async def test_every_endpoint_failing(
    fault_server_factory: ServerFactory, make_client: Callable[..., ServiceHTTPClient]
) -> None:
    first, second = await fault_server_factory(), await fault_server_factory()
    client = make_client(first, second)
    first.fail_next(1, 503, retry_after=3)
    await second.refuse()
    # An HTTP answer says more than a refused connection: it is the one returned.
    response = await client.post(BATCH_PATH, batch(1))
    assert (response.status, response.endpoint, response.retry_after) == (503, first.url, 3.0)
    await first.refuse()
    with pytest.raises(ServiceCallError) as err:
        await client.post(BATCH_PATH, batch(1))
    assert err.value.endpoint == second.url  # the last one tried


async def test_failover_follows_the_registry(
    fault_server_factory: ServerFactory,
    http_session: aiohttp.ClientSession,
    make_client: Callable[..., ServiceHTTPClient],
) -> None:
    first, second = await fault_server_factory(), await fault_server_factory()
    registry = ServiceRegistry(http_session, failures_to_down=2)
    registry.register_service("storage", [first.url, second.url])
    client = make_client(registry=registry)
    assert client.breakers == {}  # breakers come with the registry's URLs
    await first.refuse()
    response = await client.post(BATCH_PATH, batch(1))
    assert response.endpoint == second.url
    # The failed attempt was reported: the registry now puts the second first ...
    assert [s.available for s in registry.status("storage")] == [False, True]
    assert registry.get_service_urls("storage") == [second.url, first.url]
    # ... so calls go straight there, although first's breaker is still closed.
    assert client.breakers[first.url].state is BreakerState.CLOSED
    assert (await client.post(BATCH_PATH, batch(2))).endpoint == second.url
    assert client.breakers[first.url].snapshot()["consecutive_failures"] == 1
    # When the registry sees the first back, calls return to it.
    await first.restore()
    await registry.check_service("storage")
    assert (await client.post(BATCH_PATH, batch(3))).endpoint == first.url
    assert first.stored_ids == ["evt-00003"]


async def test_registry_without_the_service_falls_back_to_configured_endpoints(
    fault_server: FaultServer,
    http_session: aiohttp.ClientSession,
    make_client: Callable[..., ServiceHTTPClient],
) -> None:
    registry = ServiceRegistry(http_session)
    client = make_client(fault_server, registry=registry)
    assert (await client.post(BATCH_PATH, batch(1))).endpoint == fault_server.url
    no_endpoints = make_client(registry=registry)
    with pytest.raises(ServiceCallError, match="no endpoint"):
        await no_endpoints.post(BATCH_PATH, batch(1))
