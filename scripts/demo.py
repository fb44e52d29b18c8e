"""Run the whole HA Ingestor pipeline on this machine and show events arriving.

A real Home Assistant process with the integration set up (a pre-seeded config entry)
sends the state changes of a few demo helpers, which automations change every second or
few seconds, through the enrichment pipeline into the data storage service on SQLite.
Everything lives in one work folder (default ``.demo/`` in the repository).

    scripts/demo                    # until Ctrl-C
    scripts/demo --duration 60      # a scripted run

The `Demo` class is also what ``tests/e2e`` drives.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"

DEFAULT_HA_PORT = 8123
DEFAULT_ENRICHMENT_PORT = 8002
DEFAULT_STORAGE_PORT = 8004

WEATHER_ENTITY = "weather.home"
COUNTER_ENTITY = "input_number.demo_counter"
HEALTH_PATH = "/api/v1/health"

SERVICES_START_TIMEOUT = 30.0
HA_START_TIMEOUT = 240.0
STOP_TIMEOUT = 40.0


class DemoError(Exception):
    """Something did not start (or stop); the message says what, `log` where to look."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log


# -- ports ---------------------------------------------------------------------------------


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on the port now (as aiohttp does: reuse_address)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    """A port nothing listens on (the system's choice)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass(frozen=True, slots=True)
class Ports:
    """The three ports of a demo run."""

    ha: int
    enrichment: int
    storage: int


def pick_ports(wanted: Ports) -> tuple[Ports, list[str]]:
    """The wanted ports where free (0: any free port), else free ones; and notes on that."""
    notes: list[str] = []
    chosen: dict[str, int] = {}
    for name, port in (
        ("Home Assistant", wanted.ha),
        ("enrichment", wanted.enrichment),
        ("storage", wanted.storage),
    ):
        if port and port not in chosen.values() and port_is_free(port):
            chosen[name] = port
            continue
        new = free_port()
        while new in chosen.values():
            new = free_port()
        if port:
            notes.append(f"port {port} is taken: {name} uses port {new} instead")
        chosen[name] = new
    return Ports(chosen["Home Assistant"], chosen["enrichment"], chosen["storage"]), notes


# -- HTTP ----------------------------------------------------------------------------------


def http_get(url: str, token: str | None = None, timeout: float = 3.0) -> tuple[int, Any]:
    """Status and decoded JSON body (None when not JSON) of a GET; OSError when unreachable."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


# -- Home Assistant's configuration ---------------------------------------------------------

