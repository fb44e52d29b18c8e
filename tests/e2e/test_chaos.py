"""Chaos on real processes: ``hass`` with HA Ingestor → fault proxy → enrichment → storage →
influxd (API v1, its own database), under a load of at least 20,000 state changes.

While numbered values flow to a few entities (each entity's values increase), the test
kills storage and the enrichment with SIGKILL and starts them again, makes the proxy in
front of both services answer 503 with Retry-After, 500, reset connections, delay
answers and lose answers after the service stored the batch, takes influxd down and up,
and restarts Home Assistant once gracefully and once with SIGKILL. Then, in what influxd
holds: every value Home Assistant accepted is stored exactly once (by event id and by
value), each entity's values are in time order, and the only ones missing are those a
SIGKILL of Home Assistant may lose by the durability promise (docs/ARCHITECTURE.md,
outbox: with the default durability an event not delivered within the write delay is
on disk then), all within that window before the kill.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import itertools
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

if importlib.util.find_spec("hass_frontend") is None:
    missing = "Home Assistant's frontend is not installed; without it hass starts in recovery mode"
    if os.environ.get("HA_INGESTOR_TEST_LEG"):
        pytest.fail(missing, pytrace=False)
    pytest.skip(missing, allow_module_level=True)

from benchmarks.influxd import INFLUXD, InfluxdProcess
from scripts.demolib.ports import Ports, pick_ports
from scripts.demolib.processes import tail
from tests.e2e.chaos_stack import ChaosDemo, FaultProxy, Load, Sent
from tests.e2e.fault_proxy import KINDS, delivery_back

if not Path(INFLUXD).exists():
    # scripts/test installs Debian's influxdb package: there a missing influxd is a failure.
    missing = "influxd not found (Debian's influxdb package)"
    if os.environ.get("HA_INGESTOR_TEST_LEG"):
        pytest.fail(missing, pytrace=False)
    pytest.skip(missing, allow_module_level=True)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

ENTITIES = [f"sensor.chaos_{index}" for index in range(8)]
TARGET = 20_000
RATE = 400.0  # state changes per second: TARGET within the faults' ~60 s
DATABASE = "chaos"
# What a SIGKILL of Home Assistant may lose (README, "A crash loses the last second"):
# an event not delivered within the outbox's write delay (1 s) is on disk then. The bound
# adds half a second for that write itself on a shared machine. (During a burst the
# write may wait up to ~5 s; this paced load leaves Home Assistant's loop idle between
# changes, so the 1 s rule applies.)
WRITE_DELAY_S = 1.0
LOSS_WINDOW_S = WRITE_DELAY_S + 0.5
# An answer the load thread reads just after the SIGKILL was written before it (Home
# Assistant answers again only seconds later, once restarted): it counts as before.
READ_LAG_S = 1.0
DRAIN_TIMEOUT_S = 90.0
FAULT_LONGEST_S = 15.0


@dataclass
class Chaos:
    """Runs the faults in order while the load flows, and notes each one."""

    demo: ChaosDemo
    influxd: InfluxdProcess
    proxy: FaultProxy
    load: Load
    started: float = field(default_factory=time.monotonic)
    injected: list[tuple[float, str]] = field(default_factory=list)
    kill_time: float = 0.0  # wall time of Home Assistant's SIGKILL
    stuck_since: float = 0.0  # wall time nothing could be delivered from, before the kill

    def note(self, what: str, began: float) -> None:
        line = f"  +{began - self.started:6.1f} s  {what} ({time.monotonic() - began:.1f} s)"
        self.injected.append((began, line))
        print(line, flush=True)

    def hold(self, seconds: float) -> None:
        time.sleep(seconds)

    def outage(self, what: str, down: Callable[[], None], up: Callable[[], None]) -> None:
        began = time.monotonic()
        down()
        self.hold(2.0)
        up()
        self.note(what, began)

    def proxy_fault(self, kind: str, seconds: float, arg: float = 0.0) -> None:
        """The fault for at least ``seconds``, longer until it hit two event requests (the
        integration backs off after a failure, so a short fault may meet none)."""
        began = time.monotonic()
        hit_before = self.proxy.stats().get(kind, 0)
        self.proxy.fault(kind, FAULT_LONGEST_S, arg)
        self.hold(seconds)
        while (
            self.proxy.stats().get(kind, 0) - hit_before < 2
            and time.monotonic() - began < FAULT_LONGEST_S
        ):
            self.hold(0.2)
        self.proxy.fault(kind, 0.0)
        detail = {"503": f"Retry-After {arg:.0f} s", "delay": f"{arg:.1f} s each"}.get(kind, "")
        hits = self.proxy.stats().get(kind, 0) - hit_before
        self.note(f"proxy: {kind} {detail}, {hits} requests".replace(" ,", ","), began)
        # Delivery back (a batch accepted, which starts the integration's backoff over)
        # before the next fault, so each fault meets requests, not a backoff left over
        # from this one. Health checks pass meanwhile and say nothing about that.
        before, cleared = self.proxy.stats(), time.monotonic()
        while not delivery_back(before, self.proxy.stats()) and time.monotonic() - cleared < 60:
            self.hold(0.2)

    def restart_hass(self, *, kill: bool) -> None:
        """The load goes on until Home Assistant goes; it resumes once the entry is loaded
        again. Changes made before that are no event the integration can see (without a
        recorder, as here, its gap fill has nothing to send for them)."""
        began = time.monotonic()
        if kill:
            self.kill_time = self.demo.kill_hass()
        else:
            self.demo.stop_hass()
        self.load.paused.set()
        self.demo.start_hass()
        self.demo.onboard()
        self.demo.wait_entry_loaded()
        assert self.demo.session is not None
        self.load.token = self.demo.session.access_token
        self.load.paused.clear()
        self.note(f"Home Assistant {'kill -9' if kill else 'stopped'} and started", began)

    def run(self) -> None:
        demo = self.demo
        self.hold(3.0)
        self.outage(
            "storage kill -9, started again",
            lambda: demo.kill_service(demo.storage),
            demo.start_storage,
        )
        self.hold(3.0)
        self.outage(
            "enrichment kill -9, started again",
            lambda: demo.kill_service(demo.enrichment),
            demo.start_enrichment,
        )
        self.hold(2.0)
        self.proxy_fault("503", 3.0, 1.0)
        self.proxy_fault("500", 3.0)
        self.proxy_fault("reset", 3.0)
        self.proxy_fault("delay", 4.0, 2.0)
        self.proxy_fault("lost_answer", 4.0)
        self.hold(3.0)
        began = time.monotonic()
        self.influxd.stop()
        self.hold(5.0)
        self.influxd.start()
        self.note("influxd down, up again", began)
        self.hold(3.0)
        self.restart_hass(kill=False)
        self.hold(3.0)
        # Killed while nothing can be delivered: what waits must be on disk by then.
        began, self.stuck_since = time.monotonic(), time.time()
        self.proxy.fault("503", 120.0, 1.0)  # ended below, once Home Assistant is back
        self.hold(4.0)
        self.restart_hass(kill=True)
        self.proxy.fault("503", 0.0)
        self.note("proxy: 503 Retry-After 1 s, from 4 s before the kill -9 until after", began)


@dataclass
class Counted:
    """What influxd holds against what Home Assistant accepted."""

    sent: int = 0
    uncertain: int = 0
    stored: int = 0
    duplicate_ids: list[str] = field(default_factory=list)
    duplicate_values: list[tuple[str, int]] = field(default_factory=list)
    out_of_order: list[tuple[str, int, int]] = field(default_factory=list)
    unexpected: list[tuple[str, int]] = field(default_factory=list)
    missing: list[tuple[str, Sent]] = field(default_factory=list)
    window_sent: int = 0  # accepted within the window before the kill
    # Accepted while nothing could be delivered, before that window: only on disk at the kill.
    on_disk: int = 0
    on_disk_stored: int = 0


def stored_values(influxd: InfluxdProcess, entity: str) -> list[tuple[int, str]]:
    """(value, event id) of each point of the entity in influxd, in time order."""
    result = influxd.server.query(
        DATABASE,
        f'SELECT "state", "event_id" FROM "state_changed" WHERE "entity_id" = \'{entity}\'',
    )
    try:
        rows = result["results"][0]["series"][0]["values"]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        return []
    return [(int(float(row[1])), str(row[2])) for row in rows]


def stored_count(influxd: InfluxdProcess) -> int:
    return sum(len(stored_values(influxd, entity)) for entity in ENTITIES)


def count(influxd: InfluxdProcess, load: Load, chaos: Chaos, window: float) -> Counted:
    kill_time = chaos.kill_time
    counted = Counted()
    ids: collections.Counter[str] = collections.Counter()
    for entity in ENTITIES:
        points = stored_values(influxd, entity)
        counted.stored += len(points)
        ids.update(event_id for _, event_id in points)
        values = [value for value, _ in points]
        for value, times in collections.Counter(values).items():
            if times > 1:
                counted.duplicate_values.append((entity, value))
        counted.out_of_order += [
            (entity, before, after)
            for before, after in itertools.pairwise(values)
            if after < before
        ]
        sent, have = {item.value: item for item in load.sent[entity]}, set(values)
        counted.unexpected += [(entity, value) for value in have - set(sent)]
        for item in sent.values():
            if not item.certain:
                counted.uncertain += 1
                continue
            counted.sent += 1
            if kill_time - window <= item.answered <= kill_time + READ_LAG_S:
                counted.window_sent += 1
            elif chaos.stuck_since <= item.began and item.answered < kill_time - window:
                counted.on_disk += 1
                counted.on_disk_stored += item.value in have
            if item.value not in have:
                counted.missing.append((entity, item))
    counted.duplicate_ids = [event_id for event_id, times in ids.items() if times > 1]
    return counted


def wait_drained(demo: ChaosDemo, influxd: InfluxdProcess) -> None:
    """Until the outbox is empty and influxd's count has not moved for 3 s."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = stored_count(influxd)
        queued = demo.queued_in_ha()
        if now != last:
            last, since = now, time.monotonic()
        elif queued is not None and queued[0] == 0 and time.monotonic() - since > 3.0:
            return
        time.sleep(0.5)


