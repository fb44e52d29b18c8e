"""Test set-up shared by every suite.

The Home Assistant test harness mounts its own ``custom_components`` package; importing
ours first makes Home Assistant find this repository's integration.
"""

from __future__ import annotations

import os
import sys
from asyncio import base_events
from typing import TYPE_CHECKING, Any

import pytest
import zeroconf

import custom_components.ha_ingestor  # noqa: F401
from tests.pipeline.fault_server import FaultServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator


def _tolerate_accept_after_close() -> None:
    """Work around CPython 3.13.0's asyncio.Server, fixed in later 3.13 releases.

    A connection accepted just as the server closes makes ``Server._attach`` fail an
    assertion (and a late ``_wakeup`` iterate over None). Tests close receivers on
    purpose ("connection refused"), so they would fail at random. Only the test process
    is patched, and only on 3.13.0.
    """

    def _attach(self: Any, transport: Any) -> None:
        self._clients.add(transport)

    def _wakeup(self: Any) -> None:
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    base_events.Server._attach = _attach  # type: ignore[method-assign]
    base_events.Server._wakeup = _wakeup  # type: ignore[method-assign]


if sys.version_info[:3] == (3, 13, 0):
    _tolerate_accept_after_close()


# Home Assistant's zeroconf integration, once a test sets it up (the harness's
# mock_async_zeroconf does), replaces these for the rest of the process
# (zeroconf/usage.py install_multiple_zeroconf_catcher), and a later test's real
# Zeroconf (the services' announcement, a browser) would get that test's mock instead.
_ZEROCONF_INIT = zeroconf.Zeroconf.__init__


def _zeroconf_new(cls: type, *args: Any, **kwargs: Any) -> Any:
    # object's own, for a class that has an __init__ (a deleted __new__ would not do:
    # the type keeps a __new__ slot that passes the arguments on to object.__new__).
    return object.__new__(cls)


@pytest.fixture(autouse=True)
def _real_zeroconf_after_each_test() -> Iterator[None]:
    yield
    if zeroconf.Zeroconf.__init__ is not _ZEROCONF_INIT:
        zeroconf.Zeroconf.__init__ = _ZEROCONF_INIT  # type: ignore[method-assign]
        zeroconf.Zeroconf.__new__ = _zeroconf_new  # type: ignore[assignment,method-assign]


@pytest.fixture(autouse=True, scope="session")
def _services_state_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Services the tests start keep their id files in the session's temporary folder,
    not in the user's ~/.local/state (tests that mean a folder pass --state-dir)."""
    os.environ.setdefault("HA_INGESTOR_STATE_DIR", str(tmp_path_factory.mktemp("state")))


@pytest.fixture
async def fault_server_factory(
    socket_enabled: None,
) -> AsyncIterator[Callable[..., Awaitable[FaultServer]]]:
    """Start as many `FaultServer`s on 127.0.0.1 as a test needs: ``await factory(...)``.

    Keyword arguments go to `FaultServer` (``token=...``, ``name=...``); every server is
    stopped after the test.
    """
    servers: list[FaultServer] = []

    async def start(**kwargs: Any) -> FaultServer:
        server = FaultServer(**kwargs)
        servers.append(server)
        await server.start()
        return server

    yield start
    for server in servers:
        await server.stop()