CONFIGURATION_YAML = """\
# Written by scripts/demo: a minimal Home Assistant (no default_config) whose demo
# helpers change every second or few seconds, so state_changed events flow.
homeassistant:
  name: HA Ingestor demo
  latitude: 52.3731
  longitude: 4.8922
  elevation: 2
  unit_system: metric
  time_zone: Europe/Amsterdam
  country: NL
  currency: EUR

http:
  server_host: {host}
  server_port: {port}

logger:
  default: warning
  logs:
    custom_components.ha_ingestor: {integration_log_level}

input_number:
  demo_counter:
    name: Demo counter
    min: 0
    max: 1000000000
    step: 1
    mode: box
  living_room_temperature:
    name: Living room temperature
    min: 10
    max: 30
    step: 0.1
    initial: 21
    unit_of_measurement: "°C"
  living_room_humidity:
    name: Living room humidity
    min: 0
    max: 100
    step: 1
    initial: 50
    unit_of_measurement: "%"
  outdoor_temperature:
    name: Outdoor temperature
    min: -20
    max: 40
    step: 0.1
    initial: 11.5
    unit_of_measurement: "°C"
  outdoor_humidity:
    name: Outdoor humidity
    min: 0
    max: 100
    step: 1
    initial: 87
    unit_of_measurement: "%"
  outdoor_pressure:
    name: Outdoor pressure
    min: 950
    max: 1050
    step: 1
    initial: 1008
    unit_of_measurement: hPa

input_boolean:
  window_open:
    name: Window open
  hall_light:
    name: Hall light

input_select:
  weather_condition:
    name: Weather condition
    options: [sunny, partlycloudy, cloudy, rainy, pouring, fog, windy]
    initial: rainy

template:
  - weather:
      - name: Home
        unique_id: ha_ingestor_demo_weather_home
        condition_template: "{{{{ states('input_select.weather_condition') }}}}"
        temperature_template: "{{{{ states('input_number.outdoor_temperature') | float(0) }}}}"
        humidity_template: "{{{{ states('input_number.outdoor_humidity') | float(0) }}}}"
        pressure_template: "{{{{ states('input_number.outdoor_pressure') | float(0) }}}}"
        temperature_unit: "°C"
        pressure_unit: hPa

automation:
  - id: demo_counter
    alias: "Demo: count every second"
    mode: queued
    triggers:
      - trigger: time_pattern
        seconds: "/1"
    actions:
      - action: input_number.increment
        target:
          entity_id: input_number.demo_counter
  - id: demo_living_room
    alias: "Demo: living room every 2 seconds"
    mode: queued
    triggers:
      - trigger: time_pattern
        seconds: "/2"
    actions:
      - action: input_number.set_value
        target:
          entity_id: input_number.living_room_temperature
        data:
          value: "{{{{ range(180, 250) | random / 10 }}}}"
      - action: input_number.set_value
        target:
          entity_id: input_number.living_room_humidity
        data:
          value: "{{{{ range(35, 70) | random }}}}"
  - id: demo_switches
    alias: "Demo: a switch every 5 seconds"
    mode: queued
    triggers:
      - trigger: time_pattern
        seconds: "/5"
    actions:
      - action: input_boolean.toggle
        target:
          entity_id: "{{{{ ['input_boolean.window_open', 'input_boolean.hall_light'] | random }}}}"
  - id: demo_weather
    alias: "Demo: the weather changes every 15 seconds"
    mode: queued
    triggers:
      - trigger: time_pattern
        seconds: "/15"
    actions:
      - action: input_select.select_option
        target:
          entity_id: input_select.weather_condition
        data:
          option: >-
            {{{{ ['sunny', 'partlycloudy', 'cloudy', 'rainy', 'pouring', 'fog', 'windy']
                | random }}}}
      - action: input_number.set_value
        target:
          entity_id: input_number.outdoor_temperature
        data:
          value: "{{{{ range(50, 200) | random / 10 }}}}"
      - action: input_number.set_value
        target:
          entity_id: input_number.outdoor_humidity
        data:
          value: "{{{{ range(50, 100) | random }}}}"
      - action: input_number.set_value
        target:
          entity_id: input_number.outdoor_pressure
        data:
          value: "{{{{ range(990, 1030) | random }}}}"
"""


def entry_data_and_options(
    storage_url: str, enrichment_url: str | None, token: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The entry's data and options, in the shape the integration's config flow creates."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from custom_components.ha_ingestor import const
    from custom_components.ha_ingestor.config_flow import default_options, normalize_url

    storage = normalize_url(storage_url)
    enrichment = normalize_url(enrichment_url) if enrichment_url else None
    if storage is None or (enrichment_url and enrichment is None):
        raise DemoError(f"not a service URL: {storage_url} / {enrichment_url}")
    data = {
        const.CONF_STORAGE_URL: storage,
        const.CONF_STORAGE_FAILOVER_URLS: [],
        const.CONF_ENRICHMENT_URL: enrichment,
        const.CONF_ENRICHMENT_FAILOVER_URLS: [],
        const.CONF_API_TOKEN: token,
        const.CONF_VERIFY_SSL: True,
    }
    options = default_options()
    options[const.CONF_WEATHER_ENTITY] = WEATHER_ENTITY
    return data, options


def seed_config_entry(storage_dir: Path, data: dict[str, Any], options: dict[str, Any]) -> str:
    """Write (or update) the ha_ingestor entry in ``.storage/core.config_entries``.

    A new file is written at storage version 1.1 with the keys of that version; Home
    Assistant's own migration fills in the keys added later. An existing file (a kept
    work folder) keeps its entry and id; only the entry's connection changes. Returns
    the entry id.
    """
    path = storage_dir / "core.config_entries"
    unique_id = data["storage_url"]
    title = f"HA Ingestor ({urllib.parse.urlsplit(unique_id).netloc})"
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        for entry in stored["data"]["entries"]:
            if entry.get("domain") == "ha_ingestor":
                entry.update(data=data, unique_id=unique_id, title=title)
                entry["options"] = {**options, **entry.get("options", {})}
                entry["options"]["weather_entity"] = options["weather_entity"]
                path.write_text(json.dumps(stored, indent=2), encoding="utf-8")
                return str(entry["entry_id"])
    else:
        stored = {"version": 1, "minor_version": 1, "key": "core.config_entries"}
        stored["data"] = {"entries": []}
    entry_id = secrets.token_hex(16)
    stored["data"]["entries"].append(
        {
            "entry_id": entry_id,
            "version": 1,
            "domain": "ha_ingestor",
            "title": title,
            "data": data,
            "options": options,
            "source": "user",
            "unique_id": unique_id,
        }
    )
    storage_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stored, indent=2), encoding="utf-8")
    return entry_id


