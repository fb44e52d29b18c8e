"""The demo's pipeline end to end: ``hass`` with HA Ingestor → enrichment → storage.

It runs what ``scripts/demo`` runs (the same driver, `scripts/demo.py`), with storage and
the enrichment as separate processes so storage alone can be stopped: state changes
arrive with the weather of the demo's template weather entity, and across a storage
outage every value of a counter that goes up once a second is stored exactly once.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sqlite3
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


@pytest.fixture
def demo(socket_enabled: None, tmp_path: Path) -> Iterator[Demo]:
    ports, _ = pick_ports(Ports(0, 0, 0))
    demo = Demo(
        workdir=tmp_path / "demo", ports=ports, split_services=True, integration_log_level="debug"
    )
    try:
        demo.prepare()
        demo.start_services()
        demo.start_hass()
        yield demo
    finally:
        demo.stop()
        # Shown when the test fails: what each part logged last.
        for log in (demo.ha_log, *sorted(demo.logs_dir.glob("*.log"))):
            print(f"--- {log}:\n{tail(log, 60)}")


def counter_values(demo: Demo) -> list[int]:
    """The counter's values in storage, oldest first (through the query API)."""
    events = demo.stored_events(limit=10_000, entity_id=COUNTER_ENTITY)
    return [int(float(event["state"])) for event in reversed(events)]


def test_no_event_lost_or_duplicated_across_a_storage_outage(demo: Demo) -> None:
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

    # Storage goes away: the enrichment answers 503 and the events wait in the outbox.
    before = counter_values(demo)[-1]
    demo.stop_storage()
    wait_for(
        "events queued in the integration's outbox",
        lambda: (queued := demo.queued_in_ha()) is not None and queued[0] > 0,
        OUTAGE_S + 10,
    )
    time.sleep(OUTAGE_S)
    assert demo.enrichment_health() != "healthy"  # it reports storage down

    # Storage comes back on the same file: the backlog drains, newer events follow.
    demo.start_storage()
    demo.wait_healthy(demo.storage_url, 30)
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

    # Every value from the first stored to the last exactly once, by value and by event.
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
