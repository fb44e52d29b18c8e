"""The demo's pipeline end to end: ``hass`` with HA Ingestor → enrichment → storage.

It runs what ``scripts/demo`` runs (the same driver, `scripts.demo.Demo`): storage and
the enrichment as two processes, Home Assistant onboarded through its onboarding API,
the config entry reaching the services by host name (``localhost``: Home Assistant's
resolver must work). State changes arrive with the weather of the demo's template
weather entity; storage stopped and started again with the command the demo prints
leaves Home Assistant running, and every value of a counter that goes up once a second
is stored exactly once.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shlex
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

if importlib.util.find_spec("hass_frontend") is None:
    # scripts/test installs it with each leg's pins: there a missing frontend is a failure.
    missing = (
        "Home Assistant's frontend is not installed (home-assistant-frontend, pinned in "
        "requirements_floor.txt and requirements_latest.txt); without it hass starts in "
        "recovery mode"
    )
    if os.environ.get("HA_INGESTOR_TEST_LEG"):
        pytest.fail(missing, pytrace=False)
    pytest.skip(missing, allow_module_level=True)

from scripts.demo import COUNTER_ENTITY, WEATHER_ENTITY, Demo, Ports, pick_ports, tail
from scripts.demolib.onboarding import HaSession, Login
from scripts.demolib.services import Change

pytestmark = pytest.mark.slow

CONDITIONS = {"sunny", "partlycloudy", "cloudy", "rainy", "pouring", "fog", "windy"}
OUTAGE_S = 5.0


def wait_for[T](what: str | Callable[[], str], probe: Callable[[], T | None], timeout: float) -> T:
    """Poll until probe gives something truthy; fail naming what did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := probe():
            return value
        time.sleep(0.25)
    pytest.fail(f"within {timeout:.0f} s: {what if isinstance(what, str) else what()}")


