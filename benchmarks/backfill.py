"""scripts/bench backfill: replaying the recorder's history through HA Ingestor.

A recorder database of ``--states`` state changes (default 1,000,000 over 100 entities)
is built once with Home Assistant's own recorder and kept in a cache folder outside the
checkout (``$HA_INGESTOR_CACHE`` or /var/cache/ha-ingestor/bench), keyed by the Home
Assistant version and the count. Each run copies it into a fresh Home Assistant test core,
sets up HA Ingestor (gap filling off) to a local sink, calls ``ha_ingestor.backfill`` over
the whole window and waits for ``ha_ingestor_backfill_finished``. Measured:

- ``backfill_per_s``: recorded states delivered per second, from the call to the finished
  event, counted at the sink (distinct event ids);
- ``max_loop_lag_ms``: the worst lateness of a 10 ms timer on the event loop meanwhile
  (how long Home Assistant's loop was held at once);
- ``lost``: recorded states in the window that did not reach the sink.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from homeassistant import loader
from homeassistant.components.recorder import get_instance
from homeassistant.const import __version__ as HA_VERSION
from homeassistant.core import Event, HomeAssistant
from homeassistant.helpers import recorder as recorder_helper
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_test_home_assistant,
)

import custom_components.ha_ingestor  # noqa: F401 - makes the integration importable
from custom_components.ha_ingestor.const import (
    CONF_API_TOKEN,
    CONF_GAP_FILL,
    CONF_STORAGE_URL,
    CONF_VERIFY_SSL,
    DOMAIN,
)

from .influxd import free_port
from .report import print_table
from .sink import distinct_ids, running_sink

STATES = 1_000_000
ENTITIES = 100
FINISHED = f"{DOMAIN}_backfill_finished"
TARGETS = {"backfill_per_s": (">=", 20_000), "max_loop_lag_ms": ("<=", 50), "lost": ("<=", 0)}


def _cache_folder() -> Path:
    folder = Path(os.environ.get("HA_INGESTOR_CACHE", "/var/cache/ha-ingestor")) / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def _recorder(hass: HomeAssistant, db: Path) -> None:
    # What Home Assistant's bootstrap does before any integration is set up.
    recorder_helper.async_initialize_recorder(hass)
    config = {"db_url": f"sqlite:///{db}", "commit_interval": 1, "purge_keep_days": 3650}
    assert await async_setup_component(hass, "recorder", {"recorder": config})
    await hass.async_block_till_done()


async def _recorder_done(hass: HomeAssistant) -> None:
    await hass.async_add_executor_job(get_instance(hass).block_till_done)


async def _build(db: Path, states: int) -> dict[str, str]:
    """Record ``states`` state changes (round robin over the entities); returns the window."""
    with tempfile.TemporaryDirectory(prefix="bench-backfill-build-") as config_dir:
        async with async_test_home_assistant(config_dir=config_dir) as hass:
            await _recorder(hass, db)
            start = dt_util.utcnow()
            attributes = {"unit_of_measurement": "°C", "friendly_name": "Bench temperature"}
            for index in range(states):
                hass.states.async_set(f"sensor.backfill_{index % ENTITIES}", str(index), attributes)
                if index % 5_000 == 4_999:
                    await _recorder_done(hass)  # keep the recorder's queue short
                    print(f"\rrecorded {index + 1:,} of {states:,}", end="", flush=True)
            await _recorder_done(hass)
            end = dt_util.utcnow() + timedelta(seconds=1)
            print()
            await hass.async_stop(force=True)
    return {"start": start.isoformat(), "end": end.isoformat()}


async def _recorded_db(states: int) -> tuple[Path, dict[str, str]]:
    folder = _cache_folder()
    db = folder / f"recorder-{HA_VERSION}-{states}.db"
    window_file = db.with_suffix(".json")
    if not (db.exists() and window_file.exists()):
        partial = db.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        window = await _build(partial, states)
        partial.replace(db)
        window_file.write_text(json.dumps(window))
    return db, json.loads(window_file.read_text())


class _LoopLag:
    """The worst lateness of a 10 ms timer on the running loop."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.01
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, loop.time() - due)

    def __enter__(self) -> _LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def run(states: int) -> dict[str, float]:
    db, window = await _recorded_db(states)
    with (
        tempfile.TemporaryDirectory(prefix="bench-backfill-") as config_dir,
        running_sink(free_port()) as sink,
    ):
        copy = Path(config_dir) / "home-assistant_v2.db"
        shutil.copyfile(db, copy)
        async with async_test_home_assistant(config_dir=config_dir) as hass:
            hass.data.pop(loader.DATA_CUSTOM_COMPONENTS)
            await _recorder(hass, copy)
            http = {"server_host": ["127.0.0.1"], "server_port": free_port()}
            assert await async_setup_component(hass, "http", {"http": http})
            data = {CONF_STORAGE_URL: sink, CONF_API_TOKEN: "bench", CONF_VERIFY_SSL: True}
            entry = MockConfigEntry(domain=DOMAIN, data=data, options={CONF_GAP_FILL: False})
            entry.add_to_hass(hass)
            assert await hass.config_entries.async_setup(entry.entry_id)
            await hass.async_block_till_done()
            finished: asyncio.Future[Event[Any]] = asyncio.get_running_loop().create_future()

            def _finished(event: Event[Any]) -> None:
                if not finished.done():
                    finished.set_result(event)

            hass.bus.async_listen(FINISHED, _finished)
            before = distinct_ids(sink)
            with _LoopLag() as lag:
                started = time.monotonic()
                await hass.services.async_call(DOMAIN, "backfill", window, blocking=True)
                outcome = await asyncio.wait_for(finished, timeout=3600)
                await entry.runtime_data.runtime.forwarder.flush(timeout=600)
                elapsed = time.monotonic() - started
            delivered = distinct_ids(sink) - before
            await hass.config_entries.async_unload(entry.entry_id)
            await hass.async_stop(force=True)
    print(f"finished: {dict(outcome.data)}")
    return {
        "states": float(states),
        "backfill_per_s": delivered / elapsed,
        "max_loop_lag_ms": lag.worst * 1000,
        "lost": float(states - delivered),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=STATES, help="recorded state changes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    figures = asyncio.run(run(args.states))
    python = platform.python_version()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {python}")
    print_table(figures, TARGETS, width=22)
    print(json.dumps({name: round(value, 2) for name, value in figures.items()}))


if __name__ == "__main__":
    main()
