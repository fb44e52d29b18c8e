"""Shared fixtures of the companion services' tests: real servers on loopback ports."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import aiohttp
import pytest
import pytest_socket
from aiohttp import web

from benchmarks.influxd import Influxd, running_influxd
from ha_ingestor_services.connections import ServiceRunner

TOKEN = "services-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

Serve = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
async def serve(socket_enabled: None) -> AsyncIterator[Serve]:
    """Start aiohttp applications on free 127.0.0.1 ports: ``url = await serve(app)``.

    Startup runs the app's cleanup contexts (the service's ``start``); every app is
    cleaned up (``stop``) after the test, last started first.
    """
    runners: list[ServiceRunner] = []

    async def start(app: web.Application) -> str:
        runner = ServiceRunner(app, shutdown_timeout=5)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def client(socket_enabled: None) -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client session (no token: pass ``headers=AUTH``)."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="session")
def influxd_server() -> Iterator[Influxd]:
    """A real influxd (Debian's influxdb 1.x) with a temporary data directory.

    scripts/test installs it when it runs as root; elsewhere the tests that need it skip.
    Session fixtures are set up before a test's ``socket_enabled``, so sockets are
    allowed here for influxd's start-up ping (each test's setup blocks them again).
    """
    if shutil.which("influxd") is None and not os.path.exists("/usr/bin/influxd"):
        if os.geteuid() == 0:
            pytest.fail("influxd is missing; scripts/test installs Debian's influxdb as root")
        pytest.skip("influxd is not installed (Debian's influxdb package)")
    pytest_socket.enable_socket()
    with running_influxd() as server:
        yield server
