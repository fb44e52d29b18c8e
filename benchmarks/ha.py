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

Two phases in each scenario's core: the burst (EVENTS, 50,000 state changes, --events),
which HA Ingestor's outbox absorbs by resting while the loop fires (it rests for up to
5 s or 100,000 events of backlog) and writing after; then, once the burst is delivered
and after a pause of SETTLE_S, the sustained phase (SUSTAINED_EVENTS, 200,000 state
changes, --sustained-events; 0 leaves it out), long enough that the outbox works while
the loop fires. Both report the same figures and the same ratio against Home
Assistant's `influxdb` integration; the sustained ones are named ``sustained_*``.
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
from collections.abc import Awaitable, Callable
from pathlib import Path

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

from .influxd import Influxd, free_port, running_influxd
from .sink import distinct_ids, running_sink

EVENTS = 50_000
SUSTAINED_EVENTS = 200_000
SUSTAINED = "sustained_"  # the sustained phase's figures: the burst's names with this prefix
SETTLE_S = 2.0  # between the burst's delivery and the sustained phase
STALL_S = 15.0  # stop waiting for deliveries when the count has not moved for this long
ROUNDS = 5
UNIT = "°C"
DATABASE = "home_assistant"
ATTRIBUTES = {
    "state_class": "measurement",
    "unit_of_measurement": UNIT,
    "device_class": "temperature",
    "friendly_name": "Bench temperature",
}


async def _fire(hass: HomeAssistant, count: int, first: int = 0) -> float:
    """Fire ``count`` state changes (numbered from ``first``, so each changes its entity's
    state); returns seconds until the loop is idle again."""
    start = time.perf_counter()
    for index in range(first, first + count):
        hass.states.async_set(f"sensor.bench_{index % 100}", str(index), ATTRIBUTES)
        if index % 500 == 499:
            await asyncio.sleep(0)  # let the loop run what the changes scheduled
    await hass.async_block_till_done()
    return time.perf_counter() - start


async def setup_influxdb(
    hass: HomeAssistant, influxd: Influxd, database: str | None = None
) -> Callable[[], int]:
    """Home Assistant's influxdb integration (API v1); returns a counter of stored points."""
    # A fresh database for every round (each round is its own process), so points of an
    # earlier round are never counted again.
    database = database or f"{DATABASE}_{os.getpid()}"
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
    before = distinct_ids(sink_url)
    return lambda: distinct_ids(sink_url) - before


async def scenario(
    hass: HomeAssistant,
    subscribe: Callable[[], Awaitable[Callable[[], int]]] | None,
    events: int = EVENTS,
    sustained_events: int = 0,
) -> dict[str, float]:
    """The burst, then the sustained phase: each its loop rate, and with a subscriber
    its delivered rate and losses (the sustained ones prefixed ``sustained_``)."""
    count_delivered = await subscribe() if subscribe else None
    await hass.async_block_till_done()
    figures = await _phase(hass, count_delivered, events, 0)
    if sustained_events:
        await asyncio.sleep(SETTLE_S)
        sustained = await _phase(hass, count_delivered, sustained_events, events)
        figures |= {SUSTAINED + name: value for name, value in sustained.items()}
    return figures


async def _phase(
    hass: HomeAssistant, count_delivered: Callable[[], int] | None, events: int, first: int
) -> dict[str, float]:
    """Fire ``events`` state changes; the loop rate, and the deliveries they made."""
    before = 0 if count_delivered is None else await hass.async_add_executor_job(count_delivered)
    start = time.perf_counter()
    figures = {"loop_per_s": events / await _fire(hass, events, first)}
    if count_delivered is None:
        return figures
    deadline = time.monotonic() + 300
    moved_at, last = time.monotonic(), -1
    while (delivered := await hass.async_add_executor_job(count_delivered) - before) < events:
        now = time.monotonic()
        if delivered != last:
            moved_at, last = now, delivered
        if now > deadline or now - moved_at > STALL_S:
            break  # report what arrived; `lost` says the rest
        await asyncio.sleep(0.05)
    figures["delivered_per_s"] = delivered / (time.perf_counter() - start)
    figures["lost"] = events - delivered
    return figures


async def run_scenario(
    kind: str,
    influx_port: int,
    sink_url: str,
    events: int = EVENTS,
    sustained_events: int = SUSTAINED_EVENTS,
) -> dict[str, float]:
    """One scenario in a fresh Home Assistant (this process is fresh too)."""
    influxd = Influxd(f"http://127.0.0.1:{influx_port}", influx_port)
    with tempfile.TemporaryDirectory(prefix="bench-ha-") as config_dir:
        async with async_test_home_assistant(config_dir=config_dir) as hass:
            # As the test harness's enable_custom_integrations fixture does.
            hass.data.pop(loader.DATA_CUSTOM_COMPONENTS)
            subscribers: dict[str, Callable[[], Awaitable[Callable[[], int]]]] = {
                "influxdb": lambda: setup_influxdb(hass, influxd),
                "ha_ingestor": lambda: _setup_ha_ingestor(hass, sink_url),
            }
            figures = await scenario(hass, subscribers.get(kind), events, sustained_events)
            # Config entries are not unloaded by stopping; influxdb's writer thread (an
            # entry from 2026.x on) would keep this process alive.
            for entry in hass.config_entries.async_entries():
                await hass.config_entries.async_unload(entry.entry_id)
            await hass.async_stop(force=True)
    return figures


def _in_subprocess(
    kind: str, influxd: Influxd, sink_url: str, events: int, sustained_events: int
) -> dict[str, float]:
    command = [sys.executable, "-m", "benchmarks.ha", "--events", str(events)]
    command += ["--sustained-events", str(sustained_events)]
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