@contextlib.contextmanager
def chaos_stack(workdir: Path) -> Iterator[tuple[ChaosDemo, InfluxdProcess, FaultProxy]]:
    """Every process started, and stopped at the end whatever happens."""
    influxd = InfluxdProcess()
    ports, _ = pick_ports(Ports(0, 0, 0))
    host = "127.0.0.1"
    proxy = FaultProxy(
        {
            "storage": f"http://{host}:{ports.storage}",
            "enrichment": f"http://{host}:{ports.enrichment}",
        }
    )
    demo = ChaosDemo(
        workdir=workdir,
        ports=ports,
        influx_url=influxd.server.url,
        influx_database=DATABASE,
        entry_storage_url=proxy.urls["storage"],
        entry_enrichment_url=proxy.urls["enrichment"],
    )
    try:
        influxd.start()
        proxy.start()
        demo.prepare()
        demo.start_services()
        demo.start_hass()
        demo.onboard()
        demo.wait_entry_loaded()  # no change before it: no listener would see it
        yield demo, influxd, proxy
    finally:
        failed = sys.exc_info()[0] is not None
        try:
            demo.stop()
        finally:
            proxy.stop()
            influxd.remove()
        if failed:
            for log in (demo.ha_log, *sorted(demo.logs_dir.glob("*.log"))):
                print(f"--- {log}:\n{tail(log, 40)}")


