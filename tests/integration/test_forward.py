"""Forwarding one event now (forward.py), apart from the action and the view."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from homeassistant.exceptions import ServiceValidationError

from custom_components.ha_ingestor.forward import ForwardError, _field_name, async_forward_event
from tests.integration.common import make_entry, setup_entry, unload

if TYPE_CHECKING:
    from homeassistant.core import HomeAssistant
    from pytest_homeassistant_custom_component.common import MockConfigEntry

    from tests.pipeline.fault_server import FaultServer


@pytest.fixture
async def entry(hass: HomeAssistant, storage_server: FaultServer) -> MockConfigEntry:
    return await setup_entry(hass, make_entry(storage_server.url))


async def test_forward_event_data_that_cannot_be_serialized(
    hass: HomeAssistant, entry: MockConfigEntry
) -> None:
    # Not possible through the action's schema, but async_forward_event is shared.
    with pytest.raises(ForwardError) as err:
        await async_forward_event(entry.runtime_data.runtime, "e", {(1, 2): "x"})
    assert err.value.translation_key == "invalid_event"
    assert err.value.placeholders["field"] == "event_data"
    assert err.value.status == 422
    assert isinstance(err.value.to_ha_error(), ServiceValidationError)
    await unload(hass, entry)


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("data.entity_id", "entity_id"),
        ("data.new_state.attributes", "event_data.new_state.attributes"),
        ("data", "event_data"),
        ("event_type", "event_type"),
    ],
)
def test_field_names_in_the_actions_terms(path: str, field: str) -> None:
    assert _field_name(path) == field
