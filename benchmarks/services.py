"""Throughput of the companion services, each started by its own console script.

- storage on SQLite and on a real influxd (API v1): events/s through HTTP;
- the enrichment (warm weather cache, from a local stand-in for OpenWeatherMap) in front
  of storage on SQLite: events/s end to end;
- p99 per batch of 500 (the enrichment path: it includes the storage write) and the
  services' peak RSS;
- checks: the rows in each SQLite file and the points in influxd must equal the events
  sent (warm-up included); the run fails otherwise. They are in the JSON line too.

The services run as separate processes (``python -m ha_ingestor_services.cli``), as they
do for users; this process only posts pre-encoded batches, several at once, the way a
few Home Assistant instances (or one with a backlog) would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from benchmarks.events import state_changed
from benchmarks.influxd import Influxd, free_port, running_influxd
from custom_components.ha_ingestor.pipeline.envelope import (
    BATCH_PATH,
    HEALTH_PATH,
    EventValidator,
    batch_body,
)

TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
BATCH = 500
CONCURRENCY = 4
LOCATION = {"latitude": 52.37, "longitude": 4.89, "elevation": 2.0, "time_zone": "Europe/Amsterdam"}
TARGETS = {
    "storage_sqlite_per_s": 20_000,
    "storage_influxdb_v1_per_s": 10_000,
    "enrichment_per_s": 15_000,
}
WARM_UP = BATCH * 4  # events posted before each measurement
STORED_CHECKS = ("sqlite_rows", "influxdb_points", "enriched_rows")  # each = events sent


def batches(count: int, start: int, size: int = BATCH) -> list[bytes]:
    """Envelopes as the integration encodes them, ``size`` per request body."""
    validator = EventValidator(envelope_context={"instance_id": "bench-home", "location": LOCATION})
    payloads = [
        validator.encode(state_changed(index)).payload for index in range(start, start + count)
    ]
    return [batch_body(payloads[i : i + size]) for i in range(0, len(payloads), size)]


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0


@contextlib.contextmanager
def started(command: str, *args: str, folder: Path) -> Iterator[Service]:
    """``ha-ingestor-services COMMAND ARGS`` on a free port; stopped with SIGTERM after."""
    port = free_port()
    log = folder / f"{command}-{port}.log"
    env = {**os.environ, "HA_INGESTOR_TOKEN": TOKEN}
    argv = [sys.executable, "-m", "ha_ingestor_services.cli", command]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING", *args]
    # Measured alone: no mDNS announcement; the id file in the run's own folder.
    argv += ["--no-announce", "--state-dir", str(folder)]
    with log.open("wb") as output:
        process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, env=env)
    service = Service(process, f"http://127.0.0.1:{port}", log)
    try:
        yield service
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_healthy(
    session: aiohttp.ClientSession, service: Service, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(f"service exited at start:\n{service.log.read_text()}")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(service.url + HEALTH_PATH) as answer:
                if answer.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"service did not become healthy:\n{service.log.read_text()}")


async def drive(
    session: aiohttp.ClientSession, url: str, bodies: list[bytes], concurrency: int = CONCURRENCY
) -> tuple[float, list[float]]:
    """Post every body (``concurrency`` at a time); events/s and per-batch latencies (ms)."""
    queue = list(reversed(bodies))
    latencies: list[float] = []
    events = 0

    async def worker() -> None:
        nonlocal events
        while queue:
            body = queue.pop()
            started_at = time.perf_counter()
            async with session.post(url + BATCH_PATH, data=body, headers=AUTH) as answer:
                result = await answer.json()
                if answer.status != 200:
                    raise RuntimeError(f"{url} answered {answer.status}: {result}")
            latencies.append((time.perf_counter() - started_at) * 1000)
            statuses = {item["status"] for item in result["results"]}
            if statuses - {"stored"}:
                raise RuntimeError(f"{url} did not store every event: {statuses}")
            events += len(result["results"])

    started_at = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return events / (time.perf_counter() - started_at), latencies


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100, method="inclusive")[98]


async def measure(
    session: aiohttp.ClientSession, url: str, count: int, start: int
) -> tuple[float, list[float]]:
    """Warm up with `WARM_UP` events, then measure ``count`` events."""
    await drive(session, url, batches(WARM_UP, start))
    return await drive(session, url, batches(count, start + WARM_UP))


@contextlib.asynccontextmanager
async def weather_stand_in() -> AsyncIterator[tuple[str, list[int]]]:
    """A local stand-in for OpenWeatherMap's current-weather API; counts its calls."""
    calls = [0]

    async def current(_: web.Request) -> web.Response:
        calls[0] += 1
        return web.json_response(
            {
                "weather": [{"main": "Rain", "description": "light rain"}],
                "main": {"temp": 11.5, "humidity": 87, "pressure": 1008},
                "wind": {"speed": 4.1},
                "dt": int(time.time()),
            }
        )

    app = web.Application()
    app.router.add_get("/data/2.5/weather", current)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", calls
    finally:
        await runner.cleanup()


