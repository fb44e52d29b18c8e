"""Run the whole HA Ingestor pipeline on this machine and show events arriving.

A real Home Assistant process with the integration set up (a pre-seeded config entry)
sends the state changes of a few demo helpers, which automations change every second or
few seconds, through the enrichment into the storage service on SQLite;
the two services run as two processes, so either can be stopped and started again
while Home Assistant runs on (the outage drill). The demo finishes Home Assistant's
onboarding itself and prints the login. Everything lives in one work folder (default
``.demo/`` in the repository).

    scripts/demo                    # until Ctrl-C
    scripts/demo --duration 60      # a scripted run
    scripts/demo --keep             # keep the work folder: login, history, stored events

The parts are in scripts/demolib/; `Demo` is also what ``tests/e2e`` drives.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from scripts.demolib import DemoError
from scripts.demolib.ha_config import COUNTER_ENTITY, REPO, WEATHER_ENTITY
from scripts.demolib.ports import (
    DEFAULT_ENRICHMENT_PORT,
    DEFAULT_HA_PORT,
    DEFAULT_STORAGE_PORT,
    Ports,
    pick_ports,
)
from scripts.demolib.printout import change_line, print_summary, print_where, progress_line
from scripts.demolib.processes import stop_leftovers, tail
from scripts.demolib.stack import BIN, Demo

__all__ = [
    "COUNTER_ENTITY",
    "WEATHER_ENTITY",
    "Demo",
    "DemoError",
    "Ports",
    "main",
    "pick_ports",
    "tail",
]


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
            "Run Home Assistant with HA Ingestor, the enrichment and storage services "
            "on SQLite, and show the events arriving. Ctrl-C stops it."
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
        help="keep the work folder's contents: stored events, Home Assistant's login and state",
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
    parser.add_argument(
        "--no-entry",
        action="store_true",
        help="start without the HA Ingestor entry, to add it in the UI (Add integration)",
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
    demo = Demo(workdir=workdir, ports=ports, seed_entry=not args.no_entry)
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
        if any(service.started for service in demo.services):
            print("stopping the services", flush=True)
            demo.stop_services()
    print_summary(demo)
    return code


def run(demo: Demo, args: argparse.Namespace) -> int:
    """Set up, start, show progress until the duration is over or Home Assistant exits.

    1 when something did not start or Home Assistant exited; a service that stops is
    reported and the demo goes on.
    """
    started = time.monotonic()
    try:
        demo.prepare(keep=args.keep)
        print(
            f"starting the storage and enrichment services (logs: {demo.logs_dir}/)",
            flush=True,
        )
        demo.start_services()
        print(f"starting Home Assistant (log: {demo.ha_log})", flush=True)
        demo.start_hass()
        print("signing in to Home Assistant (onboarding it when new)", flush=True)
        notes = demo.onboard()
    except DemoError as err:
        print(f"\nerror: {err}", file=sys.stderr)
        if err.log is not None:
            print(f"--- last lines of {err.log}:\n{tail(err.log)}", file=sys.stderr)
        return 1
    print_where(demo, time.monotonic() - started, notes)
    previous: int | None = None
    deadline = None if args.duration is None else time.monotonic() + args.duration
    next_line = time.monotonic()
    while deadline is None or time.monotonic() < deadline:
        hass = demo.hass
        if hass is not None and not hass.running():
            print(
                f"\nerror: Home Assistant exited with code {hass.process.returncode}"
                f"\n--- last lines of {hass.log}:\n{tail(hass.log)}",
                file=sys.stderr,
            )
            return 1
        for change in demo.watch_services():
            print(change_line(demo, change, started), flush=True)
        if time.monotonic() >= next_line:
            line, previous = progress_line(demo, started, previous)
            print(line, flush=True)
            next_line += args.interval
        time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
