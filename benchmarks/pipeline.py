"""scripts/bench pipeline: the delivery core's figures.

- outbox_append_per_s: raw ~1 KB state_changed events appended from the event loop,
  encoded and committed (durability "always"), until the last commit; also with
  attributes padded to ~1 KB envelopes (outbox_append_1kb_envelope_per_s).
- outbox_drain_per_s: take(500) + ack until the outbox is empty.
- forward_events_per_s: EventForwarder, batches of 500, to a sink in another process
  that parses every batch and acks every event.
- p99_enqueue_to_ack_ms: a steady 200 events/s through the forwarder to the sink.
- backlog_1m_rss_mb: peak RSS of a fresh process while 1,000,000 events sit in the
  outbox and then drain to the sink.
- lost: events sent through the forwarder (forward, latency and backlog) that the sink
  did not receive, counted at the sink (distinct event ids), not from the forwarder's
  own metrics; the run fails when it is not 0.
- resume_after_<N>s_outage_s: seconds from the sink's return after an outage of N s to
  the first event delivered, with health probes as the integration runs them, and
  without them (the backoff alone) for comparison (benchmarks/recovery.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from custom_components.ha_ingestor.pipeline.envelope import EventValidator
from custom_components.ha_ingestor.pipeline.forwarder import (
    EventForwarder,
    ForwarderConfig,
    Route,
)
from custom_components.ha_ingestor.pipeline.http_client import ServiceHTTPClient
from custom_components.ha_ingestor.pipeline.outbox import Durability, Outbox

from .events import state_changed, stream
from .influxd import free_port
from .recovery import DEFAULT_OUTAGES_S, bench_recovery
from .report import print_table
from .sink import distinct_ids, running_sink

APPEND_EVENTS = 100_000
FORWARD_EVENTS = 100_000
BACKLOG_EVENTS = 1_000_000
LATENCY_RATE = 200
LATENCY_SECONDS = 10.0


def _outbox(path: Path) -> Outbox[dict[str, Any]]:
    return Outbox(path, EventValidator().encode, durability=Durability.ALWAYS)


async def _at_sink(url: str) -> int:
    """Distinct events the sink has received so far (read on a thread: blocking I/O)."""
    return await asyncio.to_thread(distinct_ids, url)


async def _until_committed(outbox: Outbox[Any], count: int) -> None:
    """Wait until everything appended so far is committed (``count`` events pending)."""
    pending = await outbox.sync()
    assert pending == count, (pending, count)


async def bench_append_1kb_envelopes(folder: Path) -> dict[str, float]:
    """The same with attributes padded so each envelope is ~1 KB."""
    events = [state_changed(i, padding=570) for i in range(APPEND_EVENTS)]
    outbox = _outbox(folder / "append-1kb.db")
    await outbox.open()
    try:
        start = time.perf_counter()
        outbox.append_many(events)
        await _until_committed(outbox, APPEND_EVENTS)
        elapsed = time.perf_counter() - start
        size = len((await outbox.take(1))[0].payload)
    finally:
        await outbox.close()
    return {"outbox_append_1kb_envelope_per_s": APPEND_EVENTS / elapsed, "envelope_bytes": size}


async def bench_append_and_drain(folder: Path) -> dict[str, float]:
    events = [state_changed(i) for i in range(APPEND_EVENTS)]
    outbox = _outbox(folder / "append.db")
    await outbox.open()
    try:
        start = time.perf_counter()
        for event in events:
            outbox.append(event)
        await _until_committed(outbox, APPEND_EVENTS)
        append_s = time.perf_counter() - start

        start = time.perf_counter()
        drained = 0
        while records := await outbox.take(500):
            await outbox.ack([record.seq for record in records])
            drained += len(records)
        drain_s = time.perf_counter() - start
        assert drained == APPEND_EVENTS, drained
    finally:
        await outbox.close()
    return {
        "outbox_append_per_s": APPEND_EVENTS / append_s,
        "outbox_drain_per_s": APPEND_EVENTS / drain_s,
    }


@contextlib.asynccontextmanager
async def _forwarding(
    outbox: Outbox[Any], url: str, config: ForwarderConfig
) -> AsyncIterator[EventForwarder]:
    async with aiohttp.ClientSession() as session:
        client = ServiceHTTPClient("sink", [url], session)
        forwarder = EventForwarder(outbox, Route("sink", client), config=config)
        forwarder.start()
        try:
            yield forwarder
        finally:
            await forwarder.stop()


async def bench_forward(folder: Path, url: str) -> dict[str, float]:
    outbox = _outbox(folder / "forward.db")
    await outbox.open()
    try:
        outbox.append_many(stream(FORWARD_EVENTS))
        await _until_committed(outbox, FORWARD_EVENTS)
        before = await _at_sink(url)
        start = time.perf_counter()
        async with _forwarding(outbox, url, ForwarderConfig(batch_size=500)) as forwarder:
            done = (await forwarder.flush(timeout=300)).done
            elapsed = time.perf_counter() - start
        delivered = await _at_sink(url) - before
    finally:
        await outbox.close()
    print(f"forward: sink received {delivered:,} of {FORWARD_EVENTS:,} (flush done: {done})")
    return {
        "forward_events_per_s": FORWARD_EVENTS / elapsed,
        "forward_lost": FORWARD_EVENTS - delivered,
    }


async def bench_latency(folder: Path, url: str) -> dict[str, float]:
    outbox = _outbox(folder / "latency.db")
    await outbox.open()
    total = int(LATENCY_RATE * LATENCY_SECONDS)
    before = await _at_sink(url)
    try:
        async with _forwarding(outbox, url, ForwarderConfig()) as forwarder:
            loop = asyncio.get_running_loop()
            start = loop.time()
            for index in range(total):
                # A steady rate: each event at its own moment, not in bursts.
                await asyncio.sleep(max(0.0, start + index / LATENCY_RATE - loop.time()))
                outbox.append(state_changed(index))
            done = (await forwarder.flush(timeout=60)).done
            p50, p95, p99 = forwarder.metrics.latency.percentiles(50, 95, 99)
        delivered = await _at_sink(url) - before
    finally:
        await outbox.close()
    print(f"latency: sink received {delivered:,} of {total:,} (flush done: {done})")
    return {
        "p50_enqueue_to_ack_ms": p50 or 0.0,
        "p95_enqueue_to_ack_ms": p95 or 0.0,
        "p99_enqueue_to_ack_ms": p99 or 0.0,
        "latency_lost": total - delivered,
    }


async def backlog_child(folder: Path, url: str) -> None:
    """In a fresh process: fill the outbox with a million events, then drain it."""
    outbox = _outbox(folder / "backlog.db")
    await outbox.open()
    try:
        chunk = 2_000  # events arrive a few at a time; the outbox, not this loop, holds them
        for start in range(0, BACKLOG_EVENTS, chunk):
            outbox.append_many(stream(chunk, start))
            await _until_committed(outbox, start + chunk)
        filled_rss = _peak_rss_mb()
        before = await _at_sink(url)
        start_time = time.perf_counter()
        async with _forwarding(outbox, url, ForwarderConfig(batch_size=500)) as forwarder:
            await forwarder.flush(timeout=900)
        drain_s = time.perf_counter() - start_time
        delivered = await _at_sink(url) - before
    finally:
        await outbox.close()
    print(
        json.dumps(
            {
                "backlog_filled_rss_mb": filled_rss,
                "backlog_1m_rss_mb": _peak_rss_mb(),
                "backlog_drain_per_s": BACKLOG_EVENTS / drain_s,
                "backlog_lost": BACKLOG_EVENTS - delivered,
            }
        )
    )


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not getrusage: its maxrss is inherited across
    fork+exec, so a child of a big parent would report the parent's peak."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc/self/status")


def bench_backlog(folder: Path, url: str) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.pipeline", "--backlog-child", str(folder), url],
        check=True,
        capture_output=True,
        text=True,
        timeout=1800,
    ).stdout
    figures: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return figures


TARGETS = {
    "outbox_append_per_s": (">=", 50_000),
    "forward_events_per_s": (">=", 30_000),
    "p99_enqueue_to_ack_ms": ("<=", 300),  # the default linger is 200 ms (CPU per event)
    "backlog_1m_rss_mb": ("<=", 150),
    "lost": ("<=", 0),
    **{f"resume_after_{outage:g}s_outage_s": ("<=", 5) for outage in DEFAULT_OUTAGES_S},
    "recovery_lost": ("<=", 0),
}


async def run(skip_backlog: bool, outages: tuple[float, ...]) -> dict[str, float]:
    figures: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp,
        running_sink(free_port()) as url,
    ):
        folder = Path(tmp)
        figures |= await bench_append_and_drain(folder)
        figures |= await bench_append_1kb_envelopes(folder)
        figures |= await bench_forward(folder, url)
        figures |= await bench_latency(folder, url)
        if not skip_backlog:
            figures |= bench_backlog(folder, url)
        # One figure for what the sink lacks of all the forwarder scenarios sent.
        figures["lost"] = sum(figures.pop(name, 0.0) for name in _LOST_PER_SCENARIO)
        if outages:
            figures |= await bench_recovery(folder, outages)
    return figures


_LOST_PER_SCENARIO = ("forward_lost", "latency_lost", "backlog_lost")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-backlog", action="store_true", help="leave out the 1M backlog")
    parser.add_argument(
        "--outages",
        default=",".join(f"{outage:g}" for outage in DEFAULT_OUTAGES_S),
        help="receiver outages to resume from, in seconds, comma-separated ('' for none)",
    )
    parser.add_argument(
        "--backlog-child", nargs=2, metavar=("FOLDER", "URL"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.backlog_child:
        asyncio.run(backlog_child(Path(args.backlog_child[0]), args.backlog_child[1]))
        return
    outages = tuple(float(value) for value in args.outages.split(",") if value)
    figures = asyncio.run(run(args.skip_backlog, outages))
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"machine: {machine}, Python {platform.python_version()}")
    print_table(figures, TARGETS)
    print(json.dumps({name: round(value, 2) for name, value in figures.items()}))
    if figures["lost"] or figures.get("recovery_lost"):
        sys.exit(f"events lost: {figures['lost']:g} (recovery {figures.get('recovery_lost', 0):g})")


if __name__ == "__main__":
    main()
