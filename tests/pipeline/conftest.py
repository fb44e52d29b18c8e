"""Shared fixtures of the pipeline tests."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from custom_components.ha_ingestor.pipeline.envelope import EventValidator
from custom_components.ha_ingestor.pipeline.http_client import ServiceHTTPClient, Timeouts
from custom_components.ha_ingestor.pipeline.outbox import Outbox
from tests.pipeline.envelopes import CONTEXT
from tests.pipeline.fakes import FakeClock, Sleeper
from tests.pipeline.fault_server import FaultServer
from tests.pipeline.forwarding import Harness

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path


@pytest.fixture
async def fault_server(socket_enabled: None) -> AsyncIterator[FaultServer]:
    """A started `FaultServer` on 127.0.0.1; stopped after the test."""
    server = FaultServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def http_session(socket_enabled: None) -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for talking to fault servers; closed after the test."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox[dict[str, Any]]]:
    box: Outbox[dict[str, Any]] = Outbox(tmp_path / "outbox.db", EventValidator().encode)
    await box.open()
    yield box
    await box.close()


@pytest.fixture
async def harness(
    http_session: aiohttp.ClientSession, outbox: Outbox[dict[str, Any]]
) -> AsyncIterator[Harness]:
    harness = Harness(http_session, outbox)
    yield harness
    for forwarder in harness.forwarders:
        await forwarder.stop()


# -- ServiceHTTPClient (test_http_client*.py) ----------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sleeper() -> Sleeper:
    return Sleeper()


@pytest.fixture
def make_client(
    http_session: aiohttp.ClientSession, clock: FakeClock, sleeper: Sleeper
) -> Callable[..., ServiceHTTPClient]:
    def make(*servers: FaultServer | str, **kwargs: Any) -> ServiceHTTPClient:
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("sleep", sleeper)
        kwargs.setdefault("rng", lambda: 0.5)
        kwargs.setdefault("timeouts", Timeouts(connect=2.0, total=5.0))
        urls = [s if isinstance(s, str) else s.url for s in servers]
        return ServiceHTTPClient("storage", urls, http_session, **kwargs)

    return make


# -- EventValidator (test_envelope*.py) -----------------------------------------------


@pytest.fixture
def validator() -> EventValidator:
    return EventValidator(envelope_context=CONTEXT)
