"""Only administrators may run the actions: each changes or reveals data (issue 10).

Calls without a user (automations, scripts) keep working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import Unauthorized

from custom_components.ha_ingestor.actions import (
    ACTION_BACKFILL,
    ACTION_CANCEL_BACKFILL,
    ACTION_FLUSH,
    ACTION_FORWARD_EVENT,
    ACTION_PAUSE,
    ACTION_PURGE_DEAD_LETTERS,
    ACTION_REPLAY_DEAD_LETTERS,
    ACTION_RESUME,
    AdminRequired,
)
from custom_components.ha_ingestor.const import DOMAIN
from tests.integration.common import flush, make_entry, setup_entry, unload

if TYPE_CHECKING:
    from homeassistant.auth.models import User
    from pytest_homeassistant_custom_component.common import MockConfigEntry
    from pytest_homeassistant_custom_component.typing import WebSocketGenerator

    from tests.pipeline.fault_server import FaultServer

# Every action with data that would change something if it ran.
CALLS: dict[str, dict[str, Any]] = {
    ACTION_FORWARD_EVENT: {"event_type": "made_up", "event_data": {"by": "intruder"}},
    ACTION_FLUSH: {"timeout": 5},
    ACTION_REPLAY_DEAD_LETTERS: {},
    ACTION_PURGE_DEAD_LETTERS: {},
    ACTION_PAUSE: {},
    ACTION_RESUME: {},
    ACTION_BACKFILL: {"start": "2026-01-01T00:00:00+00:00"},
    ACTION_CANCEL_BACKFILL: {},
}


@pytest.fixture
async def entry(hass: HomeAssistant, storage_server: FaultServer) -> MockConfigEntry:
    """A loaded entry with one dead letter and one stored event."""
    entry = await setup_entry(hass, make_entry(storage_server.url))
    storage_server.reject_if = lambda event: event["data"].get("entity_id") == "test.bad"
    hass.states.async_set("test.bad", "on")
    hass.states.async_set("test.good", "on")
    await hass.async_block_till_done()
    await flush(entry)
    storage_server.reject_if = None
    assert len(await entry.runtime_data.runtime.outbox.list_dead_letters()) == 1
    assert len(storage_server.stored_ids) == 1
    return entry


async def call(
    hass: HomeAssistant, action: str, context: Context, *, response: bool = False
) -> Any:
    return await hass.services.async_call(
        DOMAIN,
        action,
        CALLS[action],
        blocking=True,
        context=context,
        return_response=response,
    )


async def assert_unchanged(entry: MockConfigEntry, storage_server: FaultServer) -> None:
    runtime = entry.runtime_data.runtime
    assert len(storage_server.stored_ids) == 1  # no made-up event reached storage
    assert len(await runtime.outbox.list_dead_letters()) == 1  # none replayed or purged
    assert not runtime.forwarder.paused


@pytest.mark.parametrize("action", CALLS)
async def test_a_user_who_is_not_admin_is_refused(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    storage_server: FaultServer,
    hass_read_only_user: User,
    action: str,
) -> None:
    with pytest.raises(AdminRequired) as err:
        await call(hass, action, Context(user_id=hass_read_only_user.id))
    # Home Assistant's own kind of refusal, with a translated message naming the action.
    assert isinstance(err.value, Unauthorized)
    assert err.value.user_id == hass_read_only_user.id
    assert err.value.translation_domain == DOMAIN
    assert err.value.translation_key == "admin_required"
    assert err.value.translation_placeholders == {"action": f"{DOMAIN}.{action}"}
    assert str(err.value).startswith(f"Only an administrator can run {DOMAIN}.{action}:")
    await assert_unchanged(entry, storage_server)
    await unload(hass, entry)


async def test_resume_by_a_user_who_is_not_admin_leaves_it_paused(
    hass: HomeAssistant, entry: MockConfigEntry, hass_read_only_user: User
) -> None:
    entry.runtime_data.runtime.forwarder.pause()
    with pytest.raises(AdminRequired):
        await call(hass, ACTION_RESUME, Context(user_id=hass_read_only_user.id))
    assert entry.runtime_data.runtime.forwarder.paused
    await unload(hass, entry)


async def test_an_unknown_user_is_refused(
    hass: HomeAssistant, entry: MockConfigEntry, storage_server: FaultServer
) -> None:
    with pytest.raises(AdminRequired):
        await call(hass, ACTION_FORWARD_EVENT, Context(user_id="no-such-user"))
    await assert_unchanged(entry, storage_server)
    await unload(hass, entry)


@pytest.mark.parametrize("user", ["admin", None], ids=["admin", "automation"])
async def test_an_admin_and_a_call_without_user_are_served(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    storage_server: FaultServer,
    hass_admin_user: User,
    user: str | None,
) -> None:
    context = Context(user_id=hass_admin_user.id if user else None)
    runtime = entry.runtime_data.runtime

    result = await call(hass, ACTION_FORWARD_EVENT, context, response=True)
    assert result["status"] == "stored"
    assert len(storage_server.stored_ids) == 2
    await call(hass, ACTION_PAUSE, context)
    assert runtime.forwarder.paused
    await call(hass, ACTION_RESUME, context)
    assert not runtime.forwarder.paused
    assert await call(hass, ACTION_FLUSH, context, response=True) == {
        "delivered": 0,
        "waiting": 0,
    }
    assert await call(hass, ACTION_REPLAY_DEAD_LETTERS, context, response=True) == {"replayed": 1}
    await flush(entry)
    assert await call(hass, ACTION_PURGE_DEAD_LETTERS, context, response=True) == {"purged": 0}
    assert len(storage_server.stored_ids) == 3
    await unload(hass, entry)


async def test_the_refusal_reaches_the_frontend_translated(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    storage_server: FaultServer,
    hass_ws_client: WebSocketGenerator,
    hass_read_only_access_token: str,
) -> None:
    client = await hass_ws_client(hass, hass_read_only_access_token)
    await client.send_json_auto_id(
        {
            "type": "call_service",
            "domain": DOMAIN,
            "service": ACTION_FORWARD_EVENT,
            "service_data": CALLS[ACTION_FORWARD_EVENT],
        }
    )
    answer = await client.receive_json()
    assert not answer["success"]
    assert answer["error"]["translation_key"] == "admin_required"
    assert answer["error"]["translation_domain"] == DOMAIN
    await assert_unchanged(entry, storage_server)
    await unload(hass, entry)
