"""The services' mDNS/zeroconf announcement (announce.py).

Multicast works on this machine's loopback, so the announcement is checked with a real
zeroconf browser bound to 127.0.0.1 (``interfaces=["127.0.0.1"]``): what it finds, that
it goes away when the service stops, that ``--no-announce`` announces nothing, and that
a failed announcement leaves the service serving. Announcing on the machine's other
interfaces (a wildcard host) is checked through the addresses and record set the
service builds: a browser here could only see it on loopback anyway, and tests must not
announce on the network of the machine running them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import ifaddr
import pytest
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from ha_ingestor_services import announce, cli
from ha_ingestor_services.identity import IdentitySource
from ha_ingestor_services.storage.service import StorageService
from ha_ingestor_services.storage.settings import StorageSettings
from ha_ingestor_services.web import create_app

from .conftest import TOKEN

WAIT_S = 10.0  # every wait on the network ends; zeroconf's probing takes under 1 s


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# -- the record set: pure functions ------------------------------------------------------


def test_the_record_set() -> None:
    service_id = "0c9e5f2a-7d41-4b8e-a3f6-1e2d3c4b5a69"
    info = announce.service_info(
        "storage", service_id, 8004, ["192.0.2.2", "fd00::2"], token=True, tls=False
    )
    assert info.type == "_ha-ingestor._tcp.local."
    assert info.name == "HA Ingestor storage 0c9e5f2a._ha-ingestor._tcp.local."
    assert info.port == 8004
    assert info.parsed_addresses() == ["192.0.2.2", "fd00::2"]
    assert info.decoded_properties == {
        "role": "storage",
        "api": "1",
        "token": "1",
        "id": service_id,
        "path": "/api/v1",
        "tls": "0",
    }
    tls = announce.service_info("enrichment", service_id, 8002, ["::1"], token=False, tls=True)
    assert tls.name.startswith("HA Ingestor enrichment 0c9e5f2a.")
    assert (tls.decoded_properties["token"], tls.decoded_properties["tls"]) == ("0", "1")


def adapter(name: str, *addresses: str) -> ifaddr.Adapter:
    ips = [
        ifaddr.IP(a, 64, name) if ":" not in a else ifaddr.IP((a, 0, 0), 64, name)
        for a in addresses
    ]
    return ifaddr.Adapter(name, name, ips)


ADAPTERS = [
    adapter("lo", "127.0.0.1", "::1"),
    adapter("eth0", "192.0.2.2", "fd00::2", "fe80::fc:ff:fe00:1"),
    adapter("wlan0", "169.254.3.4", "10.1.2.3"),
]


def test_all_interfaces_announce_the_addresses_others_can_reach() -> None:
    """The machine's interfaces are given: Home Assistant's test plugin replaces
    ifaddr's answer with one made-up eth0 for the whole session."""
    adapters = ADAPTERS
    v4, v6, both = IPVersion.V4Only, IPVersion.V6Only, IPVersion.All
    assert announce.machine_addresses(v4, adapters) == ["10.1.2.3", "192.0.2.2"]
    assert announce.machine_addresses(v6, adapters) == ["fd00::2"]
    assert announce.machine_addresses(both, adapters) == ["10.1.2.3", "192.0.2.2", "fd00::2"]
    # A machine with nothing but loopback still announces where it can be reached.
    assert announce.machine_addresses(v4, adapters[:1]) == ["127.0.0.1"]
    assert announce.machine_addresses(v6, adapters[:1]) == ["::1"]


def test_the_addresses_are_the_ones_listened_on() -> None:
    assert announce.announced_addresses("127.0.0.1") == ["127.0.0.1"]
    assert announce.announced_addresses("::1") == ["::1"]
    # asyncio binds "0.0.0.0" to IPv4, "::" to IPv6 only (V6ONLY), "" to both.
    assert announce.announced_addresses("0.0.0.0", ADAPTERS) == ["10.1.2.3", "192.0.2.2"]
    assert announce.announced_addresses("::", ADAPTERS) == ["fd00::2"]
    assert announce.announced_addresses("", ADAPTERS) == ["10.1.2.3", "192.0.2.2", "fd00::2"]
    with pytest.raises(OSError, match="no address of the kind --host '::' listens on"):
        announce.announced_addresses("::", [adapter("eth0", "192.0.2.2")])
    assert announce.zeroconf_interfaces("127.0.0.1", ["127.0.0.1"]) == (
        ["127.0.0.1"],
        IPVersion.V4Only,
    )
    assert announce.zeroconf_interfaces("::", []) == (
        announce.InterfaceChoice.All,
        IPVersion.V6Only,
    )


