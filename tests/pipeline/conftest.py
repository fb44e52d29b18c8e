"""Shared fixtures of the pipeline tests."""

from __future__ import annotations

# --- fault server and HTTP session (http_client / service_discovery tests and later) ---
from typing import TYPE_CHECKING

import aiohttp
import pytest

from tests.pipeline.fault_server import FaultServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


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