def rows(database: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        db.execute("PRAGMA busy_timeout = 5000")
        return db.execute(sql, params).fetchall()


def new_demo(workdir: Path) -> Demo:
    ports, _ = pick_ports(Ports(0, 0, 0))
    return Demo(workdir=workdir, ports=ports, entry_host="localhost", integration_log_level="debug")


def show_logs(demo: Demo) -> None:
    """Shown when a test fails: what each part logged last."""
    for log in (demo.ha_log, *sorted(demo.logs_dir.glob("*.log"))):
        print(f"--- {log}:\n{tail(log, 60)}")


@pytest.fixture
def demo(socket_enabled: None, tmp_path: Path) -> Iterator[Demo]:
    demo = new_demo(tmp_path / "demo")
    try:
        demo.prepare()
        demo.start_services()
        demo.start_hass()
        demo.onboard()
        yield demo
    finally:
        demo.stop()
        show_logs(demo)


def counter_values(demo: Demo) -> list[int]:
    """The counter's values in storage, oldest first (through the query API)."""
    events = demo.stored_events(limit=10_000, entity_id=COUNTER_ENTITY)
    return [int(float(event["state"])) for event in reversed(events)]


def check_onboarded(demo: Demo, *, fresh: bool) -> HaSession:
    """Every onboarding step done; the demo's session sees metric units and its location."""
    assert demo.session is not None
    assert demo.login is not None
    status, steps = demo.session.get("/api/onboarding")
    if fresh:
        assert status == 200
        assert {step["step"] for step in steps} >= {"user", "core_config", "integration"}
        assert all(step["done"] for step in steps), steps
    else:
        assert status == 404  # onboarded: Home Assistant starts without onboarding views
    status, config = demo.session.get("/api/config")
    assert status == 200
    assert config["unit_system"]["temperature"] == "°C"
    assert config["unit_system"]["length"] == "km"
    assert (config["country"], config["time_zone"]) == ("NL", "Europe/Amsterdam")
    assert (config["latitude"], config["longitude"]) == (52.3731, 4.8922)
    assert config["config_source"] == "storage"  # editable in the UI, not locked by YAML
    # The login the demo prints, kept for the owner only.
    assert stat.S_IMODE(demo.login_path.stat().st_mode) == 0o600
    assert Login.load(demo.login_path) == demo.login
    return demo.session


def test_onboarding_done_by_the_demo_and_kept_with_keep(
    socket_enabled: None, tmp_path: Path
) -> None:
    first = new_demo(tmp_path / "demo")
    try:
        first.prepare()
        first.start_hass()
        first.onboard()
        check_onboarded(first, fresh=True)
        login = first.login
        # The login the demo prints signs in (Home Assistant's own login flow).
        assert login is not None
        assert HaSession.log_in(first.ha_url, login).get("/api/config")[0] == 200
    finally:
        first.stop()
        show_logs(first)

    # --keep: the same owner and password, on other ports; nothing onboarded again.
    again = new_demo(tmp_path / "demo")
    try:
        again.prepare(keep=True)
        again.start_hass()
        again.onboard()
        check_onboarded(again, fresh=False)
        assert again.login == login
    finally:
        again.stop()
        show_logs(again)


def test_no_event_lost_or_duplicated_across_a_storage_outage(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The entry reaches the services by host name; they listen on 127.0.0.1 only.
    entries = json.loads((demo.ha_dir / ".storage" / "core.config_entries").read_text())
    (entry,) = [e for e in entries["data"]["entries"] if e["domain"] == "ha_ingestor"]
    assert entry["data"]["storage_url"] == f"http://localhost:{demo.ports.storage}"
    assert entry["data"]["enrichment_url"] == f"http://localhost:{demo.ports.enrichment}"
    assert "--host 127.0.0.1" in shlex.join(demo.storage.argv)

    # State changes arrive, with the template weather entity's weather.
    def counter_with_weather() -> list[dict[str, Any]]:
        events = demo.stored_events(limit=5, entity_id=COUNTER_ENTITY)
        return [event for event in events if event.get("weather_condition")]

    events = wait_for("counter events with weather in storage", counter_with_weather, 60)
    for event in events:
        assert event["weather_condition"] in CONDITIONS
        assert isinstance(event["weather_temp_c"], float)
        assert isinstance(event["weather_humidity"], float)
        assert isinstance(event["weather_pressure_hpa"], float)
        assert event["event_type"] == "state_changed"
        assert event["domain"] == "input_number"
    assert demo.stored_events(limit=1, entity_id=WEATHER_ENTITY)

    # Storage stops (as `kill PID` would stop it): the demo reports it, Home Assistant
    # runs on, the enrichment answers 503 and the events wait in the outbox.
    before = counter_values(demo)[-1]
    storage_pid = demo.storage.pid
    assert storage_pid is not None
    os.kill(storage_pid, 15)
    stopped = wait_for("the demo to notice storage stopped", demo.watch_services, 30)
    assert stopped == [Change("storage", running=False, pid=storage_pid, exit_code=0)]
    wait_for(
        "events queued in the integration's outbox",
        lambda: (queued := demo.queued_in_ha()) is not None and queued[0] > 0,
        OUTAGE_S + 10,
    )
    time.sleep(OUTAGE_S)
    assert demo.hass is not None
    assert demo.hass.running()
    assert demo.enrichment.pid is not None
    assert demo.enrichment_health() != "healthy"  # it reports storage down

    # Storage started again by hand with the command the demo prints (as typed where the
    # demo runs: inside the latest leg's Debian root there is no root to enter).
    monkeypatch.delenv("HA_INGESTOR_ROOT_DIR", raising=False)
    command = demo.storage.start_command(demo.token)
    with (demo.logs_dir / "storage-by-hand.log").open("w") as log:
        by_hand = subprocess.Popen(command, shell=True, stdout=log, stderr=subprocess.STDOUT)
    try:
        demo.wait_healthy(demo.storage_url, 30)
        back = wait_for("the demo to find storage running again", demo.watch_services, 30)
        assert [(change.service, change.running) for change in back] == [("storage", True)]
        assert demo.storage.pid == back[0].pid
        target = before + OUTAGE_S + 5
        seen: dict[str, Any] = {}

        def drained() -> bool:
            values = counter_values(demo)
            seen.update(last_counter=values[-1] if values else None, outbox=demo.queued_in_ha())
            return bool(values) and values[-1] >= target and seen["outbox"] == (0, 0)

        wait_for(
            lambda: f"the counter stored past {target:.0f} and the outbox empty (seen: {seen})",
            drained,
            60,
        )
        demo.stop_hass()
        assert demo.queued_in_ha() == (0, 0)  # delivered everything before it stopped

        # Every value from the first stored to the last exactly once, by value and event.
        stored = rows(
            demo.sqlite_path,
            "SELECT state, event_id FROM events WHERE entity_id = ? ORDER BY time_ns",
            COUNTER_ENTITY,
        )
        values = [int(float(state)) for state, _ in stored]
        assert values == list(range(values[0], values[-1] + 1))
        assert values[-1] >= target
        assert len({event_id for _, event_id in stored}) == len(stored)
        problems = demo.ha_log_problems()
        assert not [line for line in problems if " ERROR " in line], problems

        # The demo stops the storage it did not start, too.
        demo.stop_services()
        assert by_hand.wait(30) == 0
    finally:
        if by_hand.poll() is None:
            by_hand.kill()
            by_hand.wait()


def test_the_start_command_enters_the_debian_root_from_the_host(
    socket_enabled: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the latest leg the demo runs inside scripts/_root.sh's root; the command it
    prints is typed outside it."""
    demo = new_demo(tmp_path / "demo")
    monkeypatch.delenv("HA_INGESTOR_ROOT_DIR", raising=False)
    inside = demo.storage.start_command("t0ken")
    assert inside == f"HA_INGESTOR_TOKEN=t0ken {shlex.join(demo.storage.argv)}"
    monkeypatch.setenv("HA_INGESTOR_ROOT_DIR", "/var/cache/ha-ingestor/forky")
    outside = shlex.split(demo.storage.start_command("t0ken"))
    assert outside == [
        "chroot",
        "/var/cache/ha-ingestor/forky",
        "/usr/bin/env",
        "-i",
        "HA_INGESTOR_TOKEN=t0ken",
        *demo.storage.argv,
    ]
    assert demo.storage.argv[1:] == [
        "storage",
        *("--host", "127.0.0.1", "--port", str(demo.ports.storage)),
        *("--backend", "sqlite", "--sqlite-path", str(demo.sqlite_path)),
    ]
