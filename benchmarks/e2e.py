"""scripts/bench e2e: the whole chain into InfluxDB, next to Home Assistant's influxdb integration.

Two scenarios on the same state-change load, each in a fresh Home Assistant core (the
test harness's) in its own process, interleaved over ``--rounds`` rounds:

- ``influxdb``: Home Assistant's own ``influxdb`` integration (API v1, its defaults)
  writing to influxd;
- ``ha_ingestor``: HA Ingestor with its defaults → the enrichment service → the storage
  service (``--backend influxdb``, API v1) → the same influxd, each service a process.

Both write through `benchmarks.influx_tap`, a proxy in front of influxd that reads
each point's own timestamp (the state change's time) when the point arrives: the same
instrument for both. Per scenario and round:

- steady: 100 state changes/s for ``--steady-seconds``; latency from state change to
  arrival at influxd, p50 / p99;
- throughput: ``--events`` state changes as fast as Home Assistant's loop takes them;
  end-to-end points/s from the first state change until the last point has arrived,
  the rate once under way (from the arrival of the first 25 % of the points to 90 %),
  and the state-change rate the loop sustained meanwhile; ``lost`` is what never
  arrived (counted in influxd itself, which keeps one point per series and time);
  the CPU time each process spent over this phase, per state change (``/proc``).

After the rounds, ``--rounds`` times: the same count posted straight into a fresh
enrichment → storage chain, in batches of the integration's size, one at a time as the
integration sends them, with no Home Assistant: ``services_alone_per_s``, what that
chain carries by itself.

``--linger-ms MS`` sets HA Ingestor's Linger time option (the README's lowest-latency
setting is 5 ms), ``--batch-size N`` its Batch size option. ``lost`` is counted once
influxd's count has settled (equal to what was fired, or unchanged for 5 s), so points
still on their way are not counted lost. ``--plot PNG`` adds one more run of each
scenario at 100/s for 60 s with influxd away for 20 s from the 20th second (the tap
refuses connections, as a stopped influxd would), and draws each point's latency
against its state change's time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from homeassistant import loader
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_test_home_assistant,
)

import custom_components.ha_ingestor  # noqa: F401 - makes the integration importable
from custom_components.ha_ingestor.const import (
    CONF_API_TOKEN,
    CONF_BATCH_SIZE,
    CONF_ENRICHMENT_URL,
    CONF_LINGER_MS,
    CONF_STORAGE_URL,
    CONF_VERIFY_SSL,
    DEFAULT_BATCH_SIZE,
    DOMAIN,
)
from custom_components.ha_ingestor.pipeline.envelope import HEALTH_PATH

from .ha import setup_influxdb
from .influxd import Influxd, free_port, influxd_process
from .report import print_table
from .services import TOKEN, batches, drive

PIDS_VARIABLE = "BENCH_E2E_PIDS"
EVENTS = 20_000
STEADY_S = 20.0
RATE = 100.0
ATTRIBUTES = {"unit_of_measurement": "°C", "friendly_name": "Bench temperature"}
ENTITIES = 50
TARGETS = {
    "throughput_ratio_vs_influxdb": (">=", 1.0),
    "lost": ("<=", 0),
    "p99_ms_at_100_per_s": ("<=", 300),
}


@contextlib.contextmanager
def _child(argv: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        yield process
    finally:
        with contextlib.suppress(Exception):
            process.terminate()
            process.wait(timeout=15)
        if process.poll() is None:
            process.kill()


@contextlib.contextmanager
def running_tap(influxd: Influxd) -> Iterator[tuple[str, int]]:
    """The tap's URL and process id."""
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.influx_tap", str(port), influxd.url]
    with _child(argv) as tap:
        assert tap.stdout is not None
        if tap.stdout.readline().strip() != "ready":
            raise RuntimeError("the tap did not start")
        yield f"http://127.0.0.1:{port}", tap.pid


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    return {name: _cpu_seconds(pid) for name, pid in pids.items()}


def _wait_healthy(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url + HEALTH_PATH, timeout=2):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer its health check")


def _service_env(state_dir: str) -> dict[str, str]:
    return {
        "HA_INGESTOR_TOKEN": TOKEN,
        "HA_INGESTOR_NO_ANNOUNCE": "1",
        "HA_INGESTOR_STATE_DIR": state_dir,
    }