def _round_line(results: dict[str, list[dict[str, float]]], prefix: str) -> str:
    """One phase of the last round: loop rates, the ratio, the delivered rates."""
    none, influx, ours = (results[kind][-1] for kind in KINDS)
    loop, delivered = f"{prefix}loop_per_s", f"{prefix}delivered_per_s"
    return (
        f"no listener {none[loop]:,.0f}/s,"
        f" influxdb {influx[loop]:,.0f}/s, HA Ingestor {ours[loop]:,.0f}/s"
        f" (ratio {ours[loop] / influx[loop]:.2f}),"
        f" delivered {influx[delivered]:,.0f}/s vs {ours[delivered]:,.0f}/s"
    )


def _summary(results: dict[str, list[dict[str, float]]], prefix: str) -> dict[str, float]:
    """The medians of one phase (``prefix`` "" for the burst, "sustained_" for the other)."""

    def median(kind: str, figure: str) -> float:
        return statistics.median(result[prefix + figure] for result in results[kind])

    def worst(kind: str, figure: str) -> float:
        return max(result[prefix + figure] for result in results[kind])

    loop = prefix + "loop_per_s"
    ratios = [
        ours[loop] / influx[loop]
        for ours, influx in zip(results["ha_ingestor"], results["influxdb"], strict=True)
    ]
    figures = {
        "no_listener_per_s": median("none", "loop_per_s"),
        "influxdb_listener_per_s": median("influxdb", "loop_per_s"),
        "ha_ingestor_listener_per_s": median("ha_ingestor", "loop_per_s"),
        "ratio_vs_influxdb": statistics.median(ratios),
        "influxdb_delivered_per_s": median("influxdb", "delivered_per_s"),
        "delivered_per_s": median("ha_ingestor", "delivered_per_s"),
        "influxdb_lost": worst("influxdb", "lost"),
        "lost": worst("ha_ingestor", "lost"),
    }
    return {prefix + name: value for name, value in figures.items()}


def run(
    rounds: int = ROUNDS, events: int = EVENTS, sustained_events: int = SUSTAINED_EVENTS
) -> dict[str, float]:
    """Interleave the scenarios over several rounds, each in its own process; medians."""
    results: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    with running_influxd() as influxd, running_sink(free_port()) as sink_url:
        for number in range(1, rounds + 1):
            # Every other round in reverse order, so a machine that gets busier or calmer
            # during the run favours neither listener.
            for kind in KINDS if number % 2 else KINDS[::-1]:
                results[kind].append(
                    _in_subprocess(kind, influxd, sink_url, events, sustained_events)
                )
            print(f"round {number}: {_round_line(results, '')}", flush=True)
            if sustained_events:
                print(f"  sustained: {_round_line(results, SUSTAINED)}", flush=True)
    figures = _summary(results, "")
    if sustained_events:
        figures |= _summary(results, SUSTAINED)
    return figures


TARGETS = {
    "ratio_vs_influxdb": (">=", 1.0),
    "delivered_per_s": (">=", 10_000),
    "lost": ("<=", 0),
    SUSTAINED + "ratio_vs_influxdb": (">=", 1.0),
    SUSTAINED + "lost": ("<=", 0),
}


def _cell(name: str, figures: dict[str, float]) -> str:
    """A value and, when the figure has a target, whether it is met."""
    if name not in figures:
        return f"{'-':>14}{'':8}"
    value = figures[name]
    mark = ""
    if (target := TARGETS.get(name)) is not None:
        sign, limit = target
        mark = "ok" if (value >= limit if sign == ">=" else value <= limit) else "MISSED"
    return f"{value:>14,.2f} {mark:<7}"


def _targets(name: str) -> str:
    burst, sustained = TARGETS.get(name), TARGETS.get(SUSTAINED + name)
    if burst is None and sustained is None:
        return ""
    sign, limit = burst or sustained
    scope = " (sustained)" if burst is None else " (burst)" if sustained is None else ""
    return f"{sign} {limit:,}{scope}"


def print_table(figures: dict[str, float], events: int, sustained_events: int) -> None:
    """Burst and sustained side by side; the sustained names are the burst's prefixed
    with ``sustained_`` (as in the JSON line)."""
    print(f"{'figure':<28}{'burst':>14}{'':8}{'sustained':>14}{'':8}target")
    print(f"{'(state changes)':<28}{events:>14,}{'':8}{sustained_events:>14,}")
    for name in [name for name in figures if not name.startswith(SUSTAINED)]:
        cells = _cell(name, figures) + _cell(SUSTAINED + name, figures)
        print(f"{name:<28}{cells}{_targets(name)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=ROUNDS, help=f"interleaved rounds (default {ROUNDS})"
    )
    parser.add_argument(
        "--events",
        type=int,
        default=EVENTS,
        help=f"state changes of the burst, per scenario and round (default {EVENTS:,})",
    )
    parser.add_argument(
        "--sustained-events",
        type=int,
        default=SUSTAINED_EVENTS,
        help="state changes of the sustained phase, per scenario and round"
        f" (default {SUSTAINED_EVENTS:,}; 0 leaves it out)",
    )
    parser.add_argument("--scenario", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.scenario:
        kind, influx_port, sink_url = args.scenario
        figures = asyncio.run(
            run_scenario(kind, int(influx_port), sink_url, args.events, args.sustained_events)
        )
        print(json.dumps(figures))
        return
    started = time.monotonic()
    figures = run(args.rounds, args.events, args.sustained_events)
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(
        f"machine: {machine}, Python {platform.python_version()}, {args.rounds} rounds"
        f" in {time.monotonic() - started:,.0f} s"
    )
    print_table(figures, args.events, args.sustained_events)
    print(json.dumps({name: round(value, 2) for name, value in figures.items()}))


if __name__ == "__main__":
    main()
