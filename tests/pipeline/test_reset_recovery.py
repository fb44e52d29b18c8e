"""Delivery after connection resets, with the integration's own settings.

The chaos test (tests/e2e/test_chaos.py) once saw its "reset" fault meet one request in
15 s. These tests wire what the integration wires (runtime.py: the registry's health
probes, its up/down listener waking the forwarder, the default breaker, the forwarder's
backoff of 1 s to 300 s) against a real receiver and outbox, and measure:

- a reset is retried within about a second, and after several resets in a row delivery
  is back within a health probe (the registry's wake), not after the grown backoff;
- the cause of that chaos run: the test waited for "a request passed the proxy" before
  the next fault, and the health checks pass all along, so the fault began while the
  forwarder was still backing off from the fault before (its failure count not reset).
  The proxy now tells when a batch was accepted (`delivery_back`).

Full jitter is pinned to its ceiling (``sleep_rng``), the longest wait it can draw, so the
measured times are the worst the backoff allows.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import web

from custom_components.ha_ingestor.pipeline.endpoint_health import ServiceRegistry
from custom_components.ha_ingestor.pipeline.forwarder import ForwarderConfig, Route
from custom_components.ha_ingestor.pipeline.http_client import ServiceHTTPClient, Timeouts
from tests.e2e.fault_proxy import Switch, delivery_back, proxy_app
from tests.pipeline.fault_server import BATCH_PATH, Fault, FaultKind
from tests.pipeline.forwarding import event

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from custom_components.ha_ingestor.pipeline.forwarder import EventForwarder
    from tests.pipeline.fault_server import FaultServer, RequestRecord
    from tests.pipeline.forwarding import Harness

# What custom_components/ha_ingestor/runtime.py uses (it imports Home Assistant, so the
# values are repeated here): request timeouts, health probes, health check interval.
REQUEST_TIMEOUTS = Timeouts(connect=5.0, total=30.0)
PROBE_INTERVAL = 1.0
HEALTH_TIMEOUT = 5.0
HEALTH_INTERVAL = 30.0
PRODUCT = ForwarderConfig()  # the backoff (1 s doubling to 300 s) and the linger (200 ms)
CEILING = 1.0  # full jitter's longest draw


class Wiring:
    """The registry, a client with the default breaker, and a forwarder, as runtime.py
    wires them; the registry is stopped at the end of the test."""

    def __init__(self, session: aiohttp.ClientSession, harness: Harness) -> None:
        self.session = session
        self.harness = harness
        self.registries: list[ServiceRegistry] = []

    def forwarder(self, url: str, *, probe_rng: Callable[[], float]) -> EventForwarder:
        registry = ServiceRegistry(
            self.session,
            interval=HEALTH_INTERVAL,
            probe_interval=PROBE_INTERVAL,
            timeout=HEALTH_TIMEOUT,
            rng=probe_rng,
        )
        registry.register_service("storage", [url])
        client = ServiceHTTPClient(
            "storage", [url], self.session, timeouts=REQUEST_TIMEOUTS, registry=registry
        )
        forwarder = self.harness.forwarder(
            Route("storage", client),
            backoff=PRODUCT.backoff,
            linger=PRODUCT.linger,
            sleep_rng=lambda: CEILING,
        )
        registry.add_listener(forwarder.on_availability)
        registry.start()
        self.registries.append(registry)
        return forwarder


@pytest.fixture
async def wiring(http_session: aiohttp.ClientSession, harness: Harness) -> AsyncIterator[Wiring]:
    wiring = Wiring(http_session, harness)
    yield wiring
    for forwarder in harness.forwarders:
        await forwarder.stop()
    for registry in wiring.registries:
        await registry.stop()


async def steady_load(harness: Harness, every: float = 0.01) -> None:
    """An event every ``every`` seconds until cancelled (a house's state changes)."""
    n = 0
    while True:
        harness.outbox.append(event(n))
        n += 1
        await asyncio.sleep(every)


async def until(condition: Callable[[], bool], timeout: float) -> float:
    """Poll ``condition`` every 10 ms; returns when it held (monotonic)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)
    return time.monotonic()


def batches(server: FaultServer) -> list[RequestRecord]:
    return server.requests_to(BATCH_PATH)


async def accepted_after(server: FaultServer, since: float, timeout: float = 10.0) -> float:
    """When the first batch after ``since`` (monotonic) that was accepted arrived."""

    def accepted() -> list[RequestRecord]:
        return [r for r in batches(server) if r.at > since and r.status == 200]

    await until(lambda: bool(accepted()), timeout)
    return accepted()[0].at


async def resets_done(server: FaultServer, timeout: float) -> float:
    """Wait until the planned resets met their requests; when the last one arrived."""
    await until(lambda: server.pending_faults == 0, timeout)
    return [r for r in batches(server) if r.fault is FaultKind.RESET][-1].at


async def test_a_single_reset_is_retried_within_a_second(
    wiring: Wiring, fault_server: FaultServer
) -> None:
    wiring.forwarder(fault_server.url, probe_rng=lambda: CEILING)
    load = asyncio.create_task(steady_load(wiring.harness))
    try:
        await accepted_after(fault_server, 0.0)
        fault_server.add_faults(Fault.reset())
        reset_at = await resets_done(fault_server, 5.0)
        delivered_at = await accepted_after(fault_server, reset_at)
    finally:
        load.cancel()
    # The first failure's backoff is at most its base (1 s); the probe adds nothing.
    assert delivered_at - reset_at < 1.5


async def test_after_resets_in_a_row_delivery_is_back_within_a_probe(
    wiring: Wiring, fault_server: FaultServer
) -> None:
    """Four resets in a row grow the backoff to 8 s (jitter at its ceiling); the reset
    marks the URL down, its health answers within a probe interval (1.5 s at most), and
    the registry's wake sends the waiting batch then (docs/ARCHITECTURE.md, "Recovery")."""
    wiring.forwarder(fault_server.url, probe_rng=lambda: CEILING)
    load = asyncio.create_task(steady_load(wiring.harness))
    try:
        await accepted_after(fault_server, 0.0)
        fault_server.add_faults(*[Fault.reset()] * 4)
        last_reset = await resets_done(fault_server, 20.0)
        delivered_at = await accepted_after(fault_server, last_reset)
    finally:
        load.cancel()
    assert delivered_at - last_reset < 3.0  # the backoff alone: 8 s


@pytest.fixture
async def proxy(
    socket_enabled: None, fault_server: FaultServer
) -> AsyncIterator[tuple[str, Switch]]:
    """tests/e2e/fault_proxy.py's proxy in front of `fault_server`, in this process."""
    switch = Switch()
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        runner = web.AppRunner(proxy_app(switch, fault_server.url, session), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            yield f"http://127.0.0.1:{port}", switch
        finally:
            await runner.cleanup()


async def test_a_fault_begins_once_a_batch_was_accepted_after_the_one_before(
    wiring: Wiring, proxy: tuple[str, Switch]
) -> None:
    """The chaos test's order: a fault of 500 answers until it met two requests, then
    "delivery back", then the reset fault. The 500s grow the forwarder's backoff (1 s,
    then 2 s) and are no reason to cut it short (the service answers, with errors);
    meanwhile its health, probed after each 500 (0.5 s later here, the soonest), passes
    the proxy. So a passed request is no sign of delivery: the fault after it would meet
    the rest of that backoff. `delivery_back` waits for an accepted batch, which resets
    the forwarder's failure count, so the reset fault meets prompt retries."""
    url, switch = proxy
    forwarder = wiring.forwarder(url, probe_rng=lambda: 0.0)
    load = asyncio.create_task(steady_load(wiring.harness))
    counts = switch.counts

    def stats() -> dict[str, int]:
        return dict(counts)

    try:
        start = stats()
        await until(lambda: delivery_back(start, stats()), 10.0)

        switch.set("500", 15.0)
        await until(lambda: counts["500"] >= 2, 10.0)
        switch.set("500", 0.0)
        before = stats()
        await until(lambda: delivery_back(before, stats()), 10.0)
        # The accepted batch's answer is on its way back; the forwarder settles it at once
        # (its backoff after the 500s would keep it at two failures 1.5 s longer).
        await until(lambda: forwarder.snapshot()["consecutive_failures"] == 0, 0.5)

        hits = counts["reset"]
        switch.set("reset", 3.0)
        await asyncio.sleep(3.0)
        ended = time.monotonic()
        assert counts["reset"] - hits >= 2
        before = stats()
        back = await until(lambda: delivery_back(before, stats()), 10.0)
    finally:
        load.cancel()
    assert back - ended < 2.0