def sqlite_rows(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        row = db.execute("SELECT count(*) FROM events").fetchone()
    return int(row[0])


async def run(count: int, folder: Path) -> tuple[dict[str, float], dict[str, float]]:
    figures: dict[str, float] = {}
    checks: dict[str, float] = {}
    peak_rss: list[float] = []
    async with aiohttp.ClientSession() as session:
        database = folder / "storage.db"
        with started(
            "storage", "--backend", "sqlite", "--sqlite-path", str(database), folder=folder
        ) as storage:
            await wait_healthy(session, storage)
            figures["storage_sqlite_per_s"], latencies = await measure(
                session, storage.url, count, 0
            )
            figures["storage_sqlite_p99_batch_ms"] = p99(latencies)
            peak_rss.append(storage.peak_rss_mb())
        checks["sqlite_rows"] = sqlite_rows(database)
        # The file after the service stopped (its WAL checkpointed): disk per stored event.
        checks["sqlite_bytes_per_event"] = database.stat().st_size / max(1, checks["sqlite_rows"])

        with running_influxd() as influxd:
            figures["storage_influxdb_v1_per_s"], latencies = await _influx_round(
                session, influxd, count, folder, peak_rss
            )
            figures["storage_influxdb_v1_p99_batch_ms"] = p99(latencies)
            checks["influxdb_points"] = influxd.count("bench", "state_changed", "state")

        database = folder / "stack.db"
        async with weather_stand_in() as (weather_url, weather_calls):
            with (
                started(
                    "storage", "--backend", "sqlite", "--sqlite-path", str(database), folder=folder
                ) as storage,
                started(
                    "enrichment",
                    "--storage-url",
                    storage.url,
                    "--weather-provider",
                    "openweathermap",
                    "--openweathermap-api-key",
                    "bench",
                    "--openweathermap-url",
                    weather_url,
                    folder=folder,
                ) as enrichment,
            ):
                await wait_healthy(session, storage)
                await wait_healthy(session, enrichment)
                figures["enrichment_per_s"], latencies = await measure(
                    session, enrichment.url, count, 0
                )
                figures["p99_batch_ms"] = p99(latencies)
                peak_rss += [storage.peak_rss_mb(), enrichment.peak_rss_mb()]
            checks["weather_upstream_calls"] = weather_calls[0]
        checks["enriched_rows"] = sqlite_rows(database)
    figures["peak_rss_mb"] = max(peak_rss)
    return figures, checks


async def _influx_round(
    session: aiohttp.ClientSession,
    influxd: Influxd,
    count: int,
    folder: Path,
    peak_rss: list[float],
) -> tuple[float, list[float]]:
    args = (
        "--backend",
        "influxdb",
        "--influx-url",
        influxd.url,
        "--influx-api",
        "v1",
        "--influx-database",
        "bench",
    )
    with started("storage", *args, folder=folder) as storage:
        await wait_healthy(session, storage)
        result = await measure(session, storage.url, count, 0)
        peak_rss.append(storage.peak_rss_mb())
        return result


def failed_checks(checks: dict[str, float], count: int) -> list[str]:
    """The stored counts that differ from the events sent to that service."""
    sent = count + WARM_UP
    return [
        f"{name} {checks[name]:,.0f}, expected {sent:,}"
        for name in STORED_CHECKS
        if checks[name] != sent
    ]


def print_table(figures: dict[str, float], checks: dict[str, float], count: int) -> None:
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"{count:,} events per scenario after a warm-up, batches of {BATCH}, "
        f"{CONCURRENCY} requests at a time"
    )
    print(f"{'figure':<36}{'value':>14}  target")
    for name, value in figures.items():
        target = TARGETS.get(name)
        verdict = (
            "" if target is None else f">= {target:,} " + ("met" if value >= target else "MISSED")
        )
        print(f"{name:<36}{value:>14,.1f}  {verdict}")
    sent = count + WARM_UP
    for name, value in checks.items():
        if name in STORED_CHECKS:
            verdict = f"== {sent:,} sent " + ("met" if value == sent else "MISSED")
        else:
            verdict = "(check)"
        print(f"{name:<36}{value:>14,.0f}  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events", type=int, default=100_000, help="events per scenario (default 100,000)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-services-") as folder:
        figures, checks = asyncio.run(run(args.events, Path(folder)))
    print_table(figures, checks, args.events)
    print(json.dumps({name: round(value, 2) for name, value in (figures | checks).items()}))
    if failed := failed_checks(checks, args.events):
        sys.exit("stored counts differ from the events sent: " + "; ".join(failed))


if __name__ == "__main__":
    main()
