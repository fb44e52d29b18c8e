"""A whole life of an entry, and Home Assistant has nothing to complain about.

Home Assistant reports an integration's use of a deprecated API (or of one it is about to
refuse) with a warning log that starts "Detected that custom integration 'ha_ingestor'"
(`helpers.frame.report_usage`, the same words in every supported release), or, for a
deprecated constant, a warning naming the integration. Libraries raise
`DeprecationWarning`s. Either fails this test, so the next Home Assistant release cannot
turn one of them into an error unnoticed. The entry runs on real receivers and goes through
everything the integration does: set-up with every entity, events of all kinds, every
action (a backfill from the recorder among them), live options, a reconfigure that drops a
service, reloads (each fills its gap from the recorder) and an unload.
"""

from __future__ import annotations

import logging
import warnings
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from homeassistant.config_entries import ConfigEntryState
from homeassistant.util import dt as dt_util

from custom_components.ha_ingestor.actions import (
    ACTION_BACKFILL,
    ACTION_CANCEL_BACKFILL,
    ACTION_FLUSH,
    ACTION_FORWARD_EVENT,
    ACTION_PAUSE,
    ACTION_PURGE_DEAD_LETTERS,
    ACTION_REPLAY_DEAD_LETTERS,
    ACTION_RESUME,
)
from custom_components.ha_ingestor.const import (
    ALL_EVENTS,
    CONF_BATCH_SIZE,
    CONF_DURABILITY,
    CONF_ENRICHMENT_URL,
    CONF_EVENT_TYPES,
    CONF_EXCLUDE_DOMAINS,
    CONF_WEATHER_ENTITY,
    DOMAIN,
)
from tests.integration.common import flush, make_entry, setup_entry, tick, unload
from tests.pipeline.fault_server import REJECT_MARKER

if TYPE_CHECKING:
    from collections.abc import Generator

    from homeassistant.core import HomeAssistant

    from tests.pipeline.fault_server import FaultServer

REPORT_PREFIX = f"Detected that custom integration '{DOMAIN}'"
DEPRECATION_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def complaints(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Home Assistant's warnings about how this integration uses it."""
    found = []
    for record in caplog.records:
        if record.levelno < logging.WARNING:
            continue
        message = record.getMessage()
        # Deprecated constants: "X was used from ha_ingestor, this is a deprecated ..."
        # (2025.4) or "The deprecated constant X was used from ha_ingestor." (later).
        deprecated_use = "deprecated" in message and f"from {DOMAIN}" in message
        if message.startswith(REPORT_PREFIX) or deprecated_use:
            found.append(message)
    return found


@pytest.fixture
def caught_warnings() -> Generator[list[warnings.WarningMessage]]:
    """Every warning of the test; deprecations recorded whatever the filters say.

    Not pytest's ``recwarn``: that lets every warning through, so the configured
    ``error::pytest.PytestUnraisableExceptionWarning`` would no longer fail the test.
    Here the configured filters stay, and the other warnings go on to pytest afterwards.
    """
    with warnings.catch_warnings(record=True) as caught:
        for category in DEPRECATION_WARNINGS:
            warnings.simplefilter("always", category)
        yield caught
    for warning in caught:
        if not issubclass(warning.category, DEPRECATION_WARNINGS):
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )


def our_deprecation_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """Deprecation warnings raised from the integration's own files."""
    return [
        f"{warning.filename}:{warning.lineno}: {warning.message}"
        for warning in caught
        if issubclass(warning.category, DEPRECATION_WARNINGS)
        and "custom_components/ha_ingestor/" in warning.filename.replace("\\", "/")
    ]


@pytest.fixture
def mock_recorder_before_hass(async_test_recorder: Any) -> None:
    """The recorder's database is prepared before Home Assistant (the harness needs it)."""


async def call(hass: HomeAssistant, action: str, data: dict[str, Any], *, response: bool) -> Any:
    return await hass.services.async_call(
        DOMAIN, action, data, blocking=True, return_response=response
    )


@pytest.mark.usefixtures("entity_registry_enabled_by_default", "recorder_mock")
async def test_a_whole_life_without_complaints(
    hass: HomeAssistant,
    storage_server: FaultServer,
    enrichment_server: FaultServer,
    caplog: pytest.LogCaptureFixture,
    caught_warnings: list[warnings.WarningMessage],
) -> None:
    hass.states.async_set("weather.home", "sunny", {"temperature": 20, "humidity": 50})
    entry = await setup_entry(
        hass,
        make_entry(
            storage_server.url,
            enrichment_server.url,
            **{CONF_EVENT_TYPES: [ALL_EVENTS], CONF_WEATHER_ENTITY: "weather.home"},
        ),
    )

    # Events of every kind, one the storage refuses (a dead letter).
    hass.states.async_set("sensor.temperature", "21.5", {"unit_of_measurement": "°C"})
    hass.states.async_set("weather.home", "rainy", {"temperature": 12, "humidity": 80})
    hass.states.async_set("test.bad", "1", {REJECT_MARKER: True})
    hass.states.async_remove("sensor.temperature")
    hass.bus.async_fire("custom_event", {"answer": 42})
    await hass.async_block_till_done()
    await flush(entry)
    await tick(hass)

    # Every action the integration registers.
    actions = {
        ACTION_FORWARD_EVENT: ({"event_type": "custom_event", "event_data": {"a": 1}}, True),
        ACTION_FLUSH: ({"timeout": 10}, False),
        ACTION_REPLAY_DEAD_LETTERS: ({}, True),
        ACTION_PURGE_DEAD_LETTERS: ({}, True),
        ACTION_PAUSE: ({}, False),
        ACTION_RESUME: ({}, False),
        # Started, then cancelled while it waits for the recorder.
        ACTION_BACKFILL: ({"start": (dt_util.utcnow() - timedelta(hours=1)).isoformat()}, True),
        ACTION_CANCEL_BACKFILL: ({}, False),
    }
    assert set(hass.services.async_services_for_domain(DOMAIN)) == set(actions)
    for action, (data, response) in actions.items():
        await call(hass, action, data, response=response)
    await hass.async_block_till_done()

    # Options applied live, the outbox replaced on the way.
    hass.config_entries.async_update_entry(
        entry,
        options={
            **entry.options,
            CONF_EVENT_TYPES: ["state_changed", "custom_event"],
            CONF_EXCLUDE_DOMAINS: ["light"],
            CONF_DURABILITY: "on_backlog",
            CONF_BATCH_SIZE: 10,
            CONF_WEATHER_ENTITY: None,
        },
    )
    await hass.async_block_till_done()
    hass.states.async_set("sensor.temperature", "22")
    await hass.async_block_till_done()
    await flush(entry)

    # A reconfigure without the enrichment (its device goes), then a plain reload.
    hass.config_entries.async_update_entry(
        entry, data={key: value for key, value in entry.data.items() if key != CONF_ENRICHMENT_URL}
    )
    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    hass.states.async_set("sensor.temperature", "23")
    await hass.async_block_till_done()
    await flush(entry)
    await tick(hass)

    await unload(hass, entry)
    assert storage_server.stored_ids  # the run did deliver

    found = complaints(caplog) + our_deprecation_warnings(caught_warnings)
    assert not found, "\n".join(found)
