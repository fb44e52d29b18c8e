"""The README documents what the integration offers, and says it the way the code does.

Every set-up field, option, action and entity has a row in the README, under the label
the UI shows (strings.json); the entity table's "enabled" and "(diagnostic)" marks
match the entity descriptions. A new option or entity without documentation fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from homeassistant.components.sensor import SensorEntityDescription
from homeassistant.const import EntityCategory

from custom_components.ha_ingestor.sensor import SENSORS, SERVICE_SENSORS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
INTEGRATION = ROOT / "custom_components" / "ha_ingestor"
STRINGS = json.loads((INTEGRATION / "strings.json").read_text(encoding="utf-8"))


def section(title: str) -> str:
    """The README's text under a ``##``/``###`` heading, up to the next heading of any level."""
    match = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#+ |\Z)", README, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def table_rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows of ``text`` by their first cell (header and rule rows left out)."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.startswith("|") or set(line) <= set("|- "):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = cells
    return rows


def test_every_setup_field_is_documented() -> None:
    rows = table_rows(section("Installation parameters"))
    labels = STRINGS["config"]["step"]["user"]["data"]
    assert set(labels.values()) <= set(rows), set(labels.values()) - set(rows)


def test_every_option_is_documented() -> None:
    text = section("Configuration options")
    rows = table_rows(text)
    init = STRINGS["options"]["step"]["init"]
    labels = set(init["data"].values())
    for options_section in init["sections"].values():  # the form's sections
        assert f"**{options_section['name']}**" in text
        labels.update(options_section["data"].values())
    missing = labels - set(rows)
    assert not missing


def test_every_action_is_documented() -> None:
    actions = yaml.safe_load((INTEGRATION / "services.yaml").read_text(encoding="utf-8"))
    text = section("Actions")
    for action in actions:
        assert f"`ha_ingestor.{action}`" in text, action


@pytest.mark.parametrize(
    "description", [*SENSORS, *SERVICE_SENSORS], ids=lambda description: description.key
)
def test_every_sensor_is_documented_as_it_is(description: SensorEntityDescription) -> None:
    rows = table_rows(section("Devices and entities"))
    name = STRINGS["entity"]["sensor"][description.translation_key]["name"]
    diagnostic = description.entity_category is EntityCategory.DIAGNOSTIC
    label = f"{name} (diagnostic)" if diagnostic else name
    assert label in rows, label
    enabled = description.entity_registry_enabled_default
    assert rows[label][2] == ("yes" if enabled else "no"), label


def test_yaml_examples_parse() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", README, re.S)
    assert len(blocks) >= 5
    for block in blocks:
        yaml.safe_load(block)