def _span(ages: list[float]) -> str:
    return f"{ages[0]:.2f} s to {ages[-1]:.2f} s before it" if ages else "none"


def test_chaos(socket_enabled: None, tmp_path: Path) -> None:
    began = time.monotonic()
    with chaos_stack(tmp_path / "chaos") as (demo, influxd, proxy):
        assert demo.session is not None
        load = Load(demo.ha_url, ENTITIES, RATE, token=demo.session.access_token)
        chaos = Chaos(demo, influxd, proxy, load)
        print(f"\nchaos: {len(ENTITIES)} entities, at least {TARGET:,} state changes", flush=True)
        load.start()
        try:
            chaos.run()
            deadline = time.monotonic() + 120.0
            while load.count < TARGET and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            load.stop()
        fired_for = time.monotonic() - chaos.started
        wait_drained(demo, influxd)
        counted = count(influxd, load, chaos, LOSS_WINDOW_S)
        stats = proxy.stats()
        queued = demo.queued_in_ha()
    ages = sorted(chaos.kill_time - item.answered for _, item in counted.missing)
    in_window = [age for age in ages if -READ_LAG_S <= age <= LOSS_WINDOW_S]
    print("injected:", *(line for _, line in sorted(chaos.injected)), sep="\n")
    print(
        f"counted: sent {counted.sent:,} in {fired_for:.0f} s"
        f" ({counted.uncertain} more unanswered, excluded), stored {counted.stored:,},"
        f" duplicates {len(counted.duplicate_ids)} by id / {len(counted.duplicate_values)}"
        f" by value, out of order {len(counted.out_of_order)},"
        f" unexpected {len(counted.unexpected)}, missing {len(counted.missing)}"
        f" ({len(in_window)} within {LOSS_WINDOW_S:.1f} s before the kill -9, of"
        f" {counted.window_sent} accepted then; ages {_span(ages)}), outbox left {queued};"
        f" accepted while nothing could be delivered and older than that at the kill"
        f" {counted.on_disk}, of them stored {counted.on_disk_stored}",
        f"\nproxy requests: {stats}",
        f"\nrun took {time.monotonic() - began:.0f} s",
        flush=True,
    )
    assert load.count >= TARGET
    assert counted.duplicate_ids == [], counted.duplicate_ids[:10]
    assert counted.duplicate_values == [], counted.duplicate_values[:10]
    assert counted.out_of_order == [], counted.out_of_order[:10]
    assert counted.unexpected == [], counted.unexpected[:10]
    # Lost beyond the promise: (entity, value, seconds before the kill it was accepted).
    outside = [
        (entity, item.value, round(chaos.kill_time - item.answered, 3))
        for entity, item in counted.missing
        if not -READ_LAG_S <= chaos.kill_time - item.answered <= LOSS_WINDOW_S
    ]
    assert outside == [], outside[:20]
    assert len(in_window) == len(counted.missing)
    assert len(counted.missing) <= counted.window_sent
    assert counted.on_disk > 0  # the kill found events that only the outbox file held
    # Each fault met at least two of the integration's requests: it begins once delivery
    # is back, and every kind is retried within a few seconds from there (a reset or a
    # lost answer at once when the health check answers, docs/ARCHITECTURE.md "Recovery").
    assert all(stats.get(kind, 0) >= 2 for kind in KINDS), stats
