"""ServiceRegistry against real aiohttp servers on 127.0.0.1 (tests/pipeline/fault_server.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest

from custom_components.ha_ingestor.pipeline.endpoint_health import (
    RESULT_WINDOW,
    EndpointStatus,
    ServiceRegistry,
)
from tests.pipeline.fakes import FakeClock
from tests.pipeline.fault_server import HEALTH_PATH, Fault, FaultServer

if TYPE_CHECKING:
    import aiohttp

REGISTRY_LOGGER = "custom_components.ha_ingestor.pipeline.endpoint_health"
ServerFactory = Callable[..., Awaitable[FaultServer]]


class GatedSleep:
    """A sleep that returns only when the test opens the gate, one round at a time."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.waiting.set()
        await self._gate.wait()
        self._gate.clear()

    async def next_round(self) -> None:
        """Let the loop run its next round and wait until it sleeps again."""
        self.waiting.clear()
        self._gate.set()
        await asyncio.wait_for(self.waiting.wait(), 5)


@pytest.fixture
def wall() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def make_registry(
    http_session: aiohttp.ClientSession, wall: FakeClock
) -> Callable[..., ServiceRegistry]:
    def make(**kwargs: Any) -> ServiceRegistry:
        kwargs.setdefault("clock", wall)
        kwargs.setdefault("timeout", 2.0)
        return ServiceRegistry(http_session, **kwargs)

    return make


async def two_servers(factory: ServerFactory) -> tuple[FaultServer, FaultServer]:
    return await factory(name="first"), await factory(name="second")


# -- health checks ---------------------------------------------------------------------


async def test_check_marks_up_with_latency_and_since(
    fault_server: FaultServer, make_registry: Callable[..., ServiceRegistry], wall: FakeClock
) -> None:
    registry = make_registry()
    registry.register_service("storage", [fault_server.url + "/"])  # trailing slash is fine
    [before] = registry.status("storage")
    assert before.available is None
    assert before.success_ratio() == 1.0
    assert registry.is_available("storage")  # not checked yet: usable

    [status] = await registry.check_service("storage")
    assert isinstance(status, EndpointStatus)
    assert status.url == fault_server.url
    assert status.available is True
    assert status.since == wall.now
    assert status.last_check == wall.now
    assert status.last_latency_ms is not None
    assert status.last_latency_ms > 0
    assert status.last_error is None
    assert (status.checks, status.successes) == (1, 1)
    assert [r.path for r in fault_server.requests] == [HEALTH_PATH]

    wall.now += 30
    await registry.check_service("storage")
    assert status.since == wall.now - 30  # still up: no change
    assert status.last_check == wall.now


async def test_check_marks_down_refused_http_error_and_timeout(
    fault_server_factory: ServerFactory, make_registry: Callable[..., ServiceRegistry]
) -> None:
    refused, failing, slow = [await fault_server_factory() for _ in range(3)]
    await refused.refuse()
    failing.health_status = 503
    slow.add_faults(Fault.slow(10, path=HEALTH_PATH))
    registry = make_registry(timeout=0.3)
    registry.register_service("storage", [refused.url, failing.url, slow.url])
    statuses = await registry.check_service("storage")
    assert [s.available for s in statuses] == [False, False, False]
    assert statuses[0].last_error is not None
    assert "ClientConnectorError" in statuses[0].last_error
    assert statuses[1].last_error == "HTTP 503"
    assert statuses[2].last_error == "timed out after 0.3 s"
    assert [s.success_ratio() for s in statuses] == [0.0, 0.0, 0.0]
    assert not registry.is_available("storage")
    # None usable: the configured first, and callers will find out.
    assert registry.get_service_url("storage") == refused.url


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_answer_counts_as_reachable(
    fault_server: FaultServer, make_registry: Callable[..., ServiceRegistry], status: int
) -> None:
    fault_server.fail_next(1, status, path=HEALTH_PATH)
    registry = make_registry()
    registry.register_service("storage", [fault_server.url])
    [endpoint] = await registry.check_service("storage")
    assert endpoint.available is True
    assert endpoint.last_error == "auth"