@contextlib.contextmanager
def running_services(tap: str, database: str) -> Iterator[tuple[str, str, dict[str, int]]]:
    """Storage on InfluxDB (through the tap) and the enrichment in front of it: their
    URLs and process ids."""
    program = str(Path(sys.executable).parent / "ha-ingestor-services")
    storage_port, enrichment_port = free_port(), free_port()
    storage = f"http://127.0.0.1:{storage_port}"
    enrichment = f"http://127.0.0.1:{enrichment_port}"
    storage_argv = [program, "storage", "--port", str(storage_port), "--backend", "influxdb"]
    storage_argv += ["--influx-url", tap, "--influx-database", database]
    enrichment_argv = [program, "enrichment", "--port", str(enrichment_port)]
    enrichment_argv += ["--storage-url", storage]
    # Measured alone: no mDNS announcement; the id files in a folder of the run's own.
    with tempfile.TemporaryDirectory(prefix="bench-e2e-state-") as state:
        env = _service_env(state)
        with _child(storage_argv, env) as storer, _child(enrichment_argv, env) as enricher:
            _wait_healthy(storage)
            _wait_healthy(enrichment)
            yield enrichment, storage, {"enrichment": enricher.pid, "storage": storer.pid}


def _tap_points(tap: str, database: str, since: float) -> list[list[float]]:
    url = f"{tap}/tap/points?db={database}&since={since}"
    with urllib.request.urlopen(url, timeout=30) as answer:
        rows: list[list[float]] = json.loads(answer.read())
        return rows


def _tap_count(tap: str, database: str) -> int:
    with urllib.request.urlopen(f"{tap}/tap/count?db={database}", timeout=30) as answer:
        count: int = json.loads(answer.read())["count"]
        return count


