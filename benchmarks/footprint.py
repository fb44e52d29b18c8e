"""scripts/bench footprint: what forwarding costs the host, next to Home Assistant's recorder.

Each scenario runs in a fresh Home Assistant core (the test harness's) in its own
process, which fires state changes at a steady rate for a while and then waits a settle
window (longer than the recorder's 5 s commit interval) so deferred writes are counted
too. Measured over the firing and the settle window, for the whole process (all its
threads):

- bytes written to disk per event (``write_bytes`` of /proc/self/io: counted when pages
  are dirtied, so nothing waits for the kernel's writeback);
- CPU µs per event (user + system, `time.process_time`);
- fsyncs per second (perf's syscall tracepoints for fsync and fdatasync, attached to the
  process for the window: no cost per syscall unlike strace);
- peak RSS (VmHWM), and for HA Ingestor p99 from state change to the target's ack.

Scenarios: the harness alone; Home Assistant's recorder (SQLite, default settings);
HA Ingestor with its defaults to a sink that acks at once (200 and 20 events/s), to a
sink that answers after 200 ms, and to a target that is down for the whole run; and
HA Ingestor with durability "on backlog" (healthy, 200/s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homeassistant import loader
from homeassistant.core import HomeAssistant
from homeassistant.helpers import recorder as recorder_helper
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_test_home_assistant,
)

import custom_components.ha_ingestor  # noqa: F401 - makes the integration importable
from custom_components.ha_ingestor.const import (
    CONF_API_TOKEN,
    CONF_DURABILITY,
    CONF_STORAGE_URL,
    CONF_VERIFY_SSL,
    DOMAIN,
)

from .influxd import free_port
from .sink import running_sink

SECONDS = 30.0
SETTLE_S = 7.0  # past the recorder's 5 s commit interval
ATTRIBUTES = {
    "state_class": "measurement",
    "unit_of_measurement": "°C",
    "device_class": "temperature",
    "friendly_name": "Bench temperature",
}


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    subscriber: str  # "none", "recorder" or "ha_ingestor"
    rate: float  # state changes per second
    target: str = "healthy"  # for ha_ingestor: "healthy", "slow" or "down"
    durability: str = "always"


SCENARIOS = (
    Scenario("harness", "none", 200),
    Scenario("recorder", "recorder", 200),
    Scenario("healthy", "ha_ingestor", 200),
    Scenario("healthy_20", "ha_ingestor", 20),
    Scenario("harness_20", "none", 20),
    Scenario("slow", "ha_ingestor", 200, target="slow"),
    Scenario("outage", "ha_ingestor", 200, target="down"),
    Scenario("on_backlog", "ha_ingestor", 200, durability="on_backlog"),
)


def _write_bytes() -> int:
    with open("/proc/self/io", encoding="ascii") as io:
        for line in io:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def _peak_rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc/self/status")


class _Fsyncs:
    """perf counting this process's fsync and fdatasync calls until `stop`."""

    EVENTS = "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync"

    def __init__(self) -> None:
        self._perf: subprocess.Popen[str] | None = None
        with contextlib.suppress(OSError):
            self._perf = subprocess.Popen(
                ["perf", "stat", "-x", ",", "-e", self.EVENTS, "-p", str(os.getpid())],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(0.3)  # attached before the window opens

    def stop(self) -> int | None:
        """The count, or None where perf is missing or refused."""
        if self._perf is None:
            return None
        self._perf.send_signal(signal.SIGINT)
        _, err = self._perf.communicate(timeout=10)
        counts = [line.split(",")[0] for line in err.splitlines() if "sys_enter_f" in line]
        if not counts or not all(count.isdigit() for count in counts):
            return None
        return sum(int(count) for count in counts)


async def _fire(hass: HomeAssistant, rate: float, seconds: float) -> int:
    """State changes at a steady rate, each at its own moment; returns how many."""
    loop = asyncio.get_running_loop()
    total = int(rate * seconds)
    start = loop.time()
    for index in range(total):
        await asyncio.sleep(max(0.0, start + index / rate - loop.time()))
        hass.states.async_set(f"sensor.bench_{index % 100}", str(index), ATTRIBUTES)
    return total


async def _subscribe(
    hass: HomeAssistant, scenario: Scenario, target: str, options: dict[str, Any]
) -> MockConfigEntry | None:
    if scenario.subscriber == "recorder":
        # What Home Assistant's bootstrap does before any integration is set up.
        recorder_helper.async_initialize_recorder(hass)
        db = Path(hass.config.path("home-assistant_v2.db"))
        assert await async_setup_component(
            hass, "recorder", {"recorder": {"db_url": f"sqlite:///{db}"}}
        )
        await hass.async_block_till_done()
        return None
    if scenario.subscriber != "ha_ingestor":
        return None
    http = {"server_host": ["127.0.0.1"], "server_port": free_port()}
    assert await async_setup_component(hass, "http", {"http": http})
    data = {CONF_STORAGE_URL: target, CONF_API_TOKEN: "bench", CONF_VERIFY_SSL: True}
    entry = MockConfigEntry(
        domain=DOMAIN, data=data, options={**options, CONF_DURABILITY: scenario.durability}
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry


async def run_scenario(
    scenario: Scenario, target: str, seconds: float, options: dict[str, Any]
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as config_dir:
        async with async_test_home_assistant(config_dir=config_dir) as hass:
            hass.data.pop(loader.DATA_CUSTOM_COMPONENTS)
            entry = await _subscribe(hass, scenario, target, options)
            await asyncio.sleep(2.0)  # set-up writes and start-up work settle first
            fsyncs = _Fsyncs()
            written, cpu = _write_bytes(), time.process_time()
            started = time.monotonic()
            events = await _fire(hass, scenario.rate, seconds)
            await asyncio.sleep(SETTLE_S)
            window = time.monotonic() - started
            written, cpu = _write_bytes() - written, time.process_time() - cpu
            fsync_count = fsyncs.stop()
            figures: dict[str, Any] = {
                "events": events,
                "bytes_per_event": written / events,
                "cpu_us_per_event": cpu / events * 1e6,
                "cpu_percent": cpu / window * 100,
                "fsyncs_per_s": None if fsync_count is None else fsync_count / window,
                "peak_rss_mb": _peak_rss_mb(),
            }
            if entry is not None:
                metrics = entry.runtime_data.runtime.metrics
                figures["p99_ack_ms"] = metrics.latency.percentile(99)
                figures["delivered"] = metrics.get("delivered")
            for loaded in hass.config_entries.async_entries():
                await hass.config_entries.async_unload(loaded.entry_id)
            await hass.async_stop(force=True)
    return figures


def _in_subprocess(
    scenario: Scenario, target: str, seconds: float, options: list[str]
) -> dict[str, Any]:
    output = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.footprint",
            "--scenario",
            scenario.name,
            target,
            "--seconds",
            str(seconds),
            *(f"--option={option}" for option in options),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    ).stdout
    figures: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return figures


def run(seconds: float, only: set[str], options: list[str]) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with running_sink(free_port()) as healthy, running_sink(free_port(), delay=0.2) as slow:
        targets = {"healthy": healthy, "slow": slow, "down": down}
        for scenario in SCENARIOS:
            if only and scenario.name not in only:
                continue
            target = targets[scenario.target]
            results[scenario.name] = _in_subprocess(scenario, target, seconds, options)
            print(f"{scenario.name}: {results[scenario.name]}", flush=True)
    return results


def summary(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    def figure(name: str, key: str) -> float:
        value = results.get(name, {}).get(key)
        return float("nan") if value is None else float(value)

    return {
        "recorder_bytes_per_event": figure("recorder", "bytes_per_event"),
        "healthy_bytes_per_event": figure("healthy", "bytes_per_event"),
        "slow_bytes_per_event": figure("slow", "bytes_per_event"),
        "outage_bytes_per_event": figure("outage", "bytes_per_event"),
        "on_backlog_bytes_per_event": figure("on_backlog", "bytes_per_event"),
        "harness_cpu_us_per_event": figure("harness", "cpu_us_per_event"),
        "recorder_cpu_us_per_event": figure("recorder", "cpu_us_per_event"),
        "cpu_us_per_event": figure("healthy", "cpu_us_per_event"),
        # Above the harness at the same rate: what HA Ingestor itself takes of a core.
        "cpu_percent_at_20_per_s": figure("healthy_20", "cpu_percent")
        - figure("harness_20", "cpu_percent"),
        "p99_ack_ms": figure("healthy", "p99_ack_ms"),
    }


TARGETS = {
    "healthy_bytes_per_event": ("<=", 100),
    "slow_bytes_per_event": ("<=", 1_000),
    "outage_bytes_per_event": ("<=", 1_000),
    "cpu_percent_at_20_per_s": ("<", 1),
    "p99_ack_ms": ("<=", 300),
}


def _print(results: dict[str, dict[str, Any]], figures: dict[str, float]) -> None:
    print(
        f"{'scenario':<12}{'B/event':>10}{'CPU µs/ev':>11}{'CPU %':>8}{'fsync/s':>9}"
        f"{'RSS MB':>8}{'p99 ms':>9}"
    )
    for name, row in results.items():
        fsyncs = row["fsyncs_per_s"]
        p99 = row.get("p99_ack_ms")
        print(
            f"{name:<12}{row['bytes_per_event']:>10,.0f}{row['cpu_us_per_event']:>11,.0f}"
            f"{row['cpu_percent']:>8.2f}{'-' if fsyncs is None else f'{fsyncs:.1f}':>9}"
            f"{row['peak_rss_mb']:>8.0f}{'-' if p99 is None else f'{p99:.0f}':>9}"
        )
    above = figures["cpu_us_per_event"] - figures["harness_cpu_us_per_event"]
    recorder = figures["recorder_cpu_us_per_event"] - figures["harness_cpu_us_per_event"]
    print(
        f"CPU above the harness at 200/s: HA Ingestor {above:,.0f} µs/event, "
        f"recorder {recorder:,.0f} µs/event ({'ok' if above <= recorder else 'MISSED'})"
    )
    for name, (sign, limit) in TARGETS.items():
        value = figures[name]
        ok = value <= limit if sign == "<=" else value < limit
        print(f"{name:<28}{value:>12,.2f}  {sign} {limit:,}  {'ok' if ok else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=SECONDS, help="firing time per scenario")
    parser.add_argument(
        "--only", default="", help="comma-separated scenarios to run (default: all)"
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an HA Ingestor option for its scenarios, e.g. linger_ms=5 (repeatable)",
    )
    parser.add_argument("--scenario", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.scenario:
        name, target = args.scenario
        scenario = next(s for s in SCENARIOS if s.name == name)
        options = {key: int(value) for key, _, value in (o.partition("=") for o in args.option)}
        print(json.dumps(asyncio.run(run_scenario(scenario, target, args.seconds, options))))
        return
    only = {name for name in args.only.split(",") if name}
    results = run(args.seconds, only, args.option)
    figures = summary(results)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {args.seconds:g} s per scenario"
    )
    _print(results, figures)
    print(json.dumps({name: round(value, 2) for name, value in figures.items()}))


if __name__ == "__main__":
    main()
