"""HA Ingestor's UI in a real browser, against the demo's real ``hass``.

The demo (`scripts.demo.Demo`) runs without its pre-made entry; scripts/ui_walk.mjs
(Debian's chromium through npm's playwright-core, both set up by scripts/_browser.sh)
logs in with the login the demo made, adds the entry through Add integration (a wrong
URL first, then the right one), changes a filter in the options, watches the forwarder's
device page count deliveries, raises the dead letters repair issue and walks its fix
flow, and loads docs/dashboard.yaml as a dashboard and sees its cards filled.

scripts/test installs the browser where it runs as root on Debian; elsewhere this test
skips, saying what is missing. It runs on both legs, each with its own frontend. Where
Home Assistant cannot describe its actions its frontend never leaves the loading screen:
2026.10 imports its entity platforms for that, whose packages a venv may lack. The test
then skips, saying which; under scripts/test it fails, since requirements_latest.txt pins
them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from scripts.demo import Demo, Ports, pick_ports, tail
from scripts.demolib.ha_config import REPO

pytestmark = pytest.mark.slow

BROWSER_CACHE = Path(os.environ.get("HA_INGESTOR_CACHE", "/var/cache/ha-ingestor")) / "browser"
PLAYWRIGHT_CORE = BROWSER_CACHE / "node_modules" / "playwright-core" / "index.mjs"
WALK = REPO / "scripts" / "ui_walk.mjs"
DASHBOARD = REPO / "docs" / "dashboard.yaml"
STRINGS = REPO / "custom_components" / "ha_ingestor" / "strings.json"
WALK_TIMEOUT = 900  # the whole walk; each condition in it waits at most STEP_TIMEOUT
STEP_TIMEOUT = 150


def missing() -> list[str]:
    return [
        name
        for name, ok in (
            ("chromium", shutil.which("chromium") is not None),
            ("node", shutil.which("node") is not None),
            (f"playwright-core in {BROWSER_CACHE}", PLAYWRIGHT_CORE.exists()),
            ("Home Assistant's frontend", importlib.util.find_spec("hass_frontend") is not None),
        )
        if not ok
    ]


def frontend_cannot_start(demo: Demo) -> str | None:
    """Why Home Assistant's frontend would never leave its loading screen, if it would not.

    Before it shows anything the frontend asks for every action's description
    (``get_services``; ``GET /api/services`` answers from the same code). Newer releases
    check those descriptions' filters against 19 entity platforms they import (2026.10:
    helpers/service.py ``_base_components``), whose packages a venv may lack; then the call
    fails, and Home Assistant's log names the missing modules.
    """
    assert demo.session is not None
    status, _ = demo.session.get("/api/services", timeout=60.0)
    if status == 200:
        return None
    try:
        log = demo.ha_log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        log = ""
    modules = sorted(set(re.findall(r"No module named '([\w.]+)'", log)))
    return f"GET /api/services answers {status}; missing modules: {', '.join(modules) or '?'}"


@pytest.fixture
def demo(socket_enabled: None, tmp_path: Path) -> Iterator[Demo]:
    if lacking := missing():
        pytest.skip(
            f"no browser for the UI walk: {', '.join(lacking)} (scripts/test installs "
            "them as root on Debian: scripts/_browser.sh)"
        )
    ports, _ = pick_ports(Ports(0, 0, 0))
    demo = Demo(workdir=tmp_path / "demo", ports=ports, seed_entry=False, history=True)
    try:
        demo.prepare()
        demo.start_services()
        demo.start_hass()
        demo.onboard()
        if reason := frontend_cannot_start(demo):
            # The venv lacks packages of Home Assistant's own components. The leg's
            # requirements file pins them: in a venv scripts/test set up that is a failure.
            message = f"Home Assistant's frontend would not load in this venv: {reason}"
            if os.environ.get("HA_INGESTOR_TEST_LEG"):
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
        yield demo
    finally:
        demo.stop()
        for log in (demo.ha_log, *sorted(demo.logs_dir.glob("*.log"))):
            print(f"--- {log}:\n{tail(log, 40)}")


def walk_arguments(demo: Demo, shots: Path) -> dict[str, object]:
    assert demo.login is not None
    errors = json.loads(STRINGS.read_text(encoding="utf-8"))["config"]["error"]
    return {
        "url": demo.ha_url,
        "user": demo.login.username,
        "password": demo.login.password,
        "storage_url": demo.storage_url,
        "enrichment_url": demo.enrichment_url,
        "token": demo.token,
        # The enrichment's URL where storage's belongs: the flow names the mix-up.
        "wrong_url": demo.enrichment_url,
        "wrong_url_error": errors["answers_as_enrichment"],
        "glob": "sensor.*_linkquality",
        "dashboard": yaml.safe_load(DASHBOARD.read_text(encoding="utf-8")),
        "shots": str(shots),
        "timeout": STEP_TIMEOUT,
    }


def run_walk(arguments: dict[str, object]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.setdefault("PLAYWRIGHT_CORE", str(PLAYWRIGHT_CORE))
    env.setdefault("CHROMIUM", shutil.which("chromium") or "chromium")
    return subprocess.run(
        ["node", str(WALK), json.dumps(arguments)],
        capture_output=True,
        text=True,
        timeout=WALK_TIMEOUT,
        env=env,
        check=False,
    )


def test_the_ui_walk(demo: Demo, tmp_path: Path) -> None:
    shots = tmp_path / "shots"
    shots.mkdir()
    result = run_walk(walk_arguments(demo, shots))
    print(result.stdout, result.stderr)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    seen = result.stdout
    for step in (
        "logged in as demo",
        "the form says",
        "the entry is made",
        "options opened again show sensor.*_linkquality",
        "device page: Events delivered went from",
        "repairs: ",
        "the dead letters issue is gone",
        "dashboard: status, outbox, dead letters, connectivity and both graphs",
    ):
        assert step in seen, seen
    # What the UI made is what Home Assistant has: one entry, on the demo's services.
    assert demo.find_entry()
    assert demo.session is not None
    status, entries = demo.session.get("/api/config/config_entries/entry")
    assert status == 200
    (entry,) = [e for e in entries if e["domain"] == "ha_ingestor"]
    assert entry["state"] == "loaded"
    assert demo.queued_in_ha() is not None
