"""Time to resume delivery after a receiver outage, with and without health probes.

Events arrive at a steady 100/s and go through the forwarder to the benchmark sink (its
own process); the sink is stopped for an outage and started again on the same port.
Time to resume is from the sink listening again to the first event delivered after it.
With probes, the registry probes a service that is down every second or so and wakes
the forwarder when it answers (as the integration runs it); without, the forwarder
waits out its backoff and the breaker's open interval, which grow while the sink is
away. Each run also checks that no event was lost.

Through the services: the same with the real enrichment and storage (SQLite) in their
own processes, wired as the integration wires them (enrichment first, storage as the
fallback); storage is killed (SIGKILL) and started again on the same file and port.
Time to resume is from storage answering its health again to the first event
delivered after it; lost is what the storage's file lacks at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from custom_components.ha_ingestor.pipeline.endpoint_health import ServiceRegistry
from custom_components.ha_ingestor.pipeline.envelope import HEALTH_PATH, EventValidator
from custom_components.ha_ingestor.pipeline.forwarder import EventForwarder, Route
from custom_components.ha_ingestor.pipeline.http_client import ServiceHTTPClient
from custom_components.ha_ingestor.pipeline.outbox import Durability, Outbox

from .events import state_changed
from .influxd import free_port
from .sink import running_sink

TOKEN = "bench-recovery-token"
RATE = 100  # events per second
WARM_UP_S = 2.0
DEFAULT_OUTAGES_S = (10.0, 60.0)


class _Feed:
    """Appends numbered state changes to the outbox at `RATE` until stopped."""

    def __init__(self, outbox: Outbox[dict[str, Any]]) -> None:
        self.outbox = outbox
        self.sent = 0
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            await asyncio.sleep(max(0.0, start + self.sent / RATE - loop.time()))
            self.outbox.append(state_changed(self.sent))
            self.sent += 1

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def _seconds_to_first_delivery(forwarder: EventForwarder) -> float:
    back = time.monotonic()
    delivered = forwarder.metrics.get("delivered")
    while forwarder.metrics.get("delivered") == delivered:
        await asyncio.sleep(0.01)
    return time.monotonic() - back


async def resume_after(folder: Path, outage_s: float, *, probes: bool) -> dict[str, float]:
    """One outage; returns the seconds to resume and the events lost."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    name = f"recovery-{outage_s:g}-{'probes' if probes else 'backoff'}.db"
    outbox: Outbox[dict[str, Any]] = Outbox(
        folder / name, EventValidator().encode, durability=Durability.ALWAYS
    )
    await outbox.open()
    stored: list[int] = []  # what each sink process took, counted as it stopped

    def sink() -> contextlib.AbstractContextManager[str]:
        return running_sink(port, on_exit=lambda counts: stored.append(counts["unique"]))

    async with aiohttp.ClientSession() as session:
        registry = ServiceRegistry(session) if probes else None
        if registry is not None:
            registry.register_service("sink", [url])
        client = ServiceHTTPClient("sink", [url], session, registry=registry)
        forwarder = EventForwarder(outbox, Route("sink", client))
        if registry is not None:
            registry.add_listener(forwarder.on_availability)
        with contextlib.ExitStack() as sinks:
            # Started on a thread: it waits for the sink's "ready" line.
            await asyncio.to_thread(sinks.enter_context, sink())
            forwarder.start()
            if registry is not None:
                registry.start()
            feed = _Feed(outbox)
            await asyncio.sleep(WARM_UP_S)
            await asyncio.to_thread(sinks.close)  # the outage begins
            await asyncio.sleep(outage_s)
            await asyncio.to_thread(sinks.enter_context, sink())
            resumed_s = await _seconds_to_first_delivery(forwarder)
            await feed.stop()
            assert (await forwarder.flush(timeout=600)).done
            if registry is not None:
                await registry.stop()
            await forwarder.stop()
    await outbox.close()
    # Ids are unique per sink process; one resent across the outage counts twice, so
    # "lost" can only be understated by resends, which the receivers dedupe anyway.
    return {"resume_s": resumed_s, "lost": max(0, feed.sent - sum(stored))}


class _Service:
    """One companion service in its own process, started again on demand."""

    def __init__(self, argv: list[str], url: str, log: Path) -> None:
        self.argv = argv
        self.url = url
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=log)
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(self.url + HEALTH_PATH) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.argv[3]} did not start; see {self.log}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


async def resume_through_services(folder: Path, outage_s: float) -> dict[str, float]:
    storage_port, enrichment_port = free_port(), free_port()
    storage_url = f"http://127.0.0.1:{storage_port}"
    enrichment_url = f"http://127.0.0.1:{enrichment_port}"
    database = folder / f"recovery-services-{outage_s:g}.sqlite"
    python = [sys.executable, "-m", "ha_ingestor_services"]
    common = ["--token", TOKEN, "--log-level", "WARNING", "--no-announce"]
    common += ["--state-dir", str(folder)]
    storage = _Service(
        [*python, "storage", "--port", str(storage_port), "--sqlite-path", str(database), *common],
        storage_url,
        folder / "storage.log",
    )
    enrichment = _Service(
        [
            *python,
            "enrichment",
            "--port",
            str(enrichment_port),
            "--storage-url",
            storage_url,
            "--storage-token",
            TOKEN,
            *common,
        ],
        enrichment_url,
        folder / "enrichment.log",
    )
    outbox: Outbox[dict[str, Any]] = Outbox(
        folder / f"recovery-services-{outage_s:g}.db",
        EventValidator().encode,
        durability=Durability.ALWAYS,
    )
    await outbox.open()
    try:
        await storage.start()
        await enrichment.start()
        async with aiohttp.ClientSession() as session:
            registry = ServiceRegistry(session)
            clients = {}
            for name, url in (("enrichment", enrichment_url), ("storage", storage_url)):
                registry.register_service(name, [url])
                clients[name] = ServiceHTTPClient(
                    name, [url], session, token=TOKEN, registry=registry
                )
            forwarder = EventForwarder(
                outbox,
                Route("enrichment", clients["enrichment"]),
                Route("storage", clients["storage"]),
            )
            registry.add_listener(forwarder.on_availability)
            forwarder.start()
            registry.start()
            feed = _Feed(outbox)
            await asyncio.sleep(WARM_UP_S)
            storage.kill()
            await asyncio.sleep(outage_s)
            await storage.start()
            resumed_s = await _seconds_to_first_delivery(forwarder)
            await feed.stop()
            assert (await forwarder.flush(timeout=600)).done
            await registry.stop()
            await forwarder.stop()
    finally:
        enrichment.kill()
        storage.kill()
        await outbox.close()
    with contextlib.closing(sqlite3.connect(database)) as db:
        (stored,) = db.execute("SELECT COUNT(DISTINCT event_id) FROM events").fetchone()
    return {"resume_s": resumed_s, "lost": max(0, feed.sent - stored)}


async def bench_recovery(folder: Path, outages: tuple[float, ...]) -> dict[str, float]:
    figures: dict[str, float] = {}
    lost = 0.0
    for outage in outages:
        for probes in (True, False):
            result = await resume_after(folder, outage, probes=probes)
            key = "resume_after" if probes else "resume_without_probes_after"
            figures[f"{key}_{outage:g}s_outage_s"] = result["resume_s"]
            lost += result["lost"]
        result = await resume_through_services(folder, outage)
        figures[f"resume_through_services_after_{outage:g}s_outage_s"] = result["resume_s"]
        lost += result["lost"]
    figures["recovery_lost"] = lost
    return figures
