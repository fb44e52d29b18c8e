"""Shared fixtures of the pipeline tests."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from custom_components.ha_ingestor.pipeline.envelope import EventValidator
from custom_components.ha_ingestor.pipeline.outbox import Outbox
from tests.pipeline.fault_server import FaultServer
from tests.pipeline.forwarding import Harness

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
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
