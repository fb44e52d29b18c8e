"""The actions: forward_event, flush, replay/purge dead letters, pause and resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import voluptuous as vol
import yaml
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from pytest_homeassistant_custom_component.common import MockConfigEntry

import custom_components.ha_ingestor
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
    DOMAIN,
)
from custom_components.ha_ingestor.pipeline.forwarder import ForwarderState
from tests.integration.common import make_entry, refuse, setup_entry, unload
from tests.integration.conftest import TOKEN
from tests.pipeline.fault_server import BATCH_PATH, EVENT_PATH, REJECT_MARKER, Fault, FaultServer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from homeassistant.auth.models import User


ACTIONS = {
    ACTION_FORWARD_EVENT,
    ACTION_FLUSH,
    ACTION_REPLAY_DEAD_LETTERS,
    ACTION_PURGE_DEAD_LETTERS,
    ACTION_PAUSE,
    ACTION_RESUME,
    ACTION_BACKFILL,
    ACTION_CANCEL_BACKFILL,
}


@pytest.fixture
async def entry(hass: HomeAssistant, storage_server: FaultServer) -> MockConfigEntry:
    return await setup_entry(hass, make_entry(storage_server.url))


async def call(
    hass: HomeAssistant,
    action: str,
    data: dict[str, Any] | None = None,
    *,
    response: bool = False,
    context: Context | None = None,
) -> Any:
    return await hass.services.async_call(
        DOMAIN, action, data or {}, blocking=True, return_response=response, context=context
    )


async def dead_letter_ids(entry: MockConfigEntry) -> list[int]:
    letters = await entry.runtime_data.runtime.outbox.list_dead_letters()
    return [letter.id for letter in letters]


# -- forward_event -----------------------------------------------------------------------


async def test_forward_event_returns_the_receivers_result(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    storage_server: FaultServer,
    hass_admin_user: User,
) -> None:
    context = Context(user_id=hass_admin_user.id)
    result = await call(
        hass,
        ACTION_FORWARD_EVENT,
        {"event_type": "custom_event", "event_data": {"answer": 42}, "entity_id": "sensor.x"},
        response=True,
        context=context,
    )

    assert result["status"] == "stored"
    assert result["service"] == "storage"
    event_id = result["event_id"]
    assert storage_server.stored_ids == [event_id]
    request = storage_server.requests_to(EVENT_PATH)[-1]
    assert request.correlation_id == result["correlation_id"]
    assert request.idempotency_key == event_id
    envelope = storage_server.received[-1]
    assert envelope["correlation_id"] == result["correlation_id"]
    assert envelope["data"]["event_type"] == "custom_event"
    assert envelope["data"]["entity_id"] == "sensor.x"
    assert envelope["data"]["data"] == {"answer": 42, "entity_id": "sensor.x"}
    assert envelope["data"]["context"]["user_id"] == hass_admin_user.id
    assert envelope["context"]["instance_id"]
    # Sent at once on its own, not through the outbox and its batches.
    assert request.event_ids == [event_id]

    # Without asking for the response the action works the same.
    assert await call(hass, ACTION_FORWARD_EVENT, {"event_type": "other"}) is None
    assert len(storage_server.stored_ids) == 2
    await unload(hass, entry)


async def test_forward_event_state_changed_and_rejected(
    hass: HomeAssistant, entry: MockConfigEntry, storage_server: FaultServer
) -> None:
    result = await call(
        hass,
        ACTION_FORWARD_EVENT,
        {
            "event_type": "state_changed",
            "entity_id": "sensor.t",
            "event_data": {"new_state": {"state": "21", "attributes": {"unit": "°C"}}},
        },
        response=True,
    )
    assert result["status"] == "stored"
    assert storage_server.received[-1]["data"]["state"] == "21"

    rejected = await call(
        hass,
        ACTION_FORWARD_EVENT,
        {
            "event_type": "state_changed",
            "entity_id": "sensor.t",
            "event_data": {"new_state": {"state": "x", "attributes": {REJECT_MARKER: True}}},
        },
        response=True,
    )
    assert rejected["status"] == "rejected"
    assert rejected["error"]["code"] == "VALIDATION_ERROR"
    await unload(hass, entry)


@pytest.mark.parametrize(
    ("data", "key", "field"),
    [
        ({"event_type": "state_changed"}, "invalid_event", "entity_id"),
        (
            {
                "event_type": "state_changed",
                "entity_id": "sensor.a",
                "event_data": {"new_state": 3},
            },
            "invalid_event",
            "event_data.new_state",
        ),
        (
            {"event_type": "big", "event_data": {"blob": "x" * 300_000}},
            "event_too_large",
            "event",
        ),
        ({"event_type": "   "}, "invalid_event", "event_type"),
    ],
)
async def test_forward_event_invalid_input_names_the_field(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    storage_server: FaultServer,
    data: dict[str, Any],
    key: str,
    field: str,
) -> None:
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, ACTION_FORWARD_EVENT, data, response=True)
    assert err.value.translation_domain == DOMAIN
    assert err.value.translation_key == key
    assert err.value.translation_placeholders is not None
    assert err.value.translation_placeholders["field"] == field
    assert storage_server.requests_to(EVENT_PATH) == []
    await unload(hass, entry)


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"event_type": ""},
        {"event_type": "x" * 65},
        {"event_type": "e", "entity_id": "not an entity"},
        {"event_type": "e", "event_data": [1, 2]},
        {"event_type": "e", "unknown": 1},
    ],
)
async def test_forward_event_schema(
    hass: HomeAssistant, entry: MockConfigEntry, data: dict[str, Any]
) -> None:
    with pytest.raises(vol.Invalid):
        await call(hass, ACTION_FORWARD_EVENT, data, response=True)
    await unload(hass, entry)


async def test_forward_event_receiver_down(
    hass: HomeAssistant, entry: MockConfigEntry, storage_server: FaultServer
) -> None:
    await refuse(storage_server)
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, ACTION_FORWARD_EVENT, {"event_type": "e"}, response=True)
    assert not isinstance(err.value, ServiceValidationError)
    assert err.value.translation_key == "service_unavailable"
    assert err.value.translation_placeholders is not None
    assert err.value.translation_placeholders["service"] == "storage"
    await unload(hass, entry)


async def test_forward_event_answers_of_the_receiver(
    hass: HomeAssistant, entry: MockConfigEntry, storage_server: FaultServer
) -> None:
    # A 4xx without a result for the event: the service refused the request.
    storage_server.fail_next(1, 400, path=EVENT_PATH)
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, ACTION_FORWARD_EVENT, {"event_type": "e"}, response=True)
    assert err.value.translation_key == "rejected_by_service"
    assert err.value.translation_placeholders is not None
    assert err.value.translation_placeholders["code"] == "HTTP_400"

    storage_server.fail_next(1, 413, path=EVENT_PATH)
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, ACTION_FORWARD_EVENT, {"event_type": "e"}, response=True)
    assert err.value.translation_key == "rejected_by_service"

    # A 503 three times: the call retried (a person is waiting), then gave up.
    storage_server.fail_next(3, 503, path=EVENT_PATH)
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, ACTION_FORWARD_EVENT, {"event_type": "e"}, response=True)
    assert err.value.translation_key == "service_unavailable"
    assert len(storage_server.requests_to(EVENT_PATH)) == 5

    # A refused token: translated, and not the user's input at fault.
    storage_server.token = "another-token"
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, ACTION_FORWARD_EVENT, {"event_type": "e"}, response=True)
    assert not isinstance(err.value, ServiceValidationError)
    assert err.value.translation_key == "auth_failed"
    await unload(hass, entry)


async def test_forward_event_uses_the_enrichment_then_the_fallback(
    hass: HomeAssistant,
    storage_server: FaultServer,
    enrichment_server: FaultServer,
) -> None:
    entry = await setup_entry(hass, make_entry(storage_server.url, enrichment_server.url))
    result = await call(hass, ACTION_FORWARD_EVENT, {"event_type": "e"}, response=True)
    assert result["service"] == "enrichment"
    assert enrichment_server.stored_ids == [result["event_id"]]

    # The forwarder stopped using the enrichment (refused token): so does the action.
    entry.runtime_data.runtime.forwarder._auth_failed.add("enrichment")
    result = await call(hass, ACTION_FORWARD_EVENT, {"event_type": "e"}, response=True)
    assert result["service"] == "storage"
    assert storage_server.stored_ids == [result["event_id"]]

    entry.runtime_data.runtime.forwarder._auth_failed.add("storage")
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, ACTION_FORWARD_EVENT, {"event_type": "e"}, response=True)
    assert err.value.translation_key == "auth_failed"
    await unload(hass, entry)


async def test_forward_event_odd_answers(
    hass: HomeAssistant, entry: MockConfigEntry, storage_server: FaultServer
) -> None:
    # 2xx without per-event results: the receiver took it.
    storage_server.add_faults(Fault.answer(200, body=b"accepted", path=EVENT_PATH))
    result = await call(hass, ACTION_FORWARD_EVENT, {"event_type": "e"}, response=True)
    assert result["status"] == "stored"

    # 2xx with results that do not name the event: not confirmed.
    storage_server.add_faults(Fault.answer(200, body=b'{"results": []}', path=EVENT_PATH))
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, ACTION_FORWARD_EVENT, {"event_type": "e"}, response=True)
    assert not isinstance(err.value, ServiceValidationError)
    assert err.value.translation_key == "unconfirmed"

    # A 4xx whose body is not JSON: its text is the message.
    storage_server.add_faults(Fault.answer(404, body=b"no such path", path=EVENT_PATH))
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, ACTION_FORWARD_EVENT, {"event_type": "e"}, response=True)
    assert err.value.translation_placeholders == {
        "service": "storage",
        "code": "HTTP_404",
        "message": "no such path",
    }

    # Every breaker open: no request at all, and the error says so at once.
    for breaker in entry.runtime_data.runtime.clients["storage"].breakers.values():
        for _ in range(5):
            breaker.record_failure()
    requests = len(storage_server.requests)
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, ACTION_FORWARD_EVENT, {"event_type": "e"}, response=True)
    assert err.value.translation_key == "service_unavailable"
    assert len(storage_server.requests) == requests
    await unload(hass, entry)


# -- which entry -------------------------------------------------------------------------


async def test_entry_selection(
    hass: HomeAssistant,
    fault_server_factory: Callable[..., Awaitable[FaultServer]],
) -> None:
    first_server = await fault_server_factory(token=TOKEN)
    second_server = await fault_server_factory(token=TOKEN)
    first = await setup_entry(hass, make_entry(first_server.url))

    # One loaded entry: the default.
    result = await call(hass, ACTION_FORWARD_EVENT, {"event_type": "e"}, response=True)
    assert first_server.stored_ids == [result["event_id"]]

    second = await setup_entry(hass, make_entry(second_server.url))
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, ACTION_PAUSE)
    assert err.value.translation_key == "several_entries"
    assert err.value.translation_placeholders == {"count": "2"}
    assert str(err.value) == ("2 HA Ingestor entries are loaded. Choose one with config_entry_id")

    await call(hass, ACTION_PAUSE, {"config_entry_id": second.entry_id})
    assert second.runtime_data.runtime.forwarder.paused
    assert not first.runtime_data.runtime.forwarder.paused
    result = await call(
        hass,
        ACTION_FORWARD_EVENT,
        {"event_type": "e", "config_entry_id": second.entry_id},
        response=True,
    )
    assert second_server.stored_ids == [result["event_id"]]

    with pytest.raises(ServiceValidationError) as err:
        await call(hass, ACTION_RESUME, {"config_entry_id": "no-such-entry"})
    assert err.value.translation_key == "entry_not_found"

    other_domain = MockConfigEntry(domain="other_domain")
    other_domain.add_to_hass(hass)
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, ACTION_RESUME, {"config_entry_id": other_domain.entry_id})
    assert err.value.translation_key == "entry_not_found"

    await unload(hass, second)
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, ACTION_RESUME, {"config_entry_id": second.entry_id})
    assert err.value.translation_key == "entry_not_loaded"
    assert err.value.translation_placeholders == {"title": second.title}

    await unload(hass, first)
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, ACTION_FLUSH)
    assert err.value.translation_key == "no_loaded_entry"


# -- flush, pause, resume ----------------------------------------------------------------


async def test_pause_flush_resume(
    hass: HomeAssistant, entry: MockConfigEntry, storage_server: FaultServer
) -> None:
    runtime = entry.runtime_data.runtime
    await call(hass, ACTION_PAUSE)
    assert runtime.forwarder.paused
    assert runtime.forwarder.state is ForwarderState.PAUSED
    assert entry.runtime_data.coordinator.data.paused
    await call(hass, ACTION_PAUSE)  # twice is fine
    assert runtime.forwarder.paused

    hass.states.async_set("test.a", "1")
    hass.states.async_set("test.a", "2")
    await hass.async_block_till_done()
    assert await runtime.outbox.sync() == 2

    with pytest.raises(ServiceValidationError) as err:
        await call(hass, ACTION_FLUSH)
    assert err.value.translation_key == "flush_paused"
    assert storage_server.stored_ids == []

    await call(hass, ACTION_RESUME)
    assert not runtime.forwarder.paused
    assert not entry.runtime_data.coordinator.data.paused
    answer = await call(hass, ACTION_FLUSH, {"timeout": 10}, response=True)
    assert answer == {"delivered": 2, "waiting": 0}
    assert len(storage_server.stored_ids) == 2
    assert (await runtime.outbox.stats()).pending == 0
    await call(hass, ACTION_FLUSH)  # without asking for the answer, as scripts often do
    await unload(hass, entry)


async def test_flush_times_out_while_the_service_is_down(
    hass: HomeAssistant, entry: MockConfigEntry, storage_server: FaultServer
) -> None:
    await refuse(storage_server)
    hass.states.async_set("test.a", "1")
    await hass.async_block_till_done()
    assert await entry.runtime_data.runtime.outbox.sync() == 1

    with pytest.raises(HomeAssistantError) as err:
        await call(hass, ACTION_FLUSH, {"timeout": 0.2})
    # It names the service that does not take the events, and why.
    assert err.value.translation_key == "flush_timeout_service"
    placeholders = dict(err.value.translation_placeholders or {})
    assert "Cannot connect" in placeholders.pop("error")
    assert placeholders == {
        "timeout": "0.2",
        "delivered": "0",
        "pending": "1",
        "service": "storage",
    }

    with pytest.raises(vol.Invalid):
        await call(hass, ACTION_FLUSH, {"timeout": 0})
    # Nothing is lost by a flush that gave up.
    assert (await entry.runtime_data.runtime.outbox.stats()).pending == 1
    await unload(hass, entry)


async def test_flush_times_out_while_a_slow_service_still_works(
    hass: HomeAssistant, entry: MockConfigEntry, storage_server: FaultServer
) -> None:
    storage_server.add_faults(Fault.slow(1.0, path=BATCH_PATH))
    hass.states.async_set("test.a", "1")
    await hass.async_block_till_done()
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, ACTION_FLUSH, {"timeout": 0.2})
    # No batch failed: no service to blame, the events are on their way.
    assert err.value.translation_key == "flush_timeout"
    assert err.value.translation_placeholders == {
        "timeout": "0.2",
        "delivered": "0",
        "pending": "1",
    }
    answer = await call(hass, ACTION_FLUSH, {"timeout": 10}, response=True)
    assert answer == {"delivered": 1, "waiting": 0}
    await unload(hass, entry)


# -- dead letters ------------------------------------------------------------------------


async def test_replay_and_purge_dead_letters(
    hass: HomeAssistant, entry: MockConfigEntry, storage_server: FaultServer
) -> None:
    storage_server.reject_if = (
        lambda event: event["data"].get("entity_id", "").startswith("test.bad")
    )
    for number in range(4):
        hass.states.async_set(f"test.bad_{number}", "on")
    hass.states.async_set("test.good", "on")
    await hass.async_block_till_done()
    await call(hass, ACTION_FLUSH)
    ids = await dead_letter_ids(entry)
    assert len(ids) == 4
    assert len(storage_server.stored_ids) == 1

    # Replay two of them once the receiver accepts them.
    storage_server.reject_if = None
    assert await call(
        hass, ACTION_REPLAY_DEAD_LETTERS, {"ids": [str(ids[0]), ids[1]]}, response=True
    ) == {"replayed": 2}
    await call(hass, ACTION_FLUSH)
    assert len(storage_server.stored_ids) == 3
    assert await dead_letter_ids(entry) == ids[2:]
    assert entry.runtime_data.coordinator.data.dead_letters == 2

    # Unknown ids count nothing; purge one, then all.
    assert await call(hass, ACTION_PURGE_DEAD_LETTERS, {"ids": [999]}, response=True) == {
        "purged": 0
    }
    assert await call(hass, ACTION_PURGE_DEAD_LETTERS, {"ids": ids[2]}, response=True) == {
        "purged": 1
    }
    assert await call(hass, ACTION_PURGE_DEAD_LETTERS, response=True) == {"purged": 1}
    assert await dead_letter_ids(entry) == []
    assert await call(hass, ACTION_REPLAY_DEAD_LETTERS, response=True) == {"replayed": 0}
    assert await call(hass, ACTION_PURGE_DEAD_LETTERS) is None

    with pytest.raises(vol.Invalid):
        await call(hass, ACTION_PURGE_DEAD_LETTERS, {"ids": ["x"]})
    with pytest.raises(vol.Invalid):
        await call(hass, ACTION_REPLAY_DEAD_LETTERS, {"ids": [0]})
    await unload(hass, entry)


async def test_actions_are_registered_once_for_every_entry(
    hass: HomeAssistant,
    fault_server_factory: Callable[..., Awaitable[FaultServer]],
) -> None:
    server = await fault_server_factory(token=TOKEN)
    entry = await setup_entry(hass, make_entry(server.url))
    registered = hass.services.async_services_for_domain(DOMAIN)
    assert set(registered) == ACTIONS
    await unload(hass, entry)
    # Actions stay registered after the entry unloads (and say why they cannot act).
    assert set(hass.services.async_services_for_domain(DOMAIN)) == set(registered)


# -- strings, services.yaml and icons in step ---------------------------------------------

EXCEPTION_KEYS = {
    "entry_not_found",
    "entry_not_loaded",
    "no_loaded_entry",
    "several_entries",
    "invalid_event",
    "event_too_large",
    "service_unavailable",
    "auth_failed",
    "unconfirmed",
    "rejected_by_service",
    "flush_paused",
    "flush_timeout",
    "admin_required",
}


def test_actions_are_described_everywhere() -> None:
    folder = Path(custom_components.ha_ingestor.__file__).parent
    services_yaml = yaml.safe_load((folder / "services.yaml").read_text())
    strings = json.loads((folder / "strings.json").read_text())
    assert json.loads((folder / "translations" / "en.json").read_text()) == strings
    icons = json.loads((folder / "icons.json").read_text())

    assert set(services_yaml) == ACTIONS
    assert set(strings["services"]) == ACTIONS
    assert set(icons["services"]) == ACTIONS
    for action, spec in services_yaml.items():
        described = strings["services"][action]
        assert described["name"]
        assert described["description"]
        assert set(spec.get("fields", {})) == set(described.get("fields", {}))
        for field in described.get("fields", {}).values():
            assert field["name"]
            assert field["description"]
    assert set(strings["exceptions"]) >= EXCEPTION_KEYS
    assert set(strings["issues"]) >= {"service_unreachable", "outbox_dropping", "dead_letters"}