# -- processes -----------------------------------------------------------------------------


@dataclass
class Child:
    """A process the demo started, with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    log_file: TextIO

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait, SIGKILL when it does not stop in time; its exit code."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()
        return self.process.returncode


def start_child(name: str, argv: Sequence[str], log: Path, env: dict[str, str]) -> Child:
    log.parent.mkdir(parents=True, exist_ok=True)
    log_file = log.open("a", encoding="utf-8")
    process = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO,
        # Its own session: the terminal's Ctrl-C reaches only the demo, which then stops
        # Home Assistant first and the services after it.
        start_new_session=True,
    )
    return Child(name, process, log, log_file)


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


PIDS_FILE = "demo.pids"


def stop_leftovers(workdir: Path) -> list[str]:
    """Stop what an earlier run in this work folder left running (it was killed).

    Newest first (Home Assistant before the services), and only processes whose command
    line still names the work folder: a pid may have been reused since.
    """
    path = workdir / PIDS_FILE
    try:
        pids = [int(line) for line in path.read_text(encoding="utf-8").split()]
    except (OSError, ValueError):
        return []
    notes: list[str] = []
    for pid in reversed(pids):
        proc = Path(f"/proc/{pid}")
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue  # gone (or not Linux)
        if str(workdir).encode() not in cmdline:
            continue
        notes.append(f"stopped process {pid}, left running by an earlier demo run")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while proc.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        if proc.exists():
            os.kill(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return notes


# -- the demo ------------------------------------------------------------------------------


@dataclass
class Demo:
    """A work folder, the services on SQLite, and a Home Assistant sending to them."""

    workdir: Path
    ports: Ports
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    split_services: bool = False  # storage and enrichment as two processes (tests)
    integration_log_level: str = "info"  # custom_components.ha_ingestor in HA's log
    entry_id: str = ""
    services: list[Child] = field(default_factory=list)
    hass: Child | None = None
    exit_codes: dict[str, int | None] = field(default_factory=dict)

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
    def ha_url(self) -> str:
        return f"http://{HOST}:{self.ports.ha}"

    @property
    def storage_url(self) -> str:
        return f"http://{HOST}:{self.ports.storage}"

    @property
    def enrichment_url(self) -> str:
        return f"http://{HOST}:{self.ports.enrichment}"

    @property
    def pids_path(self) -> Path:
        return self.workdir / PIDS_FILE

    @property
    def ha_log(self) -> Path:
        return self.ha_dir / "home-assistant.log"

    @property
    def outbox_path(self) -> Path:
        return self.ha_dir / ".storage" / "ha_ingestor" / f"outbox_{self.entry_id}.db"

    # set-up

    def prepare(self, *, keep: bool = False) -> None:
        """A fresh work folder (unless keep) with Home Assistant's configuration in it."""
        if not keep and self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.ha_dir.mkdir(parents=True, exist_ok=True)
        (self.ha_dir / "configuration.yaml").write_text(
            CONFIGURATION_YAML.format(
                host=HOST, port=self.ports.ha, integration_log_level=self.integration_log_level
            ),
            encoding="utf-8",
        )
        for name in ("automations.yaml", "scripts.yaml", "scenes.yaml"):
            (self.ha_dir / name).touch()
        custom = self.ha_dir / "custom_components"
        custom.mkdir(exist_ok=True)
        link = custom / "ha_ingestor"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(REPO / "custom_components" / "ha_ingestor", target_is_directory=True)
        data, options = entry_data_and_options(self.storage_url, self.enrichment_url, self.token)
        self.entry_id = seed_config_entry(self.ha_dir / ".storage", data, options)

    def _start(self, name: str, argv: Sequence[str], log: Path) -> Child:
        """Start a child and note its pid, so a later run can stop it if this one is killed."""
        child = start_child(name, argv, log, self._env())
        with self.pids_path.open("a", encoding="utf-8") as pids:
            pids.write(f"{child.process.pid}\n")
        return child

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["HA_INGESTOR_TOKEN"] = self.token
        env.pop("HA_INGESTOR_PORT", None)  # the ports come as flags
        return env

    # the services

    def start_services(self, timeout: float = SERVICES_START_TIMEOUT) -> None:
        """Start storage and the enrichment; return when both answer health with 200."""
        python = [sys.executable, "-m", "ha_ingestor_services"]
        sqlite = ["--backend", "sqlite", "--sqlite-path", str(self.sqlite_path)]
        if self.split_services:
            self.start_storage()
            self.services.append(
                self._start(
                    "enrichment",
                    [
                        *python,
                        "enrichment",
                        "--port",
                        str(self.ports.enrichment),
                        "--storage-url",
                        self.storage_url,
                    ],
                    self.logs_dir / "enrichment.log",
                )
            )
        else:
            self.services.append(
                self._start(
                    "stack",
                    [
                        *python,
                        "stack",
                        *sqlite,
                        "--storage-port",
                        str(self.ports.storage),
                        "--enrichment-port",
                        str(self.ports.enrichment),
                    ],
                    self.logs_dir / "stack.log",
                )
            )
        self.wait_healthy(self.storage_url, timeout)
        self.wait_healthy(self.enrichment_url, timeout)

    def start_storage(self) -> None:
        """(split services) Start the storage service alone, on the same SQLite file."""
        child = self._start(
            "storage",
            [
                sys.executable,
                "-m",
                "ha_ingestor_services",
                "storage",
                "--port",
                str(self.ports.storage),
                "--backend",
                "sqlite",
                "--sqlite-path",
                str(self.sqlite_path),
            ],
            self.logs_dir / "storage.log",
        )
        self.services.insert(0, child)

    def stop_storage(self) -> int | None:
        """(split services) Stop the storage service alone."""
        child = next(child for child in self.services if child.name == "storage")
        self.services.remove(child)
        return self._stopped(child)

    def _stopped(self, child: Child, timeout: float = STOP_TIMEOUT) -> int | None:
        code = self.exit_codes[child.name] = child.stop(timeout)
        return code

    def wait_healthy(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            for child in self.services:
                if not child.running():
                    raise DemoError(
                        f"the {child.name} process exited with code {child.process.returncode}",
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
        raise DemoError(
            f"{url}{HEALTH_PATH} did not answer 200 within {timeout:.0f} s ({last})",
            self.services[-1].log if self.services else None,
        )

    def stop_services(self) -> None:
        """Stop the services, storage last (the enrichment hands it what it holds)."""
        while self.services:
            self._stopped(self.services.pop())

    # Home Assistant

    def start_hass(self, timeout: float = HA_START_TIMEOUT) -> None:
        """Start ``hass`` on the work folder; return when its HTTP server answers."""
        self.hass = self._start(
            "Home Assistant",
            [str(BIN / "hass"), "-c", str(self.ha_dir), "--skip-pip"],
            self.logs_dir / "hass-console.log",
        )
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

    def stop_hass(self) -> int | None:
        if self.hass is None:
            return None
        code = self._stopped(self.hass, timeout=60.0)
        self.hass = None
        return code

    def stop(self) -> None:
        """Home Assistant first (it delivers what it can), then the services."""
        try:
            self.stop_hass()
        finally:
            self.stop_services()

    # what arrived

    def storage_stats(self) -> dict[str, Any] | None:
        try:
            status, body = http_get(self.storage_url + "/api/v1/stats", self.token)
        except OSError:
            return None
        return body if status == 200 and isinstance(body, dict) else None

    def stored_events(self, limit: int = 2, **query: str) -> list[dict[str, Any]]:
        """The newest stored events (newest first) from the query API; [] when unreachable."""
        params = urllib.parse.urlencode({"limit": str(limit), **query})
        try:
            status, body = http_get(
                f"{self.storage_url}/api/v1/events?{params}", self.token, timeout=10.0
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


# -- the command ---------------------------------------------------------------------------


def describe(event: dict[str, Any]) -> str:
    text = f"{event.get('entity_id') or event.get('event_type')}={event.get('state')}"
    condition = event.get("weather_condition")
    if condition:
        temp = event.get("weather_temp_c")
        text += f" ({condition}" + (f" {temp:g} °C)" if isinstance(temp, int | float) else ")")
    else:
        text += " (no weather)"
    return text


def progress_line(demo: Demo, started: float, previous: int | None) -> tuple[str, int | None]:
    stats = demo.storage_stats()
    stored = None
    if stats is not None:
        stored = int(stats.get("events", {}).get("stored", 0))
    # The newest of two entities, leaving out the automations' own state changes.
    latest: dict[str, dict[str, Any]] = {}
    for event in demo.stored_events(limit=20):
        entity = str(event.get("entity_id"))
        if not entity.startswith("automation.") and len(latest) < 2:
            latest.setdefault(entity, event)
    newest = ", ".join(describe(event) for event in latest.values())
    queued = demo.queued_in_ha()
    parts: list[str] = []
    if stored is None:
        parts.append("storage unreachable")
    else:
        delta = f" (+{stored - previous})" if previous is not None else ""
        parts.append(f"stored {stored}{delta}")
    parts.append(f"queued in HA {queued[0] if queued else 0}")
    parts.append(f"enrichment {demo.enrichment_health()}")
    parts.append(f"newest: {newest or '-'}")
    return f"[{time.monotonic() - started:5.0f} s] " + " | ".join(parts), stored


class _Stop(Exception):
    """SIGTERM or SIGHUP (the terminal closed): stop like Ctrl-C."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _ignore_stop_signals() -> None:
    """While stopping: one Ctrl-C is enough, more must not leave processes behind."""
    for signum in _STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/demo",
        description=(
            "Run Home Assistant with HA Ingestor, the enrichment pipeline and the storage "
            "service on SQLite, and show the events arriving. Ctrl-C stops it."
        ),
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=REPO / ".demo",
        help="work folder (default .demo/ in the repository), emptied at start",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the work folder's contents: stored events, Home Assistant's users and state",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop this many seconds after everything is up (default: at Ctrl-C)",
    )
    parser.add_argument(
        "--interval", type=float, default=5.0, help="seconds between progress lines (default 5)"
    )
    parser.add_argument("--ha-port", type=int, default=DEFAULT_HA_PORT, help="default 8123")
    parser.add_argument(
        "--enrichment-port", type=int, default=DEFAULT_ENRICHMENT_PORT, help="default 8002"
    )
    parser.add_argument(
        "--storage-port", type=int, default=DEFAULT_STORAGE_PORT, help="default 8004"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not (BIN / "hass").exists():
        print(
            f"error: no Home Assistant next to {sys.executable}; run scripts/demo, "
            "which sets up .venv",
            file=sys.stderr,
        )
        return 2
    workdir = args.workdir.resolve()
    notes = stop_leftovers(workdir)
    ports, port_notes = pick_ports(Ports(args.ha_port, args.enrichment_port, args.storage_port))
    notes += port_notes
    demo = Demo(workdir=workdir, ports=ports)
    for note in notes:
        print(f"note: {note}")
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGHUP, _raise_stop)
    code = 0
    try:
        code = run(demo, args)
    except (KeyboardInterrupt, _Stop):
        print("\nstopping", flush=True)
    finally:
        _ignore_stop_signals()
        if demo.hass is not None:
            print("stopping Home Assistant", flush=True)
            demo.stop_hass()
        if demo.services:
            print("stopping the services", flush=True)
            demo.stop_services()
    print_summary(demo)
    return code


def run(demo: Demo, args: argparse.Namespace) -> int:
    """Set up, start, show progress until the duration is over; 1 when something failed."""
    started = time.monotonic()
    try:
        demo.prepare(keep=args.keep)
        log = demo.logs_dir / "stack.log"
        print(f"starting the enrichment and storage services (log: {log})", flush=True)
        demo.start_services()
        print(f"starting Home Assistant (log: {demo.ha_log})", flush=True)
        demo.start_hass()
    except DemoError as err:
        print(f"\nerror: {err}", file=sys.stderr)
        if err.log is not None:
            print(f"--- last lines of {err.log}:\n{tail(err.log)}", file=sys.stderr)
        return 1
    print_where(demo, time.monotonic() - started)
    previous: int | None = None
    deadline = None if args.duration is None else time.monotonic() + args.duration
    next_line = time.monotonic()
    while deadline is None or time.monotonic() < deadline:
        for child in [*demo.services, demo.hass]:
            if child is not None and not child.running():
                print(
                    f"\nerror: {child.name} exited with code {child.process.returncode}"
                    f"\n--- last lines of {child.log}:\n{tail(child.log)}",
                    file=sys.stderr,
                )
                return 1
        if time.monotonic() >= next_line:
            line, previous = progress_line(demo, started, previous)
            print(line, flush=True)
            next_line += args.interval
        time.sleep(0.2)
    return 0


def print_where(demo: Demo, elapsed: float) -> None:
    print(
        f"""
Everything is up ({elapsed:.0f} s).
  Home Assistant   {demo.ha_url}  (create a user; then Settings > Devices & services >
                   HA Ingestor shows its devices and sensors)
  enrichment       {demo.enrichment_url}{HEALTH_PATH}
  storage          {demo.storage_url}{HEALTH_PATH}
  token            {demo.token}
  SQLite file      {demo.sqlite_path}
  logs             {demo.ha_log}
                   {demo.logs_dir}/
Query the stored events:
  curl -s -H "Authorization: Bearer {demo.token}" \\
    "{demo.storage_url}/api/v1/events?limit=5&entity_id={COUNTER_ENTITY}"
Ctrl-C stops it.
""",
        flush=True,
    )


def print_summary(demo: Demo) -> None:
    stored = demo.count_stored()
    queued = demo.queued_in_ha()
    problems = demo.ha_log_problems()
    print("\nsummary")
    if stored is None:
        print(f"  events stored       none ({demo.sqlite_path} was not created)")
    else:
        weather = demo.count_with_weather()
        print(f"  events stored       {stored}, {weather} with weather ({demo.sqlite_path})")
    if queued is None:
        print("  still queued in HA  unknown (no outbox file)")
    else:
        print(f"  still queued in HA  {queued[0]} (dead letters: {queued[1]})")
    print(f"  ha_ingestor in the HA log: {len(problems)} warnings/errors")
    for line in problems[:10]:
        print(f"    {line}")
    codes = ", ".join(f"{name} {code}" for name, code in demo.exit_codes.items())
    print(f"  exit codes          {codes}")
    print(f"  logs                {demo.ha_log}")
    for log in sorted(demo.logs_dir.glob("*.log")):
        print(f"                      {log}")


if __name__ == "__main__":
    sys.exit(main())
