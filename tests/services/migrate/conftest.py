"""Fixtures of the ``migrate verify`` tests: the same states in both layouts, and a runner.

Home Assistant's layout is written by Home Assistant's own code (its influxdb
integration's ``event_to_json`` and the influxdb client's line protocol); ours by a
storage service on InfluxDB or SQLite.
"""

from __future__ import annotations

import asyncio
import io
import urllib.parse
import urllib.request
import uuid
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from homeassistant.const import EVENT_STATE_CHANGED
from homeassistant.core import Event, State

from benchmarks.influxd import Influxd
from ha_ingestor_services.cli import build_parser
from ha_ingestor_services.migrate.command import run
from tests.services.storage.conftest import (  # noqa: F401 (fixtures)
    envelope,
    influx_settings,
    post_batch,
    start_storage,
)

with warnings.catch_warnings():
    # influxdb 5.3.1 calls datetime.utcfromtimestamp at import: not ours to fix.
    warnings.simplefilter("ignore", DeprecationWarning)
    from homeassistant.components.influxdb import INFLUX_SCHEMA, _generate_event_to_json
    from influxdb.line_protocol import make_lines

_EVENT_TO_JSON = _generate_event_to_json(INFLUX_SCHEMA({}))

# (entity, attributes, states): numeric with a unit, on/off, text, a unit that changes.
STATES: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "sensor.temperature",
        {"unit_of_measurement": "°C", "device_class": "temperature"},
        ["21.5", "21.75", "22", "unavailable", "22.5", "22.50", "-3"],
    ),
    ("binary_sensor.door", {"device_class": "door"}, ["on", "off", "on", "off"]),
    ("sensor.mode", {"friendly_name": "Mode"}, ["eco", "comfort", "unknown", "eco", "away"]),
    ("light.kitchen", {"brightness": 128}, ["on", "off", "on"]),
]


@dataclass(frozen=True, slots=True)
class State_:
    entity_id: str
    state: str
    attributes: dict[str, Any]
    when: datetime  # as Home Assistant's event has it (microseconds)


def sample_states(count_power: int = 0) -> list[State_]:
    """`STATES` a few seconds apart within the last hour, plus ``count_power`` power readings
    whose unit turns from W to kW half-way (two measurements in Home Assistant's layout)."""
    base = datetime.now(UTC) - timedelta(minutes=50)
    states: list[State_] = []
    step = 0
    for entity_id, attributes, values in STATES:
        for value in values:
            step += 1
            moment = base + timedelta(seconds=7 * step, microseconds=123_457 * step % 999_999)
            states.append(State_(entity_id, value, attributes, _fired(moment)))
    for index in range(count_power):
        unit = "W" if index < count_power // 2 else "kW"
        moment = base + timedelta(seconds=3 * index + 1, microseconds=777 * index)
        states.append(
            State_("sensor.power", str(index * 10), {"unit_of_measurement": unit}, _fired(moment))
        )
    return states


def _fired(moment: datetime) -> datetime:
    """The time Home Assistant's event holds for ``moment`` (fired at its timestamp)."""
    time_fired: datetime = _event(State_("sensor.x", "1", {}, moment)).time_fired
    return time_fired


def _event(state: State_) -> Event[Any]:
    new_state = State(state.entity_id, state.state, state.attributes)
    return Event(
        EVENT_STATE_CHANGED,
        {"entity_id": state.entity_id, "new_state": new_state},
        time_fired_timestamp=state.when.timestamp(),
    )


def home_assistant_lines(states: list[State_]) -> str:
    """Line protocol exactly as Home Assistant's influxdb integration writes the states."""
    points = [point for point in (_EVENT_TO_JSON(_event(state)) for state in states) if point]
    text: str = make_lines({"points": points})
    return text


def envelopes(states: list[State_]) -> list[dict[str, Any]]:
    """The same states as the integration's envelopes."""
    return [
        envelope(state.entity_id, state.state, when=state.when, event_id=str(uuid.uuid4()))
        | {"data": _data(state)}
        for state in states
    ]


def _data(state: State_) -> dict[str, Any]:
    return {
        "event_type": "state_changed",
        "entity_id": state.entity_id,
        "state": state.state,
        "attributes": state.attributes,
        "context": {"id": "ctx", "user_id": None, "parent_id": None},
    }


def write_lines(server: Influxd, database: str, lines: str, rp: str | None = None) -> None:
    params = {"db": database, "precision": "ns"} | ({"rp": rp} if rp else {})
    url = f"{server.url}/write?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, data=lines.encode(), timeout=10):
        pass


def home_assistant_database(server: Influxd, states: list[State_]) -> str:
    database = f"ha_{uuid.uuid4().hex[:10]}"
    server.create_database(database)
    write_lines(server, database, home_assistant_lines(states))
    return database


async def store_all(client: aiohttp.ClientSession, url: str, events: list[dict[str, Any]]) -> None:
    status, body = await post_batch(client, url, events)
    assert status == 200
    assert {result["status"] for result in body["results"]} == {"stored"}


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    out: str
    err: str


async def verify(*argv: str) -> Outcome:
    """Run ``ha-ingestor-services migrate verify ARGV`` (in a thread: it runs its own loop)."""
    args = build_parser().parse_args(["migrate", "verify", *argv])
    out, err = io.StringIO(), io.StringIO()
    status = await asyncio.to_thread(run, args, out, err)
    return Outcome(status, out.getvalue(), err.getvalue())


def window(states: list[State_]) -> list[str]:
    start = min(state.when for state in states) - timedelta(seconds=1)
    end = max(state.when for state in states) + timedelta(seconds=1)
    return ["--start", start.isoformat(), "--end", end.isoformat()]
