"""The chaos test's processes: influxd that can go down and up, the fault proxy, the demo's
stack on InfluxDB behind that proxy, and a load of numbered state changes.

`ChaosDemo` is `scripts.demolib.stack.Demo` with storage on influxd (API v1, its own
database), the config entry reaching both services through `tests.e2e.fault_proxy`,
and kill -9 for every process. `Load` posts increasing values to a few entities through
Home Assistant's REST API, one sequential sender per entity (so each entity's values
change in order), and notes when each value was answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

import aiohttp
import orjson

from scripts.demolib.ha_config import REPO, entry_data_and_options, seed_config_entry
from scripts.demolib.ports import HOST, free_port
from scripts.demolib.services import ServiceProcess
from scripts.demolib.stack import BIN, Demo


class FaultProxy:
    """`tests.e2e.fault_proxy` in its own process, driven through its stdin."""

    def __init__(self, upstreams: dict[str, str]) -> None:
        """``upstreams``: name → upstream URL; `urls` maps each name to its proxy URL."""
        self.urls: dict[str, str] = {}
        argv = [sys.executable, "-m", "tests.e2e.fault_proxy"]
        for name, upstream in upstreams.items():
            port = free_port()
            self.urls[name] = f"http://{HOST}:{port}"
            argv.append(f"{port}={upstream}")
        self.argv = argv
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO
        )
        if self._line() != "ready":
            raise RuntimeError("the fault proxy did not start")

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        if self.process is None or self.process.stdin is None or self.process.stdout is None:
            raise RuntimeError("the fault proxy is not running")
        return self.process.stdin, self.process.stdout

    def _line(self) -> str:
        return self._pipes()[1].readline().strip()

    def _ask(self, command: str) -> str:
        stdin, _ = self._pipes()
        stdin.write(command + "\n")
        stdin.flush()
        return self._line()

    def fault(self, kind: str, seconds: float, arg: float = 0.0) -> None:
        answer = self._ask(f"fault {kind} {seconds} {arg}")
        if answer != "ok":
            raise RuntimeError(f"the fault proxy answered {answer!r}")

    def stats(self) -> dict[str, int]:
        counts: dict[str, int] = orjson.loads(self._ask("stats"))
        return counts

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()  # the proxy ends when its stdin closes
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None


@dataclass
class ChaosDemo(Demo):
    """The demo's stack with storage on influxd and the entry pointing at the proxy."""

    influx_url: str = ""
    influx_database: str = "chaos"
    entry_storage_url: str = ""
    entry_enrichment_url: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.seed_entry = False  # seeded in `prepare`, with the proxy's URLs
        self.storage = ServiceProcess(
            "storage",
            [
                str(BIN / "ha-ingestor-services"),
                "storage",
                *("--host", HOST, "--port", str(self.ports.storage)),
                *("--backend", "influxdb", "--influx-api", "v1"),
                *("--influx-url", self.influx_url, "--influx-database", self.influx_database),
                *("--state-dir", str(self.workdir / "state")),
            ],
            self.ports.storage,
            self.logs_dir / "storage.log",
        )

    def prepare(self, *, keep: bool = False) -> None:
        super().prepare(keep=keep)
        data, options = entry_data_and_options(
            self.entry_storage_url, self.entry_enrichment_url, self.token
        )
        self.entry_id = seed_config_entry(self.ha_dir / ".storage", data, options)

    def start_enrichment(self) -> None:
        self.enrichment.start(self._env(), REPO, self._remember)
        self.wait_healthy(self.enrichment_url, 30.0)

    def kill_service(self, service: ServiceProcess) -> None:
        """kill -9; the process is reaped and its log closed."""
        assert service.child is not None
        os.kill(service.child.pid, signal.SIGKILL)
        service.child.process.wait()
        service.stop()

    def kill_hass(self) -> float:
        """kill -9; the wall time right after the signal went (what Home Assistant
        answered until then it answered before it died)."""
        assert self.hass is not None
        os.kill(self.hass.pid, signal.SIGKILL)
        killed = time.time()
        self.hass.process.wait()
        self.hass.log_file.close()
        self.hass_exit_code, self.hass, self.session = self.hass.process.returncode, None, None
        return killed

    def wait_entry_loaded(self, timeout: float = 60.0) -> None:
        """Until the HA Ingestor entry is loaded: its listener then captures every change."""
        assert self.session is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, entries = self.session.get("/api/config/config_entries/entry")
            if status == 200 and any(
                entry.get("entry_id") == self.entry_id and entry.get("state") == "loaded"
                for entry in entries
            ):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the HA Ingestor entry was not loaded within {timeout:.0f} s")


@dataclass
class Sent:
    """One value posted to an entity: when the post began and when it was answered."""

    value: int
    began: float
    answered: float
    certain: bool  # answered 200/201; False: the connection died mid-request


@dataclass
class Load:
    """Increasing values posted to ``entities`` by one sender each, in a thread, at about
    ``rate`` per second in all; none while ``paused`` is set."""

    ha_url: str
    entities: list[str]
    rate: float
    token: str = ""
    sent: dict[str, list[Sent]] = field(default_factory=dict)
    errors: int = 0
    paused: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def count(self) -> int:
        """State changes Home Assistant accepted (answered 200/201)."""
        return sum(item.certain for values in self.sent.values() for item in values)

    def start(self) -> None:
        self.sent = {entity: [] for entity in self.entities}
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=20)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(*(self._sender(session, entity) for entity in self.entities))

    async def _sender(self, session: aiohttp.ClientSession, entity: str) -> None:
        value, attributes = 1, {"unit_of_measurement": "W", "friendly_name": entity}
        url = f"{self.ha_url}/api/states/{entity}"
        loop = asyncio.get_running_loop()
        interval, next_at = len(self.entities) / self.rate, loop.time()
        while not self._stop.is_set():
            if self.paused.is_set():
                await asyncio.sleep(0.05)
                next_at = loop.time()
                continue
            # Paced, without catching up in a rush after a stall.
            next_at = max(next_at + interval, loop.time() - interval)
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            began = time.time()
            headers = {"Authorization": f"Bearer {self.token}"}
            body: dict[str, Any] = {"state": str(value), "attributes": attributes}
            try:
                async with session.post(url, json=body, headers=headers) as answer:
                    await answer.read()
                    status = answer.status
            except aiohttp.ClientConnectorError:
                await asyncio.sleep(0.1)  # Home Assistant is away: nothing reached it
                continue
            except (aiohttp.ClientError, TimeoutError):
                # Sent, no answer: the change may or may not have happened. Never posted
                # again (a later Home Assistant would make it a second change).
                self.sent[entity].append(Sent(value, began, time.time(), certain=False))
                self.errors += 1
                value += 1
                await asyncio.sleep(0.1)
                continue
            if status in (200, 201):
                self.sent[entity].append(Sent(value, began, time.time(), certain=True))
                value += 1
            else:  # 401 with a token from before a restart, 5xx while starting: again
                self.errors += 1
                await asyncio.sleep(0.1)
