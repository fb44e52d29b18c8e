"""Repair issues appear when their condition starts and go when it ends."""

from __future__ import annotations

import itertools
import json
import logging
import re
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from homeassistant.components.repairs import repairs_flow_manager
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import issue_registry as ir
from homeassistant.setup import async_setup_component

from custom_components.ha_ingestor import issues, repairs
from custom_components.ha_ingestor.const import (
    CONF_FALLBACK_TO_STORAGE,
    CONF_MAX_EVENTS,
    DOMAIN,
)
from custom_components.ha_ingestor.issues import (
    DEAD_LETTERS_THRESHOLD,
    dead_letters_issue_id,
    outbox_issue_id,
    service_issue_id,
)
from tests.integration.common import make_entry, refuse, setup_entry, unload
from tests.pipeline.fault_server import REJECT_MARKER, FaultServer

if TYPE_CHECKING:
    from homeassistant.core import HomeAssistant
    from pytest_homeassistant_custom_component.common import MockConfigEntry


def issue(hass: HomeAssistant, issue_id: str) -> ir.IssueEntry | None:
    return ir.async_get(hass).async_get_issue(DOMAIN, issue_id)


STRINGS = json.loads((Path(repairs.__file__).parent / "strings.json").read_text(encoding="utf-8"))


def assert_translated(found: ir.IssueEntry) -> None:
    """The issue's text exists and every placeholder it uses is given."""
    text = STRINGS["issues"][found.translation_key]
    used = set(re.findall(r"{(\w+)}", text["title"] + text.get("description", "")))
    for step in text.get("fix_flow", {}).get("step", {}).values():
        used |= set(re.findall(r"{(\w+)}", step.get("title", "") + step.get("description", "")))
    assert used <= set(found.translation_placeholders or {})


def test_issue_texts_are_what_hassfest_accepts() -> None:
    """Every issue has a title and either a description or a fix flow, never both.

    A fixable issue shows its fix flow's first step instead of a description, so that
    step says what happened and what to do.
    """
    for key, text in STRINGS["issues"].items():
        assert text["title"], key
        assert ("description" in text) != ("fix_flow" in text), key
        if "fix_flow" in text:
            assert text["fix_flow"]["step"]["init"]["description"], key


async def refresh(entry: MockConfigEntry) -> None:
    await entry.runtime_data.coordinator.async_refresh()


