"""Moving from Home Assistant's influxdb integration, with real parts (issue 13).

Home Assistant's own ``influxdb`` integration and HA Ingestor, in one Home Assistant,
take the same state changes side by side: the integration writes its database, HA
Ingestor sends to a storage service (in this process, on loopback) writing
``--influx-layout home_assistant`` into another database of the same real influxd.
``ha-ingestor-services migrate verify`` (a real process) finds no difference between the
two; then a deleted point, an extra point and a changed value, planted in the new
database, are each found.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from homeassistant.util import dt as dt_util

from benchmarks.ha import setup_influxdb
from benchmarks.influxd import Influxd
from custom_components.ha_ingestor.const import CONF_BATCH_SIZE
from ha_ingestor_services.limits import Limits
from ha_ingestor_services.storage.service import StorageService
from ha_ingestor_services.storage.settings import StorageSettings
from ha_ingestor_services.web import create_app
from tests.integration.common import make_entry, setup_entry, unload
from tests.integration.conftest import TOKEN
from tests.services.conftest import influxd_server  # noqa: F401 - the shared influxd

if TYPE_CHECKING:
    from homeassistant.core import HomeAssistant

# The influxdb integration's client library uses a datetime call Python deprecates.
pytestmark = pytest.mark.filterwarnings(
    "ignore:datetime.datetime.utcfromtimestamp:DeprecationWarning"
)

ROOT = Path(__file__).resolve().parents[2]
CELSIUS = {"unit_of_measurement": "°C", "friendly_name": "Kitchen", "device_class": "temperature"}
# Numbers with a unit, text states, attributes of several kinds: what dashboards read.
CHANGES: list[tuple[str, str, dict[str, Any]]] = [
    *[(f"sensor.kitchen_{n}", f"{20 + n / 10:.1f}", CELSIUS) for n in range(4)],
    ("sensor.kitchen_0", "21.75", CELSIUS),
    ("binary_sensor.door", "on", {"device_class": "door", "friendly_name": "Door"}),
    ("binary_sensor.door", "off", {"device_class": "door", "friendly_name": "Door"}),
    ("light.desk", "on", {"brightness": 180, "color_mode": "brightness", "friendly_name": "Desk"}),
    ("sensor.power", "1234", {"unit_of_measurement": "W", "state_class": "measurement"}),
    ("input_text.note", "hello world", {"mode": "text", "max": 100}),
]
# HA Ingestor does not send its own entities' states (the influxdb integration does).
ENTITIES = sorted({entity_id for entity_id, _, _ in CHANGES})


async def _storage(influxd: Influxd, database: str) -> AsyncIterator[str]:
    settings = StorageSettings(
        backend="influxdb",
        influx_api="v1",
        influx_url=influxd.url,
        influx_database=database,
        influx_layout="home_assistant",
    )
    runner = web.AppRunner(create_app(StorageService(settings), token=TOKEN, limits=Limits()))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _points(influxd: Influxd, database: str) -> int:
    """The points of ``ENTITIES`` (each has a value or a state field)."""
    names = "|".join(entity_id.split(".", 1)[1] for entity_id in ENTITIES)
    query = f'SELECT count(*) FROM /.*/ WHERE "entity_id" =~ /^({names})$/ GROUP BY "entity_id"'
    series = influxd.query(database, query)["results"][0].get("series", [])  # type: ignore[index]
    return sum(max(v for v in row["values"][0][1:] if v is not None) for row in series)


async def _settled(hass: HomeAssistant, influxd: Influxd, database: str, at_least: int) -> int:
    """Wait until ``database`` holds at least ``at_least`` points and stops growing."""
    last, stable_since = -1, time.monotonic()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        count = await hass.async_add_executor_job(_points, influxd, database)
        if count != last:
            last, stable_since = count, time.monotonic()
        elif count >= at_least and time.monotonic() - stable_since > 1.5:
            return count
        await asyncio.sleep(0.25)
    raise AssertionError(f"{database} holds {last} points, expected at least {at_least}")


def _verify(influxd: Influxd, old: str, new: str, start: str) -> tuple[int, dict[str, Any], str]:
    command = [
        sys.executable,
        "-m",
        "ha_ingestor_services",
        "migrate",
        "verify",
        "--json",
        f"--start={start}",
        f"--from-url={influxd.url}",
        f"--from-database={old}",
        f"--to-url={influxd.url}",
        f"--to-database={new}",
        "--to-layout=home_assistant",
        *(f"--entity={entity_id}" for entity_id in [*ENTITIES, "sensor.kitchen_9"]),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )
    report = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, report, done.stderr


def _post(influxd: Influxd, path: str, body: str) -> None:
    request = urllib.request.Request(f"{influxd.url}{path}", data=body.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def _write(influxd: Influxd, database: str, line: str) -> None:
    _post(influxd, f"/write?db={database}&precision=u", line)


def _delete(influxd: Influxd, database: str, statement: str) -> None:
    _post(influxd, f"/query?{urllib.parse.urlencode({'db': database, 'q': statement})}", "")


def _totals(report: dict[str, Any]) -> dict[str, int]:
    return {kind: report["totals"][kind] for kind in ("missing", "extra", "differing")}


async def test_side_by_side_agree_then_planted_differences_are_found(
    hass: HomeAssistant,
    influxd_server: Influxd,  # noqa: F811
    socket_enabled: None,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    old, new = f"home_assistant_{suffix}", f"home_assistant_ingestor_{suffix}"
    start = (dt_util.utcnow() - timedelta(seconds=5)).isoformat()
    await setup_influxdb(hass, influxd_server, old)
    storage = _storage(influxd_server, new)
    url = await anext(storage)
    entry = make_entry(url, **{CONF_BATCH_SIZE: 500})
    await setup_entry(hass, entry)

    for entity_id, state, attributes in CHANGES:
        hass.states.async_set(entity_id, state, attributes)
        await asyncio.sleep(0.01)  # each change its own moment, as in a home
    await hass.async_block_till_done()
    flushed = await entry.runtime_data.runtime.forwarder.flush(timeout=30)
    assert flushed.done, flushed
    points = await _settled(hass, influxd_server, old, len(CHANGES))
    assert await _settled(hass, influxd_server, new, len(CHANGES)) == points

    code, report, errors = await hass.async_add_executor_job(
        _verify, influxd_server, old, new, start
    )
    assert (code, _totals(report)) == (0, {"missing": 0, "extra": 0, "differing": 0}), errors

    # Plant one of each in the new database: a deleted point, an extra one, a changed value.
    await hass.async_add_executor_job(
        _delete, influxd_server, new, 'DELETE FROM "W" WHERE "entity_id" = \'power\''
    )
    moment = int(dt_util.utcnow().timestamp() * 1_000_000) - 1_000_000
    extra = f"°C,domain=sensor,entity_id=kitchen_9 value=30.5 {moment}"
    await hass.async_add_executor_job(_write, influxd_server, new, extra)
    changed = await hass.async_add_executor_job(
        influxd_server.query,
        new,
        'SELECT last("value") FROM "°C" WHERE "entity_id" = \'kitchen_1\'',
    )
    when = changed["results"][0]["series"][0]["values"][0][0]  # type: ignore[index]
    stamp = int(dt_util.parse_datetime(when).timestamp() * 1_000_000)  # type: ignore[union-attr]
    await hass.async_add_executor_job(
        _write, influxd_server, new, f"°C,domain=sensor,entity_id=kitchen_1 value=99.0 {stamp}"
    )

    code, report, errors = await hass.async_add_executor_job(
        _verify, influxd_server, old, new, start
    )
    assert code == 1, errors
    assert _totals(report) == {"missing": 1, "extra": 1, "differing": 1}
    by_entity = {item["entity_id"]: item for item in report["entities"]}
    assert by_entity["sensor.power"]["missing"] == 1
    assert by_entity["sensor.kitchen_9"]["extra"] == 1
    assert by_entity["sensor.kitchen_1"]["differing"] == 1

    await unload(hass, entry)
    await storage.aclose()
