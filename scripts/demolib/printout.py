"""What ``scripts/demo`` prints: where everything is, the progress lines, the summary."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from custom_components.ha_ingestor.pipeline.envelope import EVENTS_PATH, HEALTH_PATH
from scripts.demolib.ha_config import COUNTER_ENTITY, REPO
from scripts.demolib.services import Change
from scripts.demolib.stack import PROBLEM_ENTITY, STATUS_ENTITY, Demo

# What Home Assistant does meanwhile, when a service stops.
MEANWHILE = {
    "storage": "Home Assistant keeps queueing",
    "enrichment": "Home Assistant sends straight to storage meanwhile (without enrichment)",
}


def shown(path: Path) -> str:
    """A path as the user sees it: inside the Debian root of the latest leg, the checkout
    is mounted at /src (scripts/_root.sh), and the user's shell is outside."""
    host_checkout = os.environ.get("HA_INGESTOR_HOST_CHECKOUT")
    root = os.environ.get("HA_INGESTOR_ROOT_DIR")
    if host_checkout and path.is_relative_to(REPO):
        return str(Path(host_checkout) / path.relative_to(REPO))
    if root and path.is_absolute():
        return root + str(path)
    return str(path)


def demo_command(*options: str) -> str:
    """``scripts/demo`` with the options of the leg this run is on."""
    leg = os.environ.get("HA_INGESTOR_DEMO_LEG", "floor")
    return " ".join(["scripts/demo", *(("--ha", leg) if leg != "floor" else ()), *options])


def print_where(demo: Demo, elapsed: float, notes: list[str]) -> None:
    if demo.login is not None:
        login = (
            f"log in as {demo.login.username}, password {demo.login.password}\n"
            f"{'':19}(saved in {shown(demo.login_path)})"
        )
    else:
        login = "log in with the account made in the browser"
    storage, enrichment = demo.storage, demo.enrichment
    print(
        f"""
Everything is up ({elapsed:.0f} s).
  Home Assistant   {demo.ha_url}  {login}
                   Settings > Devices & services > HA Ingestor: its devices and sensors
  enrichment       {demo.enrichment_url}{HEALTH_PATH}  (pid {enrichment.pid})
  storage          {demo.storage_url}{HEALTH_PATH}  (pid {storage.pid})
  token            {demo.token}
  SQLite file      {shown(demo.sqlite_path)}
  logs             {shown(demo.ha_log)}
                   {shown(demo.logs_dir)}/
Outage drill (README, "Outage drill"): stop storage, watch the forwarder's Status,
Delivery problem and Outbox depth in Home Assistant, start storage again.
  stop storage     kill {storage.pid}
  start it again   {storage.start_command(demo.token)}
Query the stored events:
  curl -s -H "Authorization: Bearer {demo.token}" \\
    "{demo.storage_url}{EVENTS_PATH}?limit=5&entity_id={COUNTER_ENTITY}"
Ctrl-C stops it all. Next time, `{demo_command("--keep")}` keeps this Home Assistant
(login, history) and the stored events; without --keep the work folder starts afresh.
""",
        flush=True,
    )
    for note in notes:
        print(f"note: {note}", flush=True)


def change_line(demo: Demo, change: Change, started: float) -> str:
    """One line (two when stopped) on a service that stopped or came back."""
    stamp = f"[{time.monotonic() - started:5.0f} s]"
    service = demo.storage if change.service == "storage" else demo.enrichment
    if change.running:
        return f"{stamp} {change.service} is running again (pid {change.pid})"
    how = f"exit code {change.exit_code}" if change.exit_code is not None else f"pid {change.pid}"
    return (
        f"{stamp} {change.service} stopped ({how}); {MEANWHILE[change.service]}\n"
        f"{'':9}start it again: {service.start_command(demo.token)}"
    )


def _describe(event: dict[str, Any]) -> str:
    text = f"{event.get('entity_id') or event.get('event_type')}={event.get('state')}"
    condition = event.get("weather_condition")
    if condition:
        temp = event.get("weather_temp_c")
        text += f" ({condition}" + (f" {temp:g} °C)" if isinstance(temp, int | float) else ")")
    else:
        text += " (no weather)"
    return text


def _status_names() -> dict[str, str]:
    """The Status sensor's states as the dashboard names them (the integration's English)."""
    path = REPO / "custom_components" / "ha_ingestor" / "translations" / "en.json"
    try:
        names = json.loads(path.read_text(encoding="utf-8"))["entity"]["sensor"]["status"]
        return {str(key): str(value) for key, value in names["state"].items()}
    except (OSError, ValueError, KeyError, AttributeError):
        return {}


STATUS_NAMES = _status_names()


def progress_line(demo: Demo, started: float, previous: int | None) -> tuple[str, int | None]:
    """The line, and the stored count to compare the next line with.

    The count is the SQLite file's (every event ever stored, whichever storage process
    stored it), so across an outage it stands still and then catches up.
    """
    stored = demo.count_stored()
    reachable = demo.storage_stats() is not None
    # The newest of two entities, leaving out the automations' own state changes.
    latest: dict[str, dict[str, Any]] = {}
    for event in demo.stored_events(limit=20):
        entity = str(event.get("entity_id"))
        if not entity.startswith("automation.") and len(latest) < 2:
            latest.setdefault(entity, event)
    newest = ", ".join(_describe(event) for event in latest.values())
    queued = demo.queued_in_ha()
    delta = f" (+{stored - previous})" if stored is not None and previous is not None else ""
    parts = [f"stored {stored or 0}{delta}"]
    if not reachable:
        parts.append("storage unreachable")
    parts.append(f"queued in HA {queued[0] if queued else 0}")
    states = demo.ha_states([STATUS_ENTITY, PROBLEM_ENTITY])
    if STATUS_ENTITY in states:
        status = states[STATUS_ENTITY]
        problem = {"on": ", delivery problem"}.get(states.get(PROBLEM_ENTITY, ""), "")
        parts.append(f"status {STATUS_NAMES.get(status, status)}{problem}")
    parts.append(f"enrichment {demo.enrichment_health()}")
    if reachable:
        parts.append(f"newest: {newest or '-'}")
    line = f"[{time.monotonic() - started:5.0f} s] " + " | ".join(parts)
    return line, stored if stored is not None else previous


def print_summary(demo: Demo) -> None:
    stored = demo.count_stored()
    queued = demo.queued_in_ha()
    problems = demo.ha_log_problems()
    print("\nsummary")
    if stored is None:
        print(f"  events stored       none ({shown(demo.sqlite_path)} was not created)")
    else:
        weather = demo.count_with_weather()
        print(f"  events stored       {stored}, {weather} with weather ({shown(demo.sqlite_path)})")
    if queued is None:
        print("  still queued in HA  unknown (no outbox file)")
    else:
        print(f"  still queued in HA  {queued[0]} (dead letters: {queued[1]})")
    print(f"  ha_ingestor in the HA log: {len(problems)} warnings/errors")
    for line in problems[:10]:
        print(f"    {line}")
    codes = ", ".join(
        f"{name} {'-' if code is None else code}" for name, code in demo.exit_codes.items()
    )
    print(f"  exit codes          {codes}")
    print(f"  logs                {shown(demo.ha_log)}")
    for log in sorted(demo.logs_dir.glob("*.log")):
        print(f"                      {shown(log)}")