def _outage(tap: str, seconds: float) -> None:
    request = urllib.request.Request(f"{tap}/tap/outage?seconds={seconds}", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def _settled(influxd: Influxd, database: str, fired: int, quiet_s: float = 5.0) -> int:
    """`_stored` once it equals ``fired`` or has not changed for ``quiet_s``."""
    stored, since = _stored(influxd, database), time.monotonic()
    while stored < fired and time.monotonic() - since < quiet_s:
        time.sleep(0.5)
        now = _stored(influxd, database)
        if now != stored:
            stored, since = now, time.monotonic()
    return stored


def _stored(influxd: Influxd, database: str) -> int:
    """Points in influxd (one per series and time): what was not lost."""
    result = influxd.query(database, "SELECT count(*) FROM /.*/")
    try:
        series = result["results"][0]["series"]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        return 0
    return sum(max(v for v in row["values"][0][1:] if v is not None) for row in series)


async def _fire(hass: Any, count: int, first: int, rate: float | None) -> float:
    """``count`` state changes (at ``rate`` per second, or as fast as the loop takes them,
    yielding every 500); returns the seconds it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for index in range(first, first + count):
        if rate is not None:
            await asyncio.sleep(max(0.0, start + (index - first) / rate - loop.time()))
        elif index % 500 == 0:
            await asyncio.sleep(0)
        hass.states.async_set(f"sensor.e2e_{index % ENTITIES}", str(index), ATTRIBUTES)
    await hass.async_block_till_done()
    return loop.time() - start


async def _arrived(
    tap: str, database: str, since: float, count: int, stall: float
) -> list[list[float]]:
    """Poll the tap until ``count`` points arrived since ``since`` or nothing moved for
    ``stall`` seconds; the points. Polled by count, read once: reading every point on
    each poll cost more CPU than either writer (py-spy)."""
    before = await asyncio.to_thread(_tap_count, tap, database)
    before -= len(await asyncio.to_thread(_tap_points, tap, database, since))
    last, moved = -1, time.monotonic()
    while True:
        arrived = await asyncio.to_thread(_tap_count, tap, database) - before
        if arrived >= count or time.monotonic() - moved > stall:
            return await asyncio.to_thread(_tap_points, tap, database, since)
        if arrived != last:
            last, moved = arrived, time.monotonic()
        await asyncio.sleep(0.1)


def _steady_rate(arrivals: list[float]) -> float:
    """Points/s once under way: between the arrival of the first 25 % and of 90 %."""
    first, last = len(arrivals) // 4, int(len(arrivals) * 0.9)
    if last <= first or arrivals[last] <= arrivals[first]:
        return float("nan")
    return (last - first) / (arrivals[last] - arrivals[first])


async def _chain(enrichment: str, args: Any) -> float:
    """Events/s through enrichment → storage → influxd alone: the throughput phase's
    count in batches of the integration's size, posted one at a time as the integration
    does (no Home Assistant; after a warm-up of 4 batches)."""
    size = args.batch_size or DEFAULT_BATCH_SIZE
    first = int(time.time() * 1000) % 10**9  # event times of their own in this database
    bodies = batches(size * 4 + args.events, first, size)
    async with aiohttp.ClientSession() as session:
        await drive(session, enrichment, bodies[:4], concurrency=1)
        per_s, _ = await drive(session, enrichment, bodies[4:], concurrency=1)
    return per_s


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


async def scenario(kind: str, tap: str, database: str, mode: str, args: Any) -> dict[str, Any]:
    tapped = Influxd(tap, int(tap.rsplit(":", 1)[1]))  # influxd, through the tap
    # The processes whose CPU time is counted: this one (Home Assistant), influxd and the
    # tap (their ids come from the parent), the services.
    pids = {"home_assistant": os.getpid(), **json.loads(os.environ.get(PIDS_VARIABLE, "{}"))}
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as config_dir:
        async with async_test_home_assistant(config_dir=config_dir) as hass:
            hass.data.pop(loader.DATA_CUSTOM_COMPONENTS)
            with contextlib.ExitStack() as stack:
                if kind == "influxdb":
                    await setup_influxdb(hass, tapped, database)
                else:
                    enrichment, storage, services = stack.enter_context(
                        running_services(tap, database)
                    )
                    pids.update(services)
                    await _setup_ha_ingestor(hass, enrichment, storage, args)
                await hass.async_block_till_done()
                if mode == "outage":
                    figures = await _outage_run(hass, tap, database)
                else:
                    figures = await _measure(hass, tap, database, args, pids)
                figures["stored"] = await asyncio.to_thread(
                    _settled, tapped, database, figures["fired"]
                )
                for entry in hass.config_entries.async_entries():
                    await hass.config_entries.async_unload(entry.entry_id)
            await hass.async_stop(force=True)
    return figures


async def _setup_ha_ingestor(hass: Any, enrichment: str, storage: str, args: Any) -> None:
    http = {"server_host": ["127.0.0.1"], "server_port": free_port()}
    assert await async_setup_component(hass, "http", {"http": http})
    data = {
        CONF_STORAGE_URL: storage,
        CONF_ENRICHMENT_URL: enrichment,
        CONF_API_TOKEN: TOKEN,
        CONF_VERIFY_SSL: True,
    }
    options: dict[str, int] = {}
    if args.linger_ms is not None:
        options[CONF_LINGER_MS] = args.linger_ms
    if args.batch_size is not None:
        options[CONF_BATCH_SIZE] = args.batch_size
    entry = MockConfigEntry(domain=DOMAIN, data=data, options=options)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)


async def _measure(
    hass: Any, tap: str, database: str, args: Any, pids: dict[str, int]
) -> dict[str, Any]:
    steady = int(RATE * args.steady_seconds)
    since = time.time()
    await _fire(hass, steady, 0, RATE)
    rows = await _arrived(tap, database, since, steady, stall=10.0)
    latencies = [row[1] * 1000 for row in rows]
    await asyncio.sleep(2.0)
    since = time.time()
    started = time.perf_counter()
    cpu_before = _cpu(pids)
    fired_in = await _fire(hass, args.events, steady, None)
    rows = await _arrived(tap, database, since, args.events, stall=15.0)
    cpu_after = _cpu(pids)
    took = (max(row[0] for row in rows) - since) if rows else float("nan")
    arrivals = sorted(row[0] for row in rows)
    cpu_us = {name: (cpu_after[name] - cpu_before[name]) * 1e6 / args.events for name in pids}
    return {
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
        "e2e_per_s": len(rows) / took if rows else 0.0,
        "steady_per_s": _steady_rate(arrivals),
        "loop_per_s": args.events / fired_in,
        "fired": steady + args.events,
        "fire_s": time.perf_counter() - started,
        "cpu_us_per_event": cpu_us,
    }


async def _outage_run(hass: Any, tap: str, database: str) -> dict[str, Any]:
    """100/s for 60 s with influxd away from the 20th to the 40th second."""
    count = int(RATE * 60)
    since = time.time()
    firing = asyncio.ensure_future(_fire(hass, count, 0, RATE))
    await asyncio.sleep(20.0)
    await asyncio.to_thread(_outage, tap, 20.0)
    await firing
    rows = await _arrived(tap, database, since, count, stall=60.0)
    points = sorted((row[0] - row[1] - since, row[1]) for row in rows)
    return {"points": points, "fired": count}


def _in_subprocess(
    kind: str, tap: str, database: str, mode: str, args: Any, pids: dict[str, int]
) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.e2e", "--events", str(args.events)]
    command += ["--steady-seconds", str(args.steady_seconds)]
    if args.linger_ms is not None:
        command += ["--linger-ms", str(args.linger_ms)]
    if args.batch_size is not None:
        command += ["--batch-size", str(args.batch_size)]
    command += ["--scenario", kind, tap, database, mode]
    env = {**os.environ, PIDS_VARIABLE: json.dumps(pids)}
    done = subprocess.run(
        command, check=True, capture_output=True, text=True, timeout=1800, env=env
    )
    output = done.stdout
    figures: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return figures


def run(args: Any) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {"influxdb": [], "ha_ingestor": []}
    outages: dict[str, dict[str, Any]] = {}
    chain: list[float] = []
    with influxd_process() as process, running_tap(process.server) as (tap, tap_pid):
        influxd = process.server
        assert process.process is not None
        pids = {"influxd": process.process.pid, "tap": tap_pid}
        for round_ in range(args.rounds):
            kinds = list(results) if round_ % 2 == 0 else list(reversed(results))
            for kind in kinds:
                database = f"e2e_{kind}_{round_}"
                influxd.create_database(database)
                figures = _in_subprocess(kind, tap, database, "measure", args, pids)
                figures["lost"] = figures["fired"] - figures["stored"]
                results[kind].append(figures)
                print(f"round {round_ + 1} {kind}: {_short(figures)}", flush=True)
        # After the rounds: the points this writes keep influxd compacting for a while,
        # which the scenarios' latencies would feel.
        for round_ in range(args.rounds):
            database = f"e2e_services_{round_}"
            influxd.create_database(database)
            with running_services(tap, database) as (enrichment, _, _):
                chain.append(asyncio.run(_chain(enrichment, args)))
            print(f"services alone {round_ + 1}: {chain[-1]:,.0f} events/s", flush=True)
        if args.plot:
            for kind in results:
                database = f"e2e_{kind}_outage"
                influxd.create_database(database)
                outages[kind] = _in_subprocess(kind, tap, database, "outage", args, pids)
                outages[kind]["lost"] = outages[kind]["fired"] - outages[kind]["stored"]
                print(f"outage {kind}: lost {outages[kind]['lost']}", flush=True)

    def median(kind: str, key: str) -> float:
        return statistics.median(row[key] for row in results[kind])

    ratios = [
        ours["e2e_per_s"] / theirs["e2e_per_s"]
        for ours, theirs in zip(results["ha_ingestor"], results["influxdb"], strict=True)
    ]

    def cpu(kind: str) -> dict[str, float]:
        """Median CPU µs per state change of each process, and their sum."""
        names = results[kind][0]["cpu_us_per_event"]
        each = {
            name: statistics.median(row["cpu_us_per_event"][name] for row in results[kind])
            for name in names
        }
        return {**each, "all": sum(each.values())}

    summary = {
        "influxdb_e2e_per_s": median("influxdb", "e2e_per_s"),
        "ha_ingestor_e2e_per_s": median("ha_ingestor", "e2e_per_s"),
        "throughput_ratio_vs_influxdb": statistics.median(ratios),
        "influxdb_steady_per_s": median("influxdb", "steady_per_s"),
        "ha_ingestor_steady_per_s": median("ha_ingestor", "steady_per_s"),
        "services_alone_per_s": statistics.median(chain),
        "influxdb_p50_ms": median("influxdb", "p50_ms"),
        "influxdb_p99_ms": median("influxdb", "p99_ms"),
        "p50_ms_at_100_per_s": median("ha_ingestor", "p50_ms"),
        "p99_ms_at_100_per_s": median("ha_ingestor", "p99_ms"),
        "influxdb_loop_per_s": median("influxdb", "loop_per_s"),
        "ha_ingestor_loop_per_s": median("ha_ingestor", "loop_per_s"),
        "influxdb_lost": max(row["lost"] for row in results["influxdb"]),
        "lost": max(row["lost"] for row in results["ha_ingestor"]),
    }
    for kind in results:
        for name, value in cpu(kind).items():
            summary[f"{kind}_cpu_us_{name}"] = value
    return summary, outages


def _short(figures: dict[str, Any]) -> str:
    return (
        f"{figures['e2e_per_s']:,.0f} points/s end to end ({figures['steady_per_s']:,.0f} once"
        f" under way), loop {figures['loop_per_s']:,.0f}/s,"
        f" p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms, lost {figures['lost']}"
    )


def plot(outages: dict[str, dict[str, Any]], path: Path) -> dict[str, float]:
    """Latency against the state change's time for both, across the outage; returns how
    long each took to catch up after influxd came back (seconds from the 40th; -1 when
    none of the state changes made while it was away ever arrived)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    caught_up: dict[str, float] = {}
    figure, axes = plt.subplots(figsize=(9, 4.5), dpi=110)
    labels = {
        "influxdb": "Home Assistant's influxdb integration",
        "ha_ingestor": "HA Ingestor (both hops)",
    }
    for kind, data in outages.items():
        points = data["points"]
        xs = [x for x, _ in points]
        ys = [y * 1000 for _, y in points]
        axes.scatter(
            xs, ys, s=4, label=f"{labels[kind]}: lost {data['lost']:,} of {data['fired']:,}"
        )
        # Caught up once the last state change made while influxd was away has arrived.
        away = [x + y for x, y in points if 20.0 <= x < 40.0]
        caught_up[kind] = (max(away) - 40.0) if away else -1.0  # -1: none of them came
    axes.axvspan(20, 40, color="grey", alpha=0.15, label="influxd away (20 s)")
    axes.set_yscale("log")
    axes.set_xlabel("state change time (s from the start)")
    axes.set_ylabel("latency to influxd (ms, log)")
    axes.set_title("100 state changes/s across a 20 s outage of influxd")
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    return caught_up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument(
        "--events", type=int, default=EVENTS, help="state changes of the throughput phase"
    )
    parser.add_argument("--steady-seconds", type=float, default=STEADY_S, help="seconds at 100/s")
    parser.add_argument(
        "--linger-ms",
        type=int,
        help="HA Ingestor's Linger time option (default: the integration's default; the "
        "README's lowest-latency setting is 5)",
    )
    parser.add_argument(
        "--batch-size", type=int, help="HA Ingestor's Batch size option (default: its default)"
    )
    parser.add_argument("--plot", type=Path, help="also run the outage and draw it to this PNG")
    parser.add_argument("--scenario", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.scenario:
        kind, tap, database, mode = args.scenario
        print(json.dumps(asyncio.run(scenario(kind, tap, database, mode, args))))
        return
    summary, outages = run(args)
    python = platform.python_version()
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    linger = "default" if args.linger_ms is None else f"{args.linger_ms} ms"
    linger += ", batch size " + ("default" if args.batch_size is None else str(args.batch_size))
    print(f"machine: {machine}, Python {python}, {args.rounds} rounds, linger {linger}")
    if outages:
        for kind, seconds in plot(outages, args.plot).items():
            summary[f"{kind}_catch_up_s"] = seconds
            summary[f"{kind}_outage_lost"] = outages[kind]["lost"]
    print_table(summary, TARGETS, width=36)
    print(json.dumps({name: round(value, 2) for name, value in summary.items()}))


if __name__ == "__main__":
    main()
