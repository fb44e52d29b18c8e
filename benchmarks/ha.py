"""scripts/bench ha: what subscribing costs Home Assistant's event loop, and what arrives.

In one run, each in a fresh Home Assistant core (the test harness's) in its own process:

(a) no listener: the state-change rate the loop sustains on its own;
(b) Home Assistant's own `influxdb` integration subscribed, writing to a local influxd;
(c) HA Ingestor subscribed, forwarding to a local sink in another process.

Each scenario runs ROUNDS times (--rounds), interleaved (every other round in reverse
order), and the medians are reported (the ratio is the median of the per-round
ratios): single runs on this shared machine move a lot.
The loop rate is state changes fired (as fast as the loop takes them, yielding every
500) over the time until the loop is idle again. The delivered rate is events over the
time from the first state change until the target holds the last one. `lost` is events
fired minus distinct events the target received.
"""

from __future__ import annotations

import argparse
import asyncio
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
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
from homeassistant import loader
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_test_home_assistant,
)

import custom_components.ha_ingestor  # noqa: F401 - makes the integration importable
from custom_components.ha_ingestor.const import (
    CONF_API_TOKEN,
    CONF_STORAGE_URL,
    CONF_VERIFY_SSL,
    DOMAIN,
)
from custom_components.ha_ingestor.pipeline.envelope import HEALTH_PATH

from .influxd import Influxd, free_port, running_influxd
from .sink import running_sink

EVENTS = 50_000
ROUNDS = 5
UNIT = "°C"
DATABASE = "home_assistant"
ATTRIBUTES = {
    "state_class": "measurement",
    "unit_of_measurement": UNIT,
    "device_class": "temperature",
    "friendly_name": "Bench temperature",
}


def _sink_unique(url: str) -> int:
    with urllib.request.urlopen(url + HEALTH_PATH, timeout=5) as answer:
        count: int = orjson.loads(answer.read())["unique"]
        return count


async def _fire(hass: HomeAssistant, count: int) -> float:
    """Fire ``count`` state changes; returns seconds until the loop is idle again."""
    start = time.perf_counter()
    for index in range(count):
        hass.states.async_set(f"sensor.bench_{index % 100}", str(index), ATTRIBUTES)
        if index % 500 == 499:
            await asyncio.sleep(0)  # let the loop run what the changes scheduled
    await hass.async_block_till_done()
    return time.perf_counter() - start


async def _setup_influxdb(hass: HomeAssistant, influxd: Influxd) -> Callable[[], int]:
    """Home Assistant's influxdb integration (API v1); returns a counter of stored points."""
    # A fresh database for every round (each round is its own process), so points of an
    # earlier round are never counted again.
    database = f"{DATABASE}_{os.getpid()}"
    influxd.create_database(database)
    config = {"host": "127.0.0.1", "port": influxd.port, "database": database}
    # Newer releases (2026.x) import this YAML into a config entry, whose set-up reads
    # configuration.yaml again: the file must hold the same section.
    yaml = "".join(f"  {key}: {value}\n" for key, value in config.items())
    await hass.async_add_executor_job(
        Path(hass.config.path("configuration.yaml")).write_text, f"influxdb:\n{yaml}"
    )
    assert await async_setup_component(hass, "influxdb", {"influxdb": config})
    await hass.async_block_till_done()
    for entry in hass.config_entries.async_entries("influxdb"):
        assert entry.state is ConfigEntryState.LOADED, f"influxdb entry: {entry.state}"
    return lambda: influxd.count(database, UNIT, "value")


async def _setup_ha_ingestor(hass: HomeAssistant, sink_url: str) -> Callable[[], int]:
    """HA Ingestor with its defaults, to the sink; returns a counter of distinct events."""
    http = {"server_host": ["127.0.0.1"], "server_port": free_port()}
    assert await async_setup_component(hass, "http", {"http": http})
    data = {CONF_STORAGE_URL: sink_url, CONF_API_TOKEN: "bench", CONF_VERIFY_SSL: True}
    entry = MockConfigEntry(domain=DOMAIN, data=data)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    before = _sink_unique(sink_url)
    return lambda: _sink_unique(sink_url) - before


async def scenario(
    hass: HomeAssistant,
    subscribe: Callable[[], Awaitable[Callable[[], int]]] | None,
    events: int = EVENTS,
) -> dict[str, float]:
    """Loop rate, and with a subscriber its delivered rate and losses."""
    count_delivered = await subscribe() if subscribe else None
    await hass.async_block_till_done()
    start = time.perf_counter()
    figures = {"loop_per_s": events / await _fire(hass, events)}
    if count_delivered is None:
        return figures
    deadline = time.monotonic() + 300
    while (delivered := await hass.async_add_executor_job(count_delivered)) < events:
        if time.monotonic() > deadline:
            break  # report what arrived; `lost` says the rest
        await asyncio.sleep(0.05)
    figures["delivered_per_s"] = delivered / (time.perf_counter() - start)
    figures["lost"] = events - delivered
    return figures