async def test_service_unreachable(
    hass: HomeAssistant,
    storage_server: FaultServer,
    enrichment_server: FaultServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    entry = await setup_entry(hass, make_entry(storage_server.url, enrichment_server.url))
    registry = entry.runtime_data.runtime.registry
    storage_id = service_issue_id(entry.entry_id, "storage")
    enrichment_id = service_issue_id(entry.entry_id, "enrichment")

    caplog.set_level(logging.INFO)
    await refuse(storage_server)
    await refuse(enrichment_server)
    for _ in range(4):
        await registry.check_all_services()
    assert not registry.is_available("storage")
    await refresh(entry)
    # Down, but not for long yet.
    assert issue(hass, storage_id) is None

    monkeypatch.setattr(issues, "SERVICE_DOWN_AFTER", timedelta(0))
    await refresh(entry)
    storage_issue = issue(hass, storage_id)
    assert storage_issue is not None
    assert storage_issue.translation_key == "service_unreachable"
    assert storage_issue.severity is ir.IssueSeverity.ERROR
    assert not storage_issue.is_fixable
    assert storage_issue.translation_placeholders is not None
    assert storage_issue.translation_placeholders["service"] == "storage"
    assert storage_issue.translation_placeholders["url"] == storage_server.url
    assert storage_issue.translation_placeholders["title"] == entry.title
    assert storage_issue.data == {"entry_id": entry.entry_id}
    assert_translated(storage_issue)
    # The storage takes events while the enrichment is down: only a warning.
    enrichment_issue = issue(hass, enrichment_id)
    assert enrichment_issue is not None
    assert enrichment_issue.severity is ir.IssueSeverity.WARNING

    # Refreshing again changes nothing.
    created = storage_issue.created
    await refresh(entry)
    assert issue(hass, storage_id) is storage_issue
    assert storage_issue.created == created

    # Logged once when each URL went down, not at every failed check.
    down = [r for r in caplog.records if "is down" in r.getMessage()]
    assert len([r for r in down if storage_server.url in r.getMessage()]) == 1

    await storage_server.restore()
    await registry.check_service("storage")
    await refresh(entry)
    assert issue(hass, storage_id) is None
    assert issue(hass, enrichment_id) is not None
    back = [r for r in caplog.records if "is back" in r.getMessage()]
    assert len([r for r in back if storage_server.url in r.getMessage()]) == 1
    await unload(hass, entry)


async def test_enrichment_down_without_fallback_is_an_error(
    hass: HomeAssistant,
    storage_server: FaultServer,
    enrichment_server: FaultServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(issues, "SERVICE_DOWN_AFTER", timedelta(0))
    entry = await setup_entry(
        hass,
        make_entry(storage_server.url, enrichment_server.url, **{CONF_FALLBACK_TO_STORAGE: False}),
    )
    await refuse(enrichment_server)
    await entry.runtime_data.runtime.registry.check_service("enrichment")
    await entry.runtime_data.runtime.registry.check_service("enrichment")
    await refresh(entry)
    found = issue(hass, service_issue_id(entry.entry_id, "enrichment"))
    assert found is not None
    assert found.severity is ir.IssueSeverity.ERROR
    await unload(hass, entry)


async def test_outbox_dropping(hass: HomeAssistant, storage_server: FaultServer) -> None:
    entry = await setup_entry(hass, make_entry(storage_server.url, **{CONF_MAX_EVENTS: 5}))
    runtime = entry.runtime_data.runtime
    issue_id = outbox_issue_id(entry.entry_id)
    runtime.forwarder.pause()
    for value in range(12):
        hass.states.async_set("test.a", str(value))
    await hass.async_block_till_done()
    assert await runtime.outbox.sync() == 5
    await refresh(entry)

    found = issue(hass, issue_id)
    assert found is not None
    assert found.translation_key == "outbox_dropping"
    assert found.severity is ir.IssueSeverity.ERROR
    assert found.translation_placeholders is not None
    assert found.translation_placeholders["dropped"] == "7"
    assert found.translation_placeholders["max_events"] == "5"
    assert_translated(found)

    # Still at the cap: still dropping.
    await refresh(entry)
    assert issue(hass, issue_id) is not None

    runtime.forwarder.resume()
    assert (await runtime.forwarder.flush(10)).done
    await refresh(entry)
    assert issue(hass, issue_id) is None
    assert [event["data"]["state"] for event in storage_server.received] == [
        str(value) for value in range(7, 12)
    ]

    # Dropping again raises it again.
    runtime.forwarder.pause()
    for value in range(7):
        hass.states.async_set("test.a", f"again {value}")
    await hass.async_block_till_done()
    await runtime.outbox.sync()
    await refresh(entry)
    assert issue(hass, issue_id) is not None
    await unload(hass, entry)
    # Unloading the entry takes its issues with it.
    assert issue(hass, issue_id) is None


_values = itertools.count()


async def make_dead_letters(hass: HomeAssistant, entry: MockConfigEntry, count: int) -> None:
    for _ in range(count):
        hass.states.async_set("test.bad", str(next(_values)), {REJECT_MARKER: True})
    await hass.async_block_till_done()
    assert (await entry.runtime_data.runtime.forwarder.flush(10)).done
    await refresh(entry)


async def test_dead_letters_piling_up_and_the_fix_flow(
    hass: HomeAssistant, storage_server: FaultServer
) -> None:
    entry = await setup_entry(hass, make_entry(storage_server.url))
    issue_id = dead_letters_issue_id(entry.entry_id)
    await make_dead_letters(hass, entry, DEAD_LETTERS_THRESHOLD)
    assert entry.runtime_data.coordinator.data.dead_letters == DEAD_LETTERS_THRESHOLD
    assert issue(hass, issue_id) is None  # at the threshold, not over it

    await make_dead_letters(hass, entry, 1)
    found = issue(hass, issue_id)
    assert found is not None
    assert found.translation_key == "dead_letters"
    assert found.severity is ir.IssueSeverity.WARNING
    assert found.is_fixable
    assert found.translation_placeholders is not None
    assert found.translation_placeholders["count"] == str(DEAD_LETTERS_THRESHOLD + 1)
    assert_translated(found)

    assert await async_setup_component(hass, "repairs", {})
    manager = repairs_flow_manager(hass)
    assert manager is not None

    # Replay: they are rejected again, so the issue comes back.
    flow = await manager.async_init(DOMAIN, data={"issue_id": issue_id})
    assert flow["type"] is FlowResultType.MENU
    assert flow["menu_options"] == ["replay", "purge"]
    assert flow["description_placeholders"] == found.translation_placeholders
    result = await manager.async_configure(flow["flow_id"], {"next_step_id": "replay"})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert issue(hass, issue_id) is None
    assert (await entry.runtime_data.runtime.forwarder.flush(10)).done
    await refresh(entry)
    assert entry.runtime_data.coordinator.data.dead_letters == DEAD_LETTERS_THRESHOLD + 1
    assert issue(hass, issue_id) is not None

    # Purge: gone for good.
    flow = await manager.async_init(DOMAIN, data={"issue_id": issue_id})
    result = await manager.async_configure(flow["flow_id"], {"next_step_id": "purge"})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await refresh(entry)
    assert entry.runtime_data.coordinator.data.dead_letters == 0
    assert issue(hass, issue_id) is None

    # The fix flow of an entry that is no longer loaded aborts.
    await make_dead_letters(hass, entry, DEAD_LETTERS_THRESHOLD + 1)
    flow = await manager.async_init(DOMAIN, data={"issue_id": issue_id})
    entry.mock_state(hass, entry.state.NOT_LOADED)
    result = await manager.async_configure(flow["flow_id"], {"next_step_id": "purge"})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "entry_not_loaded"
    entry.mock_state(hass, entry.state.LOADED)
    await unload(hass, entry)


async def test_issues_left_from_an_earlier_run_are_cleared(
    hass: HomeAssistant, storage_server: FaultServer
) -> None:
    entry = make_entry(storage_server.url)
    stale = dead_letters_issue_id(entry.entry_id)
    ir.async_create_issue(
        hass,
        DOMAIN,
        stale,
        is_fixable=True,
        severity=ir.IssueSeverity.WARNING,
        translation_key="dead_letters",
    )
    await setup_entry(hass, entry)
    assert issue(hass, stale) is None
    await unload(hass, entry)


async def test_other_fix_flows_just_confirm(hass: HomeAssistant) -> None:
    flow = await repairs.async_create_fix_flow(hass, "something_else", None)
    assert type(flow).__name__ == "ConfirmRepairFlow"