async def test_health_checks_carry_no_token(
    fault_server: FaultServer, make_registry: Callable[..., ServiceRegistry]
) -> None:
    fault_server.token = "secret"  # the API needs it; health is open
    registry = make_registry()
    registry.register_service("storage", [fault_server.url])
    [endpoint] = await registry.check_service("storage")
    assert endpoint.available is True
    assert "Authorization" not in fault_server.requests[-1].headers


async def test_one_failure_does_not_take_an_up_url_down(
    fault_server: FaultServer, make_registry: Callable[..., ServiceRegistry]
) -> None:
    registry = make_registry(failures_to_down=2)
    registry.register_service("storage", [fault_server.url])
    [status] = await registry.check_service("storage")
    fault_server.health_status = 500
    await registry.check_service("storage")
    assert status.available is True  # one blip
    assert status.last_error == "HTTP 500"
    await registry.check_service("storage")
    assert status.available is False
    fault_server.health_status = 200
    await registry.check_service("storage")
    assert status.available is True  # up at the first success
    assert (status.checks, status.successes) == (4, 2)


async def test_failover_and_back(
    fault_server_factory: ServerFactory,
    make_registry: Callable[..., ServiceRegistry],
    wall: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = await two_servers(fault_server_factory)
    registry = make_registry(failures_to_down=1)
    registry.register_service("storage", [first.url, second.url])
    assert registry.get_service_url("storage") == first.url
    await registry.check_service("storage")
    assert registry.get_service_url("storage") == first.url

    await first.refuse()
    wall.now += 10
    await registry.check_service("storage")
    assert registry.get_service_url("storage") == second.url
    assert registry.get_service_urls("storage") == [second.url, first.url]
    assert registry.is_available("storage")
    [down, up] = registry.status("storage")
    assert (down.available, down.since) == (False, wall.now)

    await first.restore()
    wall.now += 125
    await registry.check_service("storage")
    assert registry.get_service_url("storage") == first.url
    assert registry.get_service_urls("storage") == [first.url, second.url]
    assert down.since == wall.now

    records = [r for r in caplog.records if r.name == REGISTRY_LOGGER]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    infos = [r.getMessage() for r in records if r.levelno == logging.INFO]
    assert len(warnings) == 1
    assert f"storage at {first.url} is down: ClientConnectorError" in warnings[0]
    assert infos == [f"storage at {first.url} is back after 125 s"]


async def test_unknown_then_down_logs_once(
    fault_server: FaultServer,
    make_registry: Callable[..., ServiceRegistry],
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = make_registry()
    registry.register_service("storage", [fault_server.url])
    await fault_server.refuse()
    for _ in range(5):
        await registry.check_service("storage")
    records = [r for r in caplog.records if r.name == REGISTRY_LOGGER]
    assert [r.levelno for r in records] == [logging.WARNING]


async def test_check_all_services(
    fault_server_factory: ServerFactory, make_registry: Callable[..., ServiceRegistry]
) -> None:
    first, second = await two_servers(fault_server_factory)
    second.health_status = 503
    registry = make_registry()
    registry.register_service("enrichment", [first.url])
    registry.register_service("storage", [second.url])
    result = await registry.check_all_services()
    assert {name: [s.available for s in statuses] for name, statuses in result.items()} == {
        "enrichment": [True],
        "storage": [False],
    }
    assert await make_registry().check_all_services() == {}


# -- passive results -------------------------------------------------------------------


async def test_passive_results(make_registry: Callable[..., ServiceRegistry]) -> None:
    registry = make_registry(failures_to_down=3)
    registry.register_service("storage", ["http://127.0.0.1:1", "http://127.0.0.1:2"])
    events: list[tuple[str, str, bool]] = []
    registry.add_listener(lambda *args: events.append(args))

    registry.record_result("storage", "http://127.0.0.1:1", True, 12.5)
    [first, _] = registry.status("storage")
    assert (first.available, first.last_latency_ms, first.last_check) == (True, 12.5, None)
    # A real call that got no answer is conclusive: down at once, whatever
    # failures_to_down says for health checks.
    registry.record_result("storage", "http://127.0.0.1:1/", False, error="timed out")
    assert first.available is False
    assert first.last_error == "timed out"
    assert registry.get_service_url("storage") == "http://127.0.0.1:2"
    registry.record_result("storage", "http://127.0.0.1:1", True, 3.0)
    assert first.available is True
    assert registry.get_service_url("storage") == "http://127.0.0.1:1"
    assert events == [
        ("storage", "http://127.0.0.1:1", True),
        ("storage", "http://127.0.0.1:1", False),
        ("storage", "http://127.0.0.1:1", True),
    ]
    # Results for services or URLs the registry does not know are ignored.
    registry.record_result("nope", "http://127.0.0.1:1", False)
    registry.record_result("storage", "http://127.0.0.1:9", False)
    assert len(events) == 3


def test_success_ratio_over_a_sliding_window(
    make_registry: Callable[..., ServiceRegistry],
) -> None:
    registry = make_registry()
    registry.register_service("storage", ["http://127.0.0.1:1"])
    for _ in range(RESULT_WINDOW):
        registry.record_result("storage", "http://127.0.0.1:1", False)
    for _ in range(RESULT_WINDOW // 2):
        registry.record_result("storage", "http://127.0.0.1:1", True)
    [status] = registry.status("storage")
    assert (status.checks, status.successes) == (RESULT_WINDOW, RESULT_WINDOW // 2)
    assert status.success_ratio() == 0.5


# -- listeners -------------------------------------------------------------------------


async def test_listeners_on_changes_only(
    fault_server: FaultServer,
    make_registry: Callable[..., ServiceRegistry],
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = make_registry(failures_to_down=1)
    registry.register_service("storage", [fault_server.url])
    heard: list[tuple[str, str, bool]] = []
    remove = registry.add_listener(lambda *args: heard.append(args))

    def broken(service: str, url: str, available: bool) -> None:
        raise RuntimeError("listener bug")

    registry.add_listener(broken)
    await registry.check_service("storage")
    await registry.check_service("storage")
    fault_server.health_status = 500
    await registry.check_service("storage")
    await registry.check_service("storage")
    assert heard == [("storage", fault_server.url, True), ("storage", fault_server.url, False)]
    # A failing listener is logged, and the others still hear about changes.
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert "listener failed" in errors[0].getMessage()
    remove()
    fault_server.health_status = 200
    await registry.check_service("storage")
    assert len(heard) == 2


# -- periodic checks -------------------------------------------------------------------


async def test_start_checks_at_once_then_every_interval(
    fault_server: FaultServer, make_registry: Callable[..., ServiceRegistry]
) -> None:
    sleep = GatedSleep()
    registry = make_registry(interval=7.0, sleep=sleep)
    registry.register_service("storage", [fault_server.url])
    registry.start()
    registry.start()  # already running: no second task
    await asyncio.wait_for(sleep.waiting.wait(), 5)
    assert len(fault_server.requests) == 1  # the first check runs at once
    assert sleep.delays == [7.0]
    assert registry.snapshot()["running"] is True
    await sleep.next_round()  # the fake clock stood still: nothing due, nothing checked
    assert len(fault_server.requests) == 1
    registry._clock.advance(7.0)  # type: ignore[attr-defined]
    await sleep.next_round()
    assert len(fault_server.requests) == 2
    assert sleep.delays == [7.0] * 3
    await registry.stop()
    await registry.stop()  # idempotent
    assert registry.snapshot()["running"] is False
    # Nothing is left behind (the test harness also fails on lingering tasks).
    assert not [t for t in asyncio.all_tasks() if "health checks" in t.get_name()]


async def test_a_url_that_failed_is_probed_every_few_seconds_jittered(
    fault_server: FaultServer, make_registry: Callable[..., ServiceRegistry], wall: FakeClock
) -> None:
    sleep = GatedSleep()
    jitter = iter([0.0, 1.0, 0.5])
    registry = make_registry(
        interval=30.0, probe_interval=2.0, sleep=sleep, rng=lambda: next(jitter)
    )
    registry.register_service("storage", [fault_server.url])
    fault_server.health_status = 503
    registry.start()
    await asyncio.wait_for(sleep.waiting.wait(), 5)
    [endpoint] = registry.status("storage")
    assert endpoint.available is False
    # probe_interval x (0.5 + rng): 1 s, then 3 s, then 2 s; never the 30 s interval.
    for wait in (1.0, 3.0, 2.0):
        assert sleep.delays[-1] == pytest.approx(wait)
        wall.advance(wait)
        await sleep.next_round()
    assert len(fault_server.requests_to(HEALTH_PATH)) == 4
    fault_server.health_status = 200
    wall.advance(sleep.delays[-1])
    await sleep.next_round()
    assert endpoint.available is True
    assert sleep.delays[-1] == pytest.approx(30.0)  # up again: back to the interval
    await registry.stop()


async def test_a_failed_real_call_cuts_the_wait_short_for_a_probe(
    fault_server: FaultServer, make_registry: Callable[..., ServiceRegistry], wall: FakeClock
) -> None:
    sleep = GatedSleep()
    registry = make_registry(interval=30.0, probe_interval=2.0, sleep=sleep, rng=lambda: 0.5)
    registry.register_service("storage", [fault_server.url])
    registry.start()
    await asyncio.wait_for(sleep.waiting.wait(), 5)
    assert sleep.delays == [30.0]
    sleep.waiting.clear()
    registry.record_result("storage", fault_server.url, False, error="connection refused")
    # The 30 s sleep is cut short; the loop sleeps again, now until the probe is due.
    await asyncio.wait_for(sleep.waiting.wait(), 5)
    assert sleep.delays[-1] == pytest.approx(2.0)
    wall.advance(2.0)
    await sleep.next_round()
    [endpoint] = registry.status("storage")
    assert endpoint.available is True  # the probe found it answering
    await registry.stop()


async def test_an_error_answer_brings_the_health_check_forward(
    fault_server: FaultServer, make_registry: Callable[..., ServiceRegistry], wall: FakeClock
) -> None:
    sleep = GatedSleep()
    registry = make_registry(interval=30.0, probe_interval=2.0, sleep=sleep, rng=lambda: 0.5)
    registry.register_service("storage", [fault_server.url])
    registry.start()
    await asyncio.wait_for(sleep.waiting.wait(), 5)
    sleep.waiting.clear()
    registry.check_soon("storage", fault_server.url + "/")
    registry.check_soon("nope", fault_server.url)  # unknown: ignored
    await asyncio.wait_for(sleep.waiting.wait(), 5)
    assert sleep.delays[-1] == pytest.approx(2.0)
    [endpoint] = registry.status("storage")
    assert endpoint.available is True  # no verdict: only the check decides
    fault_server.health_status = 503
    for _ in range(2):  # two failed checks, a probe interval apart: down
        wall.advance(sleep.delays[-1])
        await sleep.next_round()
    assert endpoint.available is False
    await registry.stop()


async def test_periodic_checks_with_real_sleep(
    fault_server: FaultServer, http_session: aiohttp.ClientSession
) -> None:
    registry = ServiceRegistry(http_session, interval=0.01, timeout=2.0)
    registry.register_service("storage", [fault_server.url])
    registry.start()
    await fault_server.wait_for_requests(3)
    await registry.stop()
    count = len(fault_server.requests)
    await asyncio.sleep(0.05)
    assert len(fault_server.requests) == count  # stopped means stopped


async def test_a_round_that_raises_does_not_stop_the_loop(
    fault_server: FaultServer,
    make_registry: Callable[..., ServiceRegistry],
    caplog: pytest.LogCaptureFixture,
    wall: FakeClock,
) -> None:
    sleep = GatedSleep()
    registry = make_registry(sleep=sleep)
    registry.register_service("storage", [fault_server.url])
    calls = 0

    def flaky(service: str, url: str, available: bool) -> None:
        nonlocal calls
        calls += 1

    registry.add_listener(flaky)
    original = registry.check_due

    async def failing_once() -> None:
        registry.check_due = original  # type: ignore[method-assign]
        raise RuntimeError("boom")

    registry.check_due = failing_once  # type: ignore[method-assign]
    registry.start()
    await asyncio.wait_for(sleep.waiting.wait(), 5)
    await sleep.next_round()
    await registry.stop()
    assert "health check round failed" in caplog.text
    assert calls == 1  # the second round ran and saw the URL come up


# -- configuration ---------------------------------------------------------------------


async def test_unknown_service(make_registry: Callable[..., ServiceRegistry]) -> None:
    registry = make_registry()
    with pytest.raises(KeyError, match="nope"):
        registry.get_service_url("nope")
    with pytest.raises(KeyError):
        registry.get_service_urls("nope")
    with pytest.raises(KeyError):
        registry.is_available("nope")
    with pytest.raises(KeyError):
        registry.status("nope")
    with pytest.raises(KeyError):
        await registry.check_service("nope")
    registry.unregister_service("nope")  # no error


def test_validation(make_registry: Callable[..., ServiceRegistry]) -> None:
    with pytest.raises(ValueError, match="interval"):
        make_registry(interval=0)
    with pytest.raises(ValueError, match="failures_to_down"):
        make_registry(failures_to_down=0)
    with pytest.raises(ValueError, match="at least one URL"):
        make_registry().register_service("storage", [])


def test_re_register_replaces_urls_and_keeps_what_is_known(
    make_registry: Callable[..., ServiceRegistry],
) -> None:
    registry = make_registry()
    registry.register_service("storage", ["http://127.0.0.1:1", "http://127.0.0.1:2"])
    registry.record_result("storage", "http://127.0.0.1:2", False)
    registry.register_service(
        "storage", ["http://127.0.0.1:3", "http://127.0.0.1:2", "http://127.0.0.1:3/"]
    )
    statuses = registry.status("storage")
    assert [s.url for s in statuses] == ["http://127.0.0.1:3", "http://127.0.0.1:2"]
    assert [s.available for s in statuses] == [None, False]
    registry.unregister_service("storage")
    with pytest.raises(KeyError):
        registry.status("storage")


async def test_re_register_during_a_check(
    fault_server: FaultServer, make_registry: Callable[..., ServiceRegistry]
) -> None:
    fault_server.add_faults(Fault.slow(0.2, path=HEALTH_PATH))
    registry = make_registry()
    registry.register_service("storage", [fault_server.url])
    heard: list[tuple[str, str, bool]] = []
    registry.add_listener(lambda *args: heard.append(args))
    check = asyncio.create_task(registry.check_service("storage"))
    await fault_server.wait_for_requests(1)
    registry.register_service("storage", ["http://127.0.0.1:1"])
    await check
    assert heard == []  # the dropped URL's result is not reported


async def test_snapshot(
    fault_server: FaultServer, make_registry: Callable[..., ServiceRegistry], wall: FakeClock
) -> None:
    registry = make_registry(interval=15.0)
    registry.register_service("storage", [fault_server.url], health_path=HEALTH_PATH)
    await registry.check_service("storage")
    snapshot = registry.snapshot()
    assert snapshot["interval"] == 15.0
    assert snapshot["running"] is False
    storage = snapshot["services"]["storage"]
    assert storage["available"] is True
    assert storage["url"] == fault_server.url
    assert storage["health_path"] == HEALTH_PATH
    [endpoint] = storage["endpoints"]
    assert endpoint["url"] == fault_server.url
    assert endpoint["available"] is True
    assert endpoint["since"] == wall.now
    assert endpoint["checks"] == 1
    assert endpoint["success_ratio"] == 1.0
