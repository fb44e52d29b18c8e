"""Home Assistant's configuration folder for the demo, written before hass starts.

``configuration.yaml`` (the demo helpers and the automations that change them), the
core configuration (location, metric units) and the HA Ingestor config entry, in the
shape the config flow creates.
"""

from __future__ import annotations

import importlib.util
import json
import secrets
import urllib.parse
from pathlib import Path
from typing import Any

from scripts.demolib import DemoError

REPO = Path(__file__).resolve().parents[2]

WEATHER_ENTITY = "weather.home"
COUNTER_ENTITY = "input_number.demo_counter"

# Amsterdam: the Netherlands use metric units. Written to .storage/core.config, as
# Home Assistant's onboarding and Settings > System > General would write it (a
# ``homeassistant:`` block in configuration.yaml would lock those settings in the UI).
# The format (version 1.4) is the same from Home Assistant 2025.4 to 2026.10.
CORE_CONFIG: dict[str, Any] = {
    "latitude": 52.3731,
    "longitude": 4.8922,
    "elevation": 2,
    "unit_system_v2": "metric",
    "location_name": "HA Ingestor demo",
    "time_zone": "Europe/Amsterdam",
    "external_url": None,
    "internal_url": None,
    "currency": "EUR",
    "country": "NL",
    "language": "en",
    "radius": 100,
}


CONFIGURATION_YAML = """\
# Written by scripts/demo: a minimal Home Assistant (no default_config) whose demo
# helpers change every second or few seconds, so state_changed events flow.
{http}
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


# Only with `history=True` (the UI walk's dashboard draws history graphs): the recorder
# and history, which the demo otherwise leaves out.
HISTORY_YAML = """
# The recorder and history, for the history graphs of a dashboard.
recorder:
  commit_interval: 1
history:
"""


def write_config_folder(
    ha_dir: Path, *, host: str, port: int, integration_log_level: str, history: bool = False
) -> None:
    """configuration.yaml and the files it names, the integration (a link to this
    checkout), the HTTP settings, and the core configuration unless Home Assistant
    already has one (a kept work folder keeps what was changed in the UI)."""
    ha_dir.mkdir(parents=True, exist_ok=True)
    configuration = CONFIGURATION_YAML.format(
        http=http_settings(ha_dir / ".storage", host, port),
        integration_log_level=integration_log_level,
    )
    (ha_dir / "configuration.yaml").write_text(
        configuration + (HISTORY_YAML if history else ""), encoding="utf-8"
    )
    for name in ("automations.yaml", "scripts.yaml", "scenes.yaml"):
        (ha_dir / name).touch()
    custom = ha_dir / "custom_components"
    custom.mkdir(exist_ok=True)
    link = custom / "ha_ingestor"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(REPO / "custom_components" / "ha_ingestor", target_is_directory=True)
    core_config = ha_dir / ".storage" / "core.config"
    if not core_config.exists():
        _write_store(core_config, 1, 4, CORE_CONFIG)


def http_settings(storage_dir: Path, host: str, port: int) -> str:
    """Where Home Assistant listens: the ``http:`` YAML block, or "" when written to
    .storage/http.

    Newer releases (homeassistant/components/http/config.py, 2026.x) keep these settings
    in .storage/http: they take ``http:`` from configuration.yaml once, as a trial that
    is undone, with a restart on Home Assistant's default port on all addresses, unless
    confirmed in the UI within 5 minutes, and ignore it afterwards (a kept work folder
    would keep its first port). So there the settings are written to .storage/http as
    confirmed ("stable"), on every run, with the release's own schema and defaults.
    """
    module = "homeassistant.components.http.config"  # not in the floor leg's 2025.4
    if importlib.util.find_spec(module) is None:
        return f"http:\n  server_host: {host}\n  server_port: {port}\n"
    from homeassistant.util import dt as dt_util

    http_config = importlib.import_module(module)

    stable = http_config.HTTP_STORAGE_SCHEMA({"server_host": [host], "server_port": port})
    stable.update(created_at=dt_util.utcnow().isoformat(), error=None, error_message=None)
    data = {
        http_config.KEY_STABLE: stable,
        http_config.KEY_PENDING: None,
        http_config.KEY_YAML_MIGRATION_DONE: True,
    }
    _write_store(
        storage_dir / http_config.STORAGE_KEY,
        http_config.STORAGE_VERSION,
        http_config.STORAGE_MINOR_VERSION,
        data,
    )
    return ""


def _write_store(path: Path, version: int, minor_version: int, data: Any) -> None:
    """A file of Home Assistant's .storage, as its Store class writes one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = {"version": version, "minor_version": minor_version, "key": path.name, "data": data}
    path.write_text(json.dumps(stored, indent=2), encoding="utf-8")


def entry_data_and_options(
    storage_url: str, enrichment_url: str | None, token: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The entry's data and options, in the shape the integration's config flow creates."""
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
