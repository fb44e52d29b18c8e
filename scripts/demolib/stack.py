"""`Demo`: a work folder, the two services on SQLite, and a Home Assistant sending to them.

``scripts/demo`` and ``tests/e2e`` drive it. Everything lives in the work folder: the
SQLite file, Home Assistant's configuration folder (``ha/``), the logs, the owner's
login and the pids of what runs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sqlite3
import sys
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from custom_components.ha_ingestor.pipeline.envelope import EVENTS_PATH, HEALTH_PATH, STATS_PATH
from scripts.demolib import DemoError
from scripts.demolib.client import http_get
from scripts.demolib.ha_config import (
    REPO,
    entry_data_and_options,
    seed_config_entry,
    write_config_folder,
)
from scripts.demolib.onboarding import LOGIN_FILE, HaSession, Login, check_metric, onboard
from scripts.demolib.ports import HOST, Ports
from scripts.demolib.processes import Child, remember, start_child
from scripts.demolib.services import Change, ServiceProcess

BIN = Path(sys.executable).parent
SERVICES_START_TIMEOUT = 30.0
HA_START_TIMEOUT = 240.0

# The forwarder's entities the progress line shows (named by their device and key).
STATUS_ENTITY = "sensor.ha_ingestor_forwarder_status"
PROBLEM_ENTITY = "binary_sensor.ha_ingestor_forwarder_delivery_problem"


@dataclass
class Demo:
    """A work folder, the services on SQLite, and a Home Assistant sending to them."""

    workdir: Path
    ports: Ports
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    # The host name the config entry reaches the services by: a name, not an address,
    # so Home Assistant's resolver is part of every run (the services listen on HOST).
    entry_host: str = "localhost"
    integration_log_level: str = "info"  # custom_components.ha_ingestor in HA's log
    # False: no HA Ingestor entry is written, to be added in the UI (tests/e2e's UI walk);
    # entry_id stays "" until `find_entry` reads the entry made there.
    seed_entry: bool = True
    history: bool = False  # True: Home Assistant records history (dashboards' graphs)
    entry_id: str = ""
    hass: Child | None = None
    hass_exit_code: int | None = None
    login: Login | None = None
    session: HaSession | None = None
    storage: ServiceProcess = field(init=False)
    enrichment: ServiceProcess = field(init=False)

    def __post_init__(self) -> None:
        command = [str(BIN / "ha-ingestor-services")]
        self.storage = ServiceProcess(
            "storage",
            [
                *command,
                "storage",
                *("--host", HOST, "--port", str(self.ports.storage)),
                *("--backend", "sqlite", "--sqlite-path", str(self.sqlite_path)),
            ],
            self.ports.storage,
            self.logs_dir / "storage.log",
        )
        self.enrichment = ServiceProcess(
            "enrichment",
            [
                *command,
                "enrichment",
                *("--host", HOST, "--port", str(self.ports.enrichment)),
                *("--storage-url", self.storage_url),
                # Its id file in the work folder, with everything else of the demo's.
                *("--state-dir", str(self.workdir / "state")),
            ],
            self.ports.enrichment,
            self.logs_dir / "enrichment.log",
        )

    # where things are

    @property
    def ha_dir(self) -> Path:
        return self.workdir / "ha"

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def sqlite_path(self) -> Path:
        return self.workdir / "events.db"

    @property
    def login_path(self) -> Path:
        return self.workdir / LOGIN_FILE

    @property
    def ha_url(self) -> str:
        return f"http://{HOST}:{self.ports.ha}"

    @property
    def storage_url(self) -> str:
        return f"http://{HOST}:{self.ports.storage}"

    @property
    def enrichment_url(self) -> str:
        return f"http://{HOST}:{self.ports.enrichment}"

    @property
    def ha_log(self) -> Path:
        return self.ha_dir / "home-assistant.log"

    @property
    def outbox_path(self) -> Path:
        return self.ha_dir / ".storage" / "ha_ingestor" / f"outbox_{self.entry_id}.db"

    @property
    def services(self) -> tuple[ServiceProcess, ServiceProcess]:
        """Storage first: the enrichment depends on it."""
        return self.storage, self.enrichment

    @property
    def exit_codes(self) -> dict[str, int | None]:
        codes = {service.name: service.exit_code for service in self.services}
        return {"Home Assistant": self.hass_exit_code, **codes}

    # set-up

    def prepare(self, *, keep: bool = False) -> None:
        """A fresh work folder (unless keep) with Home Assistant's configuration in it."""
        if not keep and self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        write_config_folder(
            self.ha_dir,
            host=HOST,
            port=self.ports.ha,
            integration_log_level=self.integration_log_level,
            history=self.history,
        )
        if not self.seed_entry:
            return
        data, options = entry_data_and_options(
            f"http://{self.entry_host}:{self.ports.storage}",
            f"http://{self.entry_host}:{self.ports.enrichment}",
            self.token,
        )
        self.entry_id = seed_config_entry(self.ha_dir / ".storage", data, options)

    def find_entry(self) -> str:
        """The id of the HA Ingestor entry Home Assistant has (one made in the UI too);
        "" when it has none."""
        if self.session is None:
            return ""
        status, entries = self.session.get("/api/config/config_entries/entry")
        if status == 200 and isinstance(entries, list):
            for entry in entries:
                if entry.get("domain") == "ha_ingestor":
                    self.entry_id = str(entry["entry_id"])
                    return self.entry_id
        return ""

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["HA_INGESTOR_TOKEN"] = self.token
        env.pop("HA_INGESTOR_PORT", None)  # the ports come as flags
        return env

    def _remember(self, pid: int) -> None:
        remember(self.workdir, pid)

    # the services

    def start_services(self, timeout: float = SERVICES_START_TIMEOUT) -> None:
        """Start storage, then the enrichment; return when both answer health with 200."""
        self.start_storage(timeout)
        self.enrichment.start(self._env(), REPO, self._remember)
        self.wait_healthy(self.enrichment_url, timeout)

    def start_storage(self, timeout: float = SERVICES_START_TIMEOUT) -> None:
        """Start the storage service (again), on the same port and SQLite file."""
        self.storage.start(self._env(), REPO, self._remember)
        self.wait_healthy(self.storage_url, timeout)

    def stop_storage(self) -> int | None:
        """Stop the storage service alone; its exit code."""
        return self.storage.stop()

    def stop_services(self) -> None:
        """The enrichment first (it hands storage what it holds), storage last."""
        self.enrichment.stop()
        self.storage.stop()

    def watch_services(self) -> list[Change]:
        """Services that stopped or came back since the last call."""
        changes = [service.watch(self._remember) for service in self.services]
        return [change for change in changes if change is not None]

    def wait_healthy(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            for service in self.services:
                child = service.child
                if child is not None and not child.running():
                    raise DemoError(
                        f"the {service.name} process exited with code {child.process.returncode}",
                        child.log,
                    )
            try:
                status, body = http_get(url + HEALTH_PATH, timeout=2.0)
            except OSError as err:
                last = str(err)
            else:
                if status == 200:
                    return
                last = f"HTTP {status}: {body}"
            time.sleep(0.2)
        logs = [service.log for service in self.services if service.child is not None]
        raise DemoError(
            f"{url}{HEALTH_PATH} did not answer 200 within {timeout:.0f} s ({last})",
            logs[-1] if logs else None,
        )

    # Home Assistant

    def start_hass(self, timeout: float = HA_START_TIMEOUT) -> None:
        """Start ``hass`` on the work folder; return when its HTTP server answers."""
        self.hass = start_child(
            "Home Assistant",
            [str(BIN / "hass"), "-c", str(self.ha_dir), "--skip-pip"],
            self.logs_dir / "hass-console.log",
            self._env(),
            REPO,
        )
        self._remember(self.hass.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.hass.running():
                raise DemoError(
                    f"Home Assistant exited with code {self.hass.process.returncode}",
                    self.hass.log,
                )
            try:
                http_get(self.ha_url + "/manifest.json", timeout=2.0)
            except OSError:
                time.sleep(0.5)
            else:
                return
        raise DemoError(
            f"Home Assistant did not answer on {self.ha_url} within {timeout:.0f} s",
            self.ha_log if self.ha_log.exists() else self.hass.log,
        )

    def onboard(self) -> list[str]:
        """Finish onboarding (owner account) unless done; sign in. Notes on what to know."""
        try:
            result = onboard(self.ha_url, self.login_path)
        except OSError as err:
            raise DemoError(f"Home Assistant's onboarding: {err}", self.ha_log) from None
        self.login, self.session = result.login, result.session
        if self.session is not None:
            try:
                check_metric(self.session)
            except DemoError as err:
                if result.fresh:
                    raise
                # A kept Home Assistant: its units may have been changed on purpose.
                result.notes.append(f"{err}; a run without --keep starts with metric units")
        return result.notes

    def stop_hass(self) -> int | None:
        if self.hass is None:
            return None
        if self.session is not None:
            with contextlib.suppress(OSError):
                self.session.revoke()
            self.session = None
        self.hass_exit_code = self.hass.stop(timeout=60.0)
        self.hass = None
        return self.hass_exit_code

    def stop(self) -> None:
        """Home Assistant first (it delivers what it can), then the services."""
        try:
            self.stop_hass()
        finally:
            self.stop_services()

    # what arrived

    def storage_stats(self) -> dict[str, Any] | None:
        try:
            status, body = http_get(self.storage_url + STATS_PATH, self.token)
        except OSError:
            return None
        return body if status == 200 and isinstance(body, dict) else None

    def stored_events(self, limit: int = 2, **query: str) -> list[dict[str, Any]]:
        """The newest stored events (newest first) from the query API; [] when unreachable."""
        params = urllib.parse.urlencode({"limit": str(limit), **query})
        try:
            status, body = http_get(
                f"{self.storage_url}{EVENTS_PATH}?{params}", self.token, timeout=10.0
            )
        except OSError:
            return []
        if status != 200 or not isinstance(body, dict):
            return []
        events: list[dict[str, Any]] = body.get("events", [])
        return events

    def enrichment_health(self) -> str:
        try:
            status, body = http_get(self.enrichment_url + HEALTH_PATH, timeout=2.0)
        except OSError:
            return "unreachable"
        if isinstance(body, dict):
            return str(body.get("status", f"HTTP {status}"))
        return f"HTTP {status}"

    def ha_states(self, entity_ids: Sequence[str]) -> dict[str, str]:
        """The states of these entities in Home Assistant (those it has; none unsigned)."""
        states: dict[str, str] = {}
        if self.session is None:
            return states
        for entity_id in entity_ids:
            try:
                status, body = self.session.get(f"/api/states/{entity_id}")
            except OSError:
                break
            if status == 200 and isinstance(body, dict):
                states[entity_id] = str(body.get("state"))
        return states

    def count_stored(self) -> int | None:
        """Rows in the SQLite file (also when the services are stopped)."""
        return _count(self.sqlite_path, "SELECT count(*) FROM events")

    def count_with_weather(self) -> int | None:
        """Stored rows that carry the weather."""
        return _count(
            self.sqlite_path, "SELECT count(*) FROM events WHERE weather_condition IS NOT NULL"
        )

    def queued_in_ha(self) -> tuple[int, int] | None:
        """(queued, dead letters) in the integration's outbox file; None without one."""
        queued = _count(self.outbox_path, "SELECT count(*) FROM outbox")
        dead = _count(self.outbox_path, "SELECT count(*) FROM dead_letters")
        if queued is None:
            return None
        return queued, dead or 0

    def ha_log_problems(self) -> list[str]:
        """Warning and error lines about ha_ingestor in Home Assistant's log.

        Home Assistant's standing warning about any custom integration is left out.
        """
        try:
            lines = self.ha_log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []
        return [
            line
            for line in lines
            if "ha_ingestor" in line
            and (" ERROR " in line or " WARNING " in line)
            and "which has not been tested by Home Assistant" not in line
        ]


def _count(path: Path, sql: str) -> int | None:
    if not path.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            db.execute("PRAGMA busy_timeout = 2000")
            value: int = db.execute(sql).fetchone()[0]
    except sqlite3.Error:
        return None
    return value
