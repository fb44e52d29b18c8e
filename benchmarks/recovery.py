"""Time to resume delivery after a receiver outage, with and without health probes.

Events arrive at a steady 100/s and go through the forwarder to the benchmark sink (its
own process); the sink is stopped for an outage and started again on the same port.
Time to resume is from the sink listening again to the first event delivered after it.
With probes, the registry probes a service that is down every second or so and wakes
the forwarder when it answers (as the integration runs it); without, the forwarder
waits out its backoff and the breaker's open interval, which grow while the sink is
away. Each run also checks that no event was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import aiohttp

from custom_components.ha_ingestor.pipeline.envelope import EventValidator
from custom_components.ha_ingestor.pipeline.forwarder import EventForwarder, Route
from custom_components.ha_ingestor.pipeline.http_client import ServiceHTTPClient
from custom_components.ha_ingestor.pipeline.message_queue import Durability, Outbox
from custom_components.ha_ingestor.pipeline.service_discovery import ServiceRegistry

from .events import state_changed
from .influxd import free_port
from .sink import running_sink

RATE = 100  # events per second
WARM_UP_S = 2.0
DEFAULT_OUTAGES_S = (10.0, 60.0)


async def resume_after(folder: Path, outage_s: float, *, probes: bool) -> dict[str, float]:
    """One outage; returns the seconds to resume and the events lost."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    name = f"recovery-{outage_s:g}-{'probes' if probes else 'backoff'}.db"
    outbox: Outbox[dict[str, Any]] = Outbox(
        folder / name, EventValidator().encode, durability=Durability.ALWAYS
    )
    await outbox.open()
    sent = 0
    stored: list[int] = []  # what each sink process took, counted as it stopped
    loop = asyncio.get_running_loop()

    def sink() -> contextlib.AbstractContextManager[str]:
        return running_sink(port, on_exit=lambda counts: stored.append(counts["unique"]))

    async def feed() -> None:
        nonlocal sent
        start = loop.time()
        while True:
            await asyncio.sleep(max(0.0, start + sent / RATE - loop.time()))
            outbox.append(state_changed(sent))
            sent += 1

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
            feeding = loop.create_task(feed())
            await asyncio.sleep(WARM_UP_S)
            await asyncio.to_thread(sinks.close)  # the outage begins
            await asyncio.sleep(outage_s)
            await asyncio.to_thread(sinks.enter_context, sink())
            back = time.monotonic()
            delivered = forwarder.metrics.get("delivered")
            while forwarder.metrics.get("delivered") == delivered:
                await asyncio.sleep(0.01)
            resumed_s = time.monotonic() - back
            feeding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeding
            assert (await forwarder.flush(timeout=600)).done
            if registry is not None:
                await registry.stop()
            await forwarder.stop()
    await outbox.close()
    # Ids are unique per sink process; one resent across the outage counts twice, so
    # "lost" can only be understated by resends, which the receivers dedupe anyway.
    return {"resume_s": resumed_s, "lost": max(0, sent - sum(stored))}


async def bench_recovery(folder: Path, outages: tuple[float, ...]) -> dict[str, float]:
    figures: dict[str, float] = {}
    lost = 0.0
    for outage in outages:
        for probes in (True, False):
            result = await resume_after(folder, outage, probes=probes)
            key = "resume_after" if probes else "resume_without_probes_after"
            figures[f"{key}_{outage:g}s_outage_s"] = result["resume_s"]
            lost += result["lost"]
    figures["recovery_lost"] = lost
    return figures
