"""The README's screenshots, from the UI walk (scripts/ui_walk.mjs) on a fresh demo.

Run through scripts/screenshots, which sets up the venv and the browser. The demo runs
on its usual ports where free (so the pictures show 8004 and 8002), without its
pre-made entry, with history for the dashboard's graphs; the walk adds the entry in the
UI and takes its pictures; then storage is stopped for the outage pictures and started
again. The pictures go to docs/images/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from scripts.demolib import DemoError
from scripts.demolib.ha_config import REPO
from scripts.demolib.ports import (
    DEFAULT_ENRICHMENT_PORT,
    DEFAULT_HA_PORT,
    DEFAULT_STORAGE_PORT,
    Ports,
    pick_ports,
)
from scripts.demolib.processes import tail
from scripts.demolib.stack import Demo

WALK = REPO / "scripts" / "ui_walk.mjs"
IMAGES = REPO / "docs" / "images"
# The walk's picture → the README's.
PICTURES = {
    "forwarder-device": "forwarder-device.png",
    "integration": "integration.png",
    "options-flow": "options-flow.png",
    "dashboard": "dashboard.png",
    "forwarder-outage": "forwarder-outage.png",
    "forwarder-outage-status": "forwarder-outage-status.png",
}


def walk(arguments: dict[str, object]) -> None:
    result = subprocess.run(["node", str(WALK), json.dumps(arguments)], check=False)
    if result.returncode != 0:
        raise DemoError(f"the UI walk failed (steps {arguments.get('steps', 'all')})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/screenshots", description=__doc__)
    parser.add_argument("--out", type=Path, default=IMAGES, help="default docs/images")
    parser.add_argument("--no-outage", action="store_true", help="skip the outage pictures")
    args = parser.parse_args(argv)
    strings = json.loads(
        (REPO / "custom_components" / "ha_ingestor" / "strings.json").read_text(encoding="utf-8")
    )
    ports, notes = pick_ports(Ports(DEFAULT_HA_PORT, DEFAULT_ENRICHMENT_PORT, DEFAULT_STORAGE_PORT))
    for note in notes:
        print(f"note: {note}")
    with tempfile.TemporaryDirectory(prefix="ha-ingestor-shots-") as temp:
        shots = Path(temp) / "shots"
        shots.mkdir()
        demo = Demo(workdir=Path(temp) / "demo", ports=ports, seed_entry=False, history=True)
        try:
            demo.prepare()
            demo.start_services()
            demo.start_hass()
            demo.onboard()
            assert demo.login is not None
            arguments: dict[str, object] = {
                "url": demo.ha_url,
                "user": demo.login.username,
                "password": demo.login.password,
                "storage_url": demo.storage_url,
                "enrichment_url": demo.enrichment_url,
                "token": demo.token,
                "wrong_url": demo.enrichment_url,
                "wrong_url_error": strings["config"]["error"]["answers_as_enrichment"],
                "glob": "sensor.*_linkquality",
                "dashboard": yaml.safe_load(
                    (REPO / "docs" / "dashboard.yaml").read_text(encoding="utf-8")
                ),
                "shots": str(shots),
                "timeout": 180,
            }
            walk(arguments)
            if not args.no_outage:
                print("stopping storage for the outage pictures (over a minute)", flush=True)
                demo.stop_storage()
                walk({**arguments, "steps": ["outage"]})
                demo.start_storage()
        except DemoError as err:
            print(f"error: {err}", file=sys.stderr)
            for log in (demo.ha_log, *sorted(demo.logs_dir.glob("*.log"))):
                print(f"--- {log}:\n{tail(log, 20)}", file=sys.stderr)
            return 1
        finally:
            demo.stop()
        args.out.mkdir(parents=True, exist_ok=True)
        for name, target in PICTURES.items():
            source = shots / f"{name}.png"
            if source.exists():
                shutil.copyfile(source, args.out / target)
                print(f"saved {args.out / target}")
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
