"""What the dashboard says while a service is refused, hung or slow, and when it is back.

A real Home Assistant test core with the integration and real receivers on 127.0.0.1,
in real time: each test samples the Status sensor, the "Delivery problem" binary sensor
and the storage's connectivity sensor at every coordinator refresh and checks their
states over time (docs/ARCHITECTURE.md, "Recovery").
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from unittest.mock import patch

import pytest
from homeassistant.const import STATE_OFF, STATE_ON

from custom_components.ha_ingestor.const import CONF_PROBLEM_AFTER
from custom_components.ha_ingestor.pipeline.http_client import Timeouts
from tests.integration.common import ENTRY_ID, make_entry, setup_entry, tick, unload
from tests.pipeline.fault_server import BATCH_PATH, HEALTH_PATH, Fault

if TYPE_CHECKING:
    from homeassistant.core import HomeAssistant
    from pytest_homeassistant_custom_component.common import MockConfigEntry

    from tests.pipeline.fault_server import FaultServer

STATUS = "sensor.ha_ingestor_forwarder_status"
PROBLEM = "binary_sensor.ha_ingestor_forwarder_delivery_problem"
CONNECTIVITY = "binary_sensor.data_storage_connectivity"
REQUEST_TIMEOUT = 1.0  # answers of 0.3 s stay well inside it on a loaded machine


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # seconds since the watch began
    status: str
    problem: str
    connectivity: str


class Watch:
    """Samples the three entities at each coordinator refresh."""

    def __init__(self, hass: HomeAssistant) -> None:
        self.hass = hass
        self.started = time.monotonic()
        self.samples: list[Sample] = []

    def state(self, entity_id: str) -> str:
        state = self.hass.states.get(entity_id)
        assert state is not None, entity_id
        return state.state

    async def sample(self) -> Sample:
        await tick(self.hass)
        sample = Sample(
            time.monotonic() - self.started,
            self.state(STATUS),
            self.state(PROBLEM),
            self.state(CONNECTIVITY),
        )
        self.samples.append(sample)
        return sample

    async def until(self, condition: str, check: object, timeout: float = 8.0) -> Sample:
        """Sample every 0.1 s until ``check(sample)``; the time it took is in the sample."""
        deadline = time.monotonic() + timeout
        while True:
            sample = await self.sample()
            if check(sample):  # type: ignore[operator]
                return sample
            assert time.monotonic() < deadline, f"not {condition} in {timeout} s: {sample}"
            await asyncio.sleep(0.1)

    def statuses(self) -> list[str]:
        """The Status values seen, each run of equal values once."""
        seen: list[str] = []
        for sample in self.samples:
            if not seen or seen[-1] != sample.status:
                seen.append(sample.status)
        return seen


@pytest.fixture(autouse=True)
def short_timeouts() -> object:
    """A batch timeout of a second, so that a hung service fails fast here."""
    with (
        patch(
            "custom_components.ha_ingestor.runtime.REQUEST_TIMEOUTS",
            Timeouts(connect=REQUEST_TIMEOUT, total=REQUEST_TIMEOUT),
        ),
        # Not shorter: a loaded test machine may take that long to answer a check.
        patch("custom_components.ha_ingestor.runtime.HEALTH_TIMEOUT", 2.0),
    ):
        yield


async def start(hass: HomeAssistant, storage: FaultServer) -> MockConfigEntry:
    entry = make_entry(storage.url, entry_id=ENTRY_ID, **{CONF_PROBLEM_AFTER: 1})
    await setup_entry(hass, entry)
    await storage.wait_for_requests(1)  # the first health check landed
    return entry


async def test_a_refused_service(hass: HomeAssistant, storage_server: FaultServer) -> None:
    entry = await start(hass, storage_server)
    watch = Watch(hass)
    first = await watch.sample()
    assert (first.status, first.problem, first.connectivity) == ("delivering", STATE_OFF, STATE_ON)

    await storage_server.refuse()
    hass.states.async_set("sensor.outside", "1")
    # The first failed batch: waiting, and the storage is disconnected at once.
    waiting = await watch.until("waiting", lambda s: s.status == "waiting")
    assert waiting.at < 1.5
    assert waiting.connectivity == STATE_OFF
    attributes = hass.states.get(STATUS).attributes  # type: ignore[union-attr]
    assert attributes["service"] == "storage"
    assert "Cannot connect" in attributes["last_error"]
    assert attributes["since"] is not None
    # The oldest waiting event passes the threshold (1 s here): a problem to alert on.
    problem = await watch.until("a problem", lambda s: s.problem == STATE_ON)
    assert problem.at >= 1.0
    assert problem.status == "waiting"

    await storage_server.restore()
    back = time.monotonic()
    # The registry probes every 0.5-1.5 s while storage is down: found, woken, delivered.
    healthy = await watch.until(
        "delivering again", lambda s: s.status == "delivering" and s.problem == STATE_OFF
    )
    assert time.monotonic() - back < 4.0
    assert healthy.connectivity == STATE_ON
    assert len(storage_server.stored_ids) == 1
    assert "since" not in hass.states.get(STATUS).attributes  # type: ignore[union-attr]
    assert watch.statuses() == ["delivering", "waiting", "delivering"]
    await unload(hass, entry)


async def test_a_hung_service(hass: HomeAssistant, storage_server: FaultServer) -> None:
    entry = await start(hass, storage_server)
    watch = Watch(hass)
    assert (await watch.sample()).status == "delivering"
    # Everything hangs, health included: accepted connections that never answer.
    storage_server.add_faults(
        *[Fault.slow(30, path=path) for path in (BATCH_PATH, HEALTH_PATH) for _ in range(40)]
    )
    hass.states.async_set("sensor.outside", "1")
    waiting = await watch.until("waiting", lambda s: s.status == "waiting")
    # Down within the request timeout, not after the 30 s health interval.
    assert waiting.at < REQUEST_TIMEOUT + 1.0
    assert waiting.connectivity == STATE_OFF
    assert "timed out" in hass.states.get(STATUS).attributes["last_error"]  # type: ignore[union-attr]
    await watch.until("a problem", lambda s: s.problem == STATE_ON)
    # While it hangs, nothing says otherwise.
    for _ in range(10):
        sample = await watch.sample()
        assert (sample.status, sample.problem) == ("waiting", STATE_ON)
        await asyncio.sleep(0.1)

    storage_server.clear_faults()
    await watch.until("delivering again", lambda s: s.status == "delivering", timeout=10)
    await watch.until("no problem", lambda s: s.problem == STATE_OFF and s.connectivity == STATE_ON)
    assert len(storage_server.stored_ids) == 1
    await unload(hass, entry)


async def test_a_slowly_answering_service(hass: HomeAssistant, storage_server: FaultServer) -> None:
    """Answers within the timeout are deliveries: nothing turns red."""
    entry = await start(hass, storage_server)
    watch = Watch(hass)
    storage_server.add_faults(*[Fault.slow(0.3, path=BATCH_PATH)] * 6)
    for value in range(6):
        hass.states.async_set("sensor.outside", str(value))
        await asyncio.sleep(0.4)
        await watch.sample()
    await watch.until("all stored", lambda _: len(storage_server.stored_ids) == 6)
    assert {(s.status, s.problem, s.connectivity) for s in watch.samples} == {
        ("delivering", STATE_OFF, STATE_ON)
    }
    await unload(hass, entry)


async def test_an_error_answer_is_backing_off(
    hass: HomeAssistant, storage_server: FaultServer
) -> None:
    """A service that answers with errors is reachable, and retried after a backoff."""
    entry = await start(hass, storage_server)
    watch = Watch(hass)
    # Retry-After makes the wait at least 2 s (a full-jitter backoff may be ~0).
    storage_server.fail_next(1, 500, retry_after=2, path=BATCH_PATH)
    hass.states.async_set("sensor.outside", "1")
    backing_off = await watch.until("backing off", lambda s: s.status == "backing_off")
    assert backing_off.connectivity == STATE_ON
    error = hass.states.get(STATUS).attributes["last_error"]  # type: ignore[union-attr]
    assert error.startswith("storage: HTTP 500")
    await watch.until("delivering again", lambda s: s.status == "delivering", timeout=5)
    assert len(storage_server.stored_ids) == 1
    await unload(hass, entry)


async def test_paused_is_a_delivery_problem_once_events_wait(
    hass: HomeAssistant, storage_server: FaultServer
) -> None:
    entry = await start(hass, storage_server)
    watch = Watch(hass)
    entry.runtime_data.runtime.forwarder.pause()
    hass.states.async_set("sensor.outside", "1")
    assert (await watch.sample()).status == "paused"
    problem = await watch.until("a problem", lambda s: s.problem == STATE_ON)
    assert problem.status == "paused"
    entry.runtime_data.runtime.forwarder.resume()
    await watch.until("no problem", lambda s: s.problem == STATE_OFF and s.status == "delivering")
    await unload(hass, entry)
