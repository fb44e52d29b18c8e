"""Diagnostics: configuration, pipeline state, last errors and dead letters; no secrets."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import orjson
from homeassistant.const import EVENT_CALL_SERVICE, EVENT_HOMEASSISTANT_FINAL_WRITE
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)

from custom_components.ha_ingestor.const import (
    CONF_EVENT_TYPES,
    CONF_INCLUDE_DOMAINS,
    CONF_STORAGE_FAILOVER_URLS,
    CONF_WEATHER_ENTITY,
)
from custom_components.ha_ingestor.diagnostics import (
    MAX_PAYLOAD_CHARS,
    _dead_letter,
    _scrub,
    _truncate,
)
from custom_components.ha_ingestor.pipeline.outbox import DeadLetter
from tests.integration.common import make_entry, refuse, setup_entry, unload
from tests.integration.conftest import TOKEN

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from homeassistant.core import HomeAssistant
    from pytest_homeassistant_custom_component.typing import ClientSessionGenerator
    from syrupy.assertion import SnapshotAssertion

    from tests.pipeline.fault_server import FaultServer

# Values that change from run to run (times, latencies, ids): kept as their type only.
VOLATILE = {
    "at",
    "time",
    "since",
    "down_since",
    "last_check",
    "first_failure",
    "last_failure",
    "last_delivery",
    "last_error_at",
    "oldest_enqueued_at",
    "retry_at",
    "latency_ms",
    "last_latency_ms",
    "p50",
    "p95",
    "p99",
    "p95_latency_ms",
    "event_id",
    "id",
    "instance_id",
    "timestamp",
}


def normalize(value: Any, urls: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            normalize(key, urls): (
                f"<{type(item).__name__}>"
                if key in VOLATILE and item is not None and not isinstance(item, dict)
                else normalize(item, urls)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [normalize(item, urls) for item in value]
    if isinstance(value, str):
        for url, name in urls.items():
            value = value.replace(url, name)
        value = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", value)
        return re.sub(r"'127\.0\.0\.1', \d+", "'127.0.0.1', <port>", value)
    return value


async def test_diagnostics(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    fault_server_factory: Callable[..., Awaitable[FaultServer]],
    snapshot: SnapshotAssertion,
) -> None:
    storage = await fault_server_factory(token=TOKEN, name="storage")
    gone = await fault_server_factory(token=TOKEN, name="gone")
    await gone.refuse()
    failover = gone.url
    hass.states.async_set(
        "weather.home", "sunny", {"temperature": 20, "humidity": 50, "pressure": 1010}
    )
    entry = await setup_entry(
        hass,
        make_entry(
            storage.url,
            data={CONF_STORAGE_FAILOVER_URLS: [failover]},
            **{
                CONF_EVENT_TYPES: ["state_changed"],
                CONF_INCLUDE_DOMAINS: ["test"],
                CONF_WEATHER_ENTITY: "weather.home",
            },
        ),
    )
    runtime = entry.runtime_data.runtime
    await runtime.registry.check_all_services()  # the failover URL is known to be down

    storage.reject_if = lambda event: event["data"].get("entity_id") == "test.bad"
    hass.states.async_set("test.good", "1")
    await hass.async_block_till_done()
    assert (await runtime.forwarder.flush(10)).done
    hass.states.async_set(
        "test.bad",
        "2",
        {"note": "x" * 500, "latitude": 52.1, "entity_picture": "/api/camera?token=abc"},
    )
    await hass.async_block_till_done()
    assert (await runtime.forwarder.flush(10)).done
    await entry.runtime_data.coordinator.async_refresh()

    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)

    text = orjson.dumps(diagnostics).decode()
    assert TOKEN not in text
    assert "52.1" not in text
    assert "token=abc" not in text
    assert str(hass.config.latitude) not in text
    assert diagnostics["entry"]["data"]["api_token"] == "**REDACTED**"
    assert len(diagnostics["dead_letters"]) == 1
    assert diagnostics["dead_letters"][0]["payload"]["data"]["entity_id"] == "test.bad"
    assert (
        normalize(diagnostics, {storage.url: "http://storage", gone.url: "http://gone"}) == snapshot
    )
    await unload(hass, entry)


async def test_diagnostics_keep_at_most_five_dead_letters(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    fault_server_factory: Callable[..., Awaitable[FaultServer]],
) -> None:
    storage = await fault_server_factory(token=TOKEN, name="storage")
    entry = await setup_entry(hass, make_entry(storage.url))
    storage.reject_if = lambda event: True
    for number in range(8):
        hass.states.async_set(f"test.bad_{number}", "on")
    await hass.async_block_till_done()
    assert (await entry.runtime_data.runtime.forwarder.flush(10)).done

    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    assert diagnostics["outbox"]["dead_letters"] == 8
    assert [letter["payload"]["data"]["entity_id"] for letter in diagnostics["dead_letters"]] == [
        f"test.bad_{number}" for number in range(5)
    ]
    await unload(hass, entry)


def test_scrub_masks_the_token_and_url_credentials() -> None:
    # The config flow refuses URLs with credentials; diagnostics mask them all the same.
    data = {
        "url": "http://user:hunter2@host:8004/api",
        "message": f"refused Bearer {TOKEN}",
        f"key {TOKEN}": ["https://a:b@c", 3, None],
    }
    assert _scrub(data, TOKEN) == {
        "url": "http://**REDACTED**@host:8004/api",
        "message": "refused Bearer **REDACTED**",
        "key **REDACTED**": ["https://**REDACTED**@c", 3, None],
    }
    assert _scrub(data, None)["message"] == f"refused Bearer {TOKEN}"


async def test_diagnostics_with_errors_and_after_stop(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    fault_server_factory: Callable[..., Awaitable[FaultServer]],
) -> None:
    storage = await fault_server_factory(token=TOKEN, name="storage")
    entry = await setup_entry(hass, make_entry(storage.url))
    runtime = entry.runtime_data.runtime
    await refuse(storage)
    hass.states.async_set("test.a", "1")
    await hass.async_block_till_done()
    assert not (await runtime.forwarder.flush(0.2)).done

    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    sources = {error["source"] for error in diagnostics["last_errors"]}
    assert {"forwarder", "storage client"} <= sources
    assert diagnostics["outbox"]["pending"] == 1

    # Home Assistant stopping closes the outbox; diagnostics still answer.
    hass.bus.async_fire(EVENT_HOMEASSISTANT_FINAL_WRITE)
    await hass.async_block_till_done()
    assert runtime.outbox.closed
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    assert diagnostics["dead_letters"] == []
    assert diagnostics["forwarder"]["state"] == "stopped"
    await unload(hass, entry)


def test_dead_letter_payloads_are_decoded_and_trimmed() -> None:
    def letter(payload: bytes) -> DeadLetter:
        return DeadLetter(1, "id", payload, "encode_error", "m" * 3000, "outbox", 1, 0.0, 0.0)

    assert _dead_letter(letter(b"\xff not json"))["payload"] == "\ufffd not json"
    assert _dead_letter(letter(b'"<Event custom>"'))["payload"] == "<Event custom>"
    assert len(_dead_letter(letter(b"{}"))["message"]) == MAX_PAYLOAD_CHARS

    wide = {f"k{number}": number for number in range(60)}
    trimmed = _truncate(wide)
    assert len(trimmed) == 51
    assert trimmed["…"] == "10 more keys"
    assert _truncate(list(range(25)))[-1] == "… 5 more items"
    deep: Any = "bottom"
    for _ in range(10):
        deep = [deep]
    assert "…" in orjson.dumps(_truncate(deep)).decode()


async def test_diagnostics_redact_alarm_and_lock_codes(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    fault_server_factory: Callable[..., Awaitable[FaultServer]],
) -> None:
    """The code and pin of an action call never show; elsewhere "code" is kept (issue 10)."""
    storage = await fault_server_factory(token=TOKEN, name="storage")
    entry = await setup_entry(
        hass, make_entry(storage.url, **{CONF_EVENT_TYPES: [EVENT_CALL_SERVICE, "custom"]})
    )
    storage.reject_if = lambda event: True
    hass.bus.async_fire(
        EVENT_CALL_SERVICE,
        {
            "domain": "alarm_control_panel",
            "service": "alarm_disarm",
            "service_data": {"entity_id": "alarm_control_panel.home", "code": "alarm-4711"},
        },
    )
    hass.bus.async_fire(
        EVENT_CALL_SERVICE,
        {
            "domain": "lock",
            "service": "unlock",
            "service_data": {
                "entity_id": ["lock.front"],
                "pin": 864208642,
                "extra": {"code": "lock-0815"},
            },
        },
    )
    hass.bus.async_fire("custom", {"code": "E42"})
    await hass.async_block_till_done()
    assert (await entry.runtime_data.runtime.forwarder.flush(10)).done

    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    text = orjson.dumps(diagnostics).decode()
    # Distinctive values: a bare 4-digit code can turn up by chance in an id or a time.
    for secret in ("alarm-4711", "864208642", "lock-0815"):
        assert secret not in text
    events = [letter["payload"]["data"] for letter in diagnostics["dead_letters"]]
    assert events[0]["data"]["service_data"] == {
        "entity_id": "alarm_control_panel.home",
        "code": "**REDACTED**",
    }
    assert events[0]["data"]["service"] == "alarm_disarm"
    assert events[1]["data"]["service_data"] == {
        "entity_id": ["lock.front"],
        "pin": "**REDACTED**",
        "extra": {"code": "**REDACTED**"},
    }
    assert events[2]["data"] == {"code": "E42"}  # not an action call: an ordinary value
    await unload(hass, entry)