# -- a real browser on loopback ----------------------------------------------------------


class Browser:
    """A zeroconf browser on 127.0.0.1 that records what comes and goes."""

    def __init__(self) -> None:
        self.zeroconf = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        self.changes: list[tuple[str, ServiceStateChange]] = []
        self.changed = asyncio.Event()
        self.seen: set[str] = set()
        self.browser = AsyncServiceBrowser(
            self.zeroconf.zeroconf, announce.SERVICE_TYPE, handlers=[self._changed]
        )

    def _changed(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        self.seen.add(name)
        self.changes.append((name, state_change))
        self.changed.set()

    async def wait_for(self, name: str, change: ServiceStateChange) -> None:
        """Until ``name`` has had ``change`` (now or before)."""
        async with asyncio.timeout(WAIT_S):
            while (name, change) not in self.changes:
                self.changed.clear()
                await self.changed.wait()

    async def info(self, name: str) -> AsyncServiceInfo:
        info = AsyncServiceInfo(announce.SERVICE_TYPE, name)
        assert await info.async_request(self.zeroconf.zeroconf, 3000)
        return info

    async def close(self) -> None:
        await self.browser.async_cancel()
        await self.zeroconf.async_close()


@pytest.fixture
async def browser(socket_enabled: None) -> AsyncIterator[Browser]:
    found = Browser()
    yield found
    await found.close()


Serving = Callable[..., Any]


class Running:
    """A storage service the command's `serve` runs on 127.0.0.1 until `stop`."""

    def __init__(self, service: StorageService, port: int, task: asyncio.Task[None]) -> None:
        self.service, self.port, self._task = service, port, task
        self.stop_event = asyncio.Event()

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.wait_for(asyncio.shield(self._task), WAIT_S)


@pytest.fixture
async def run_storage(tmp_path: Path) -> AsyncIterator[Serving]:
    """``running = await run_storage(name, announce=..., **identity)``: storage on the
    SQLite file ``name``.db, up and answering health; stopped after the test at the latest."""
    started: list[Running] = []

    async def start(name: str, *, announce: bool, **identity: Any) -> Running:
        settings = StorageSettings(sqlite_path=str(tmp_path / f"{name}.db"))
        service = StorageService(settings, identity=IdentitySource("storage", **identity))
        port = free_port()
        stop = asyncio.Event()
        plan = [("storage", create_app(service, token=TOKEN), port)]
        task = asyncio.create_task(cli.serve(plan, "127.0.0.1", 5, stop, announce=announce))
        running = Running(service, port, task)
        running.stop_event = stop
        started.append(running)
        async with asyncio.timeout(WAIT_S), aiohttp.ClientSession() as client:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with client.get(f"http://127.0.0.1:{port}/api/v1/health") as answer:
                        if answer.status == 200:
                            return running
                assert not task.done(), "the service ended"
                await asyncio.sleep(0.05)

    yield start
    for running in reversed(started):
        await running.stop()


async def test_announced_found_and_withdrawn_on_stop(
    browser: Browser, run_storage: Serving
) -> None:
    running = await run_storage("a", announce=True)
    service_id = running.service.service_id
    name = announce.instance_name("storage", service_id)
    await browser.wait_for(name, ServiceStateChange.Added)
    info = await browser.info(name)
    assert info.port == running.port
    assert info.parsed_addresses() == ["127.0.0.1"]
    txt = info.decoded_properties
    assert txt == {
        "role": "storage",
        "api": "1",
        "token": "1",
        "id": service_id,
        "path": "/api/v1",
        "tls": "0",
    }
    # What Home Assistant does next: ask health at the announced place.
    url = f"http://{info.parsed_addresses()[0]}:{info.port}{txt['path']}/health"
    async with aiohttp.ClientSession() as client, client.get(url) as answer:
        body = await answer.json()
    assert (body["service_id"], body["role"], body["token_required"]) == (
        service_id,
        "storage",
        True,
    )
    await running.stop()
    await browser.wait_for(name, ServiceStateChange.Removed)


async def test_no_announce_announces_nothing(browser: Browser, run_storage: Serving) -> None:
    """Two services start together; only the announced one is ever seen."""
    quiet = await run_storage("quiet", announce=False)
    loud = await run_storage("loud", announce=True)
    loud_name = announce.instance_name("storage", loud.service.service_id)
    await browser.wait_for(loud_name, ServiceStateChange.Added)
    await asyncio.sleep(1.0)  # the quiet one, had it announced, went out at the same time
    # Other processes of this machine may announce too: only our two names count.
    assert loud_name in browser.seen
    assert announce.instance_name("storage", quiet.service.service_id) not in browser.seen


@pytest.mark.parametrize(
    ("argv", "environment", "announced"),
    [
        ([], {}, True),
        (["--no-announce"], {}, False),
        (["--no-announce", "false"], {}, True),
        ([], {"HA_INGESTOR_NO_ANNOUNCE": "1"}, False),
    ],
)
def test_no_announce_flag_and_variable(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], environment: dict[str, str], announced: bool
) -> None:
    monkeypatch.delenv("HA_INGESTOR_NO_ANNOUNCE", raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    args = cli.build_parser().parse_args(["storage", *argv, "--token", TOKEN])
    assert cli._server(args).announce is announced


async def test_a_failed_announcement_leaves_the_service_serving(
    browser: Browser, run_storage: Serving, caplog: pytest.LogCaptureFixture
) -> None:
    """A second service with the same id (a copied SQLite file, say) cannot take the
    name: one warning, and it serves on."""
    same = str(uuid.uuid4())
    first = await run_storage("first", announce=True, service_id=same)
    await browser.wait_for(
        announce.instance_name("storage", first.service.service_id), ServiceStateChange.Added
    )

    def warnings() -> list[logging.LogRecord]:
        return [
            record
            for record in caplog.records
            if record.name == announce.__name__ and record.levelno == logging.WARNING
        ]

    second = await run_storage("second", announce=True, service_id=same)
    async with asyncio.timeout(WAIT_S):
        while not warnings():
            await asyncio.sleep(0.05)
    (record,) = warnings()
    assert "cannot announce itself over mDNS/zeroconf (NonUniqueNameException" in record.message
    assert "another service announces the same id" in record.message
    assert "--no-announce" in record.message
    url = f"http://127.0.0.1:{second.port}/api/v1/health"
    async with aiohttp.ClientSession() as client, client.get(url) as answer:
        assert answer.status == 200


async def test_the_command_announces_both_of_a_stack_and_withdraws_on_sigterm(
    browser: Browser, tmp_path: Path
) -> None:
    """`ha-ingestor-services stack` as a process: storage's id from its SQLite file, the
    enrichment's from the state dir, both announced; SIGTERM withdraws both."""
    storage_port, enrichment_port = free_port(), free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(cli.ENV_PREFIX)}
    environment |= {"HA_INGESTOR_TOKEN": TOKEN, "HA_INGESTOR_STATE_DIR": str(tmp_path)}
    argv = ["stack", "--sqlite-path", str(tmp_path / "stack.db")]
    argv += ["--storage-port", str(storage_port), "--enrichment-port", str(enrichment_port)]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ha_ingestor_services", *argv, env=environment
    )
    try:
        ids = {}
        async with aiohttp.ClientSession() as client, asyncio.timeout(30):
            for role, port in (("storage", storage_port), ("enrichment", enrichment_port)):
                while True:
                    with contextlib.suppress(aiohttp.ClientError):
                        url = f"http://127.0.0.1:{port}/api/v1/health"
                        async with client.get(url) as answer:
                            ids[role] = (await answer.json())["service_id"]
                            break
                    await asyncio.sleep(0.1)
        assert ids["enrichment"] == (tmp_path / "enrichment.id").read_text().strip()
        names = {role: announce.instance_name(role, ids[role]) for role in ids}
        for role, name in names.items():
            await browser.wait_for(name, ServiceStateChange.Added)
            info = await browser.info(name)
            assert info.decoded_properties["role"] == role
            assert info.port == (storage_port if role == "storage" else enrichment_port)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        for name in names.values():
            await browser.wait_for(name, ServiceStateChange.Removed)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