async def run_scenario(
    kind: str, influx_port: int, sink_url: str, events: int = EVENTS
) -> dict[str, float]:
    """One scenario in a fresh Home Assistant (this process is fresh too)."""
    influxd = Influxd(f"http://127.0.0.1:{influx_port}", influx_port)
    with tempfile.TemporaryDirectory(prefix="bench-ha-") as config_dir:
        async with async_test_home_assistant(config_dir=config_dir) as hass:
            # As the test harness's enable_custom_integrations fixture does.
            hass.data.pop(loader.DATA_CUSTOM_COMPONENTS)
            if kind == "influxdb":
                figures = await scenario(hass, lambda: _setup_influxdb(hass, influxd), events)
            elif kind == "ha_ingestor":
                figures = await scenario(hass, lambda: _setup_ha_ingestor(hass, sink_url), events)
            else:
                figures = await scenario(hass, None, events)
            # Config entries are not unloaded by stopping; influxdb's writer thread (an
            # entry from 2026.x on) would keep this process alive.
            for entry in hass.config_entries.async_entries():
                await hass.config_entries.async_unload(entry.entry_id)
            await hass.async_stop(force=True)
    return figures


def _in_subprocess(kind: str, influxd: Influxd, sink_url: str, events: int) -> dict[str, float]:
    command = [sys.executable, "-m", "benchmarks.ha", "--events", str(events)]
    output = subprocess.run(
        [*command, "--scenario", kind, str(influxd.port), sink_url],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    ).stdout
    figures: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return figures


KINDS = ("none", "influxdb", "ha_ingestor")


def run(rounds: int = ROUNDS, events: int = EVENTS) -> dict[str, float]:
    """Interleave the scenarios over several rounds, each in its own process; medians."""
    results: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    with running_influxd() as influxd, running_sink(free_port()) as sink_url:
        for number in range(1, rounds + 1):
            # Every other round in reverse order, so a machine that gets busier or calmer
            # during the run favours neither listener.
            for kind in KINDS if number % 2 else KINDS[::-1]:
                results[kind].append(_in_subprocess(kind, influxd, sink_url, events))
            ours, influx = results["ha_ingestor"][-1], results["influxdb"][-1]
            print(
                f"round {number}: no listener {results['none'][-1]['loop_per_s']:,.0f}/s,"
                f" influxdb {influx['loop_per_s']:,.0f}/s, HA Ingestor {ours['loop_per_s']:,.0f}/s"
                f" (ratio {ours['loop_per_s'] / influx['loop_per_s']:.2f}),"
                f" delivered {influx['delivered_per_s']:,.0f}/s"
                f" vs {ours['delivered_per_s']:,.0f}/s",
                flush=True,
            )

    def median(kind: str, figure: str) -> float:
        return statistics.median(result[figure] for result in results[kind])

    ratios = [
        ours["loop_per_s"] / influx["loop_per_s"]
        for ours, influx in zip(results["ha_ingestor"], results["influxdb"], strict=True)
    ]
    return {
        "no_listener_per_s": median("none", "loop_per_s"),
        "influxdb_listener_per_s": median("influxdb", "loop_per_s"),
        "ha_ingestor_listener_per_s": median("ha_ingestor", "loop_per_s"),
        "ratio_vs_influxdb": statistics.median(ratios),
        "influxdb_delivered_per_s": median("influxdb", "delivered_per_s"),
        "delivered_per_s": median("ha_ingestor", "delivered_per_s"),
        "influxdb_lost": max(result["lost"] for result in results["influxdb"]),
        "lost": max(result["lost"] for result in results["ha_ingestor"]),
    }


TARGETS = {"ratio_vs_influxdb": (">=", 1.0), "delivered_per_s": (">=", 10_000), "lost": ("<=", 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=ROUNDS, help=f"interleaved rounds (default {ROUNDS})"
    )
    parser.add_argument(
        "--events",
        type=int,
        default=EVENTS,
        help=f"state changes per scenario and round (default {EVENTS:,})",
    )
    parser.add_argument("--scenario", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.scenario:
        kind, influx_port, sink_url = args.scenario
        figures = asyncio.run(run_scenario(kind, int(influx_port), sink_url, args.events))
        print(json.dumps(figures))
        return
    figures = run(args.rounds, args.events)
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(
        f"machine: {machine}, Python {platform.python_version()}, {args.events:,} state changes,"
        f" {args.rounds} rounds"
    )
    print(f"{'figure':<28}{'value':>14}  target")
    for name, value in figures.items():
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            sign, limit = target
            ok = value >= limit if sign == ">=" else value <= limit
            verdict = f"{sign} {limit:,}  {'ok' if ok else 'MISSED'}"
        print(f"{name:<28}{value:>14,.2f}  {verdict}")
    print(json.dumps({name: round(value, 2) for name, value in figures.items()}))


if __name__ == "__main__":
    main()
