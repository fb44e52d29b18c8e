"""Zeroconf discovery (the config flow's zeroconf steps) with the discovery info Home
Assistant hands over, against real local receivers that answer a service id.

Every receiver listens on 127.0.0.1, so "another address" is another port, or an
address nothing is asked at (the flow decides before any network call).
"""

from __future__ import annotations

import json
import re
from ipaddress import ip_address
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from homeassistant.config_entries import SOURCE_IGNORE, SOURCE_ZEROCONF
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo
from homeassistant.loader import async_get_zeroconf

from custom_components.ha_ingestor.config_flow import CONF_USE_ENRICHMENT, default_options
from custom_components.ha_ingestor.const import (
    CONF_API_TOKEN,
    CONF_ENRICHMENT_URL,
    CONF_STORAGE_FAILOVER_URLS,
    CONF_STORAGE_URL,
    DOMAIN,
)
from custom_components.ha_ingestor.discovery import ZEROCONF_TYPE
from custom_components.ha_ingestor.pipeline.envelope import (
    ENRICHMENT_SERVICE_NAME,
    STORAGE_SERVICE_NAME,
)
from tests.integration.conftest import TOKEN
from tests.integration.flow_helpers import add_entry, entry_data, submit
from tests.pipeline.fault_server import STATS_PATH

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from unittest.mock import AsyncMock

    from homeassistant.config_entries import ConfigFlowResult
    from homeassistant.core import HomeAssistant

    from tests.pipeline.fault_server import FaultServer

    Factory = Callable[..., Awaitable[FaultServer]]

STORAGE_ID = "6f1c2b1e-3d4a-4c5b-9e8f-0a1b2c3d4e5f"
OTHER_ID = "0b7e0d52-8f4e-4f0a-a3c6-5d1e2f3a4b5c"
ENRICHMENT_ID = "c5e1a9d0-2b3c-4d5e-8f90-a1b2c3d4e5f6"
INTEGRATION = Path(__file__).parents[2] / "custom_components" / "ha_ingestor"


def announcement(
    port: int,
    *addresses: str,
    role: str = "storage",
    service_id: str = STORAGE_ID,
    hostname: str = "ingest.local.",
    **properties: str,
) -> ZeroconfServiceInfo:
    """What Home Assistant's zeroconf hands the flow for one announced service."""
    ips = [ip_address(address) for address in addresses or ("127.0.0.1",)]
    return ZeroconfServiceInfo(
        ip_address=ips[0],
        ip_addresses=ips,
        port=port,
        hostname=hostname,
        type=ZEROCONF_TYPE,
        name=f"HA Ingestor {role}.{ZEROCONF_TYPE}",
        properties={
            "role": role,
            "api": "1",
            "token": "1",
            "id": service_id,
            "path": "/api/v1",
            **properties,
        },
    )


async def discover(hass: HomeAssistant, info: ZeroconfServiceInfo) -> ConfigFlowResult:
    return await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=info
    )


@pytest.fixture
async def storage(fault_server_factory: Factory) -> FaultServer:
    return await fault_server_factory(token=TOKEN, name=STORAGE_SERVICE_NAME, service_id=STORAGE_ID)


@pytest.fixture
async def enrichment(fault_server_factory: Factory) -> FaultServer:
    return await fault_server_factory(
        token=TOKEN, name=ENRICHMENT_SERVICE_NAME, service_id=ENRICHMENT_ID
    )


def url_of(server: FaultServer) -> str:
    return f"http://127.0.0.1:{server.port}"


async def test_manifest_matches_the_announced_type(hass: HomeAssistant) -> None:
    manifest = json.loads((INTEGRATION / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["zeroconf"] == [ZEROCONF_TYPE]
    # Home Assistant's zeroconf starts our flow for that type.
    assert {"domain": DOMAIN} in (await async_get_zeroconf(hass))[ZEROCONF_TYPE]


def test_the_confirm_texts_use_the_flows_placeholders() -> None:
    """The forms below give exactly these placeholders (asserted there)."""
    strings = json.loads((INTEGRATION / "strings.json").read_text(encoding="utf-8"))
    steps = strings["config"]["step"]
    used = {
        step: set(re.findall(r"{(\w+)}", steps[step]["description"]))
        for step in ("zeroconf_confirm", "enrichment_confirm")
    }
    assert used == {
        "zeroconf_confirm": {"url", "enrichment_url"},
        "enrichment_confirm": {"url", "entry"},
    }
    assert strings["config"]["flow_title"] == "{name}"


# -- a new storage service -----------------------------------------------------------------


@pytest.mark.usefixtures("mock_setup_entry")
async def test_new_storage_asks_for_the_token(
    hass: HomeAssistant, storage: FaultServer, mock_setup_entry: AsyncMock
) -> None:
    result = await discover(hass, announcement(storage.port))
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "zeroconf_confirm"
    assert result["description_placeholders"] == {"url": url_of(storage), "enrichment_url": "-"}
    assert set(result["data_schema"].schema) == {CONF_API_TOKEN}  # no enrichment offered
    assert storage.requests == []  # nothing is asked before the user confirms

    result = await submit(hass, result, {CONF_API_TOKEN: "wrong"})
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_API_TOKEN: "invalid_auth"}
    result = await submit(hass, result, {CONF_API_TOKEN: "  "})
    assert result["errors"] == {CONF_API_TOKEN: "invalid_auth"}

    result = await submit(hass, result, {CONF_API_TOKEN: f" {TOKEN} "})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == f"HA Ingestor (127.0.0.1:{storage.port})"
    assert result["data"] == entry_data(url_of(storage))
    assert result["options"] == default_options()
    assert result["result"].unique_id == STORAGE_ID
    assert result["result"].minor_version == 2
    assert storage.requests_to(STATS_PATH)[-1].headers["Authorization"] == f"Bearer {TOKEN}"
    assert len(mock_setup_entry.mock_calls) == 1

    # Announced again (a restart of the service): not offered a second time.
    result = await discover(hass, announcement(storage.port))
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


@pytest.mark.usefixtures("mock_setup_entry")
async def test_a_service_without_a_token(
    hass: HomeAssistant, fault_server_factory: Factory
) -> None:
    server = await fault_server_factory(name=STORAGE_SERVICE_NAME, service_id=STORAGE_ID)
    result = await discover(hass, announcement(server.port, token="0"))
    assert set(result["data_schema"].schema) == set()  # nothing to ask
    result = await submit(hass, result, {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_API_TOKEN] == ""
    assert "Authorization" not in server.requests_to(STATS_PATH)[-1].headers


@pytest.mark.usefixtures("mock_setup_entry", "fast_service_checks")
async def test_an_unreachable_service_shows_an_error(
    hass: HomeAssistant, storage: FaultServer
) -> None:
    result = await discover(hass, announcement(storage.port))
    await storage.refuse()  # gone between its announcement and the confirmation
    result = await submit(hass, result, {CONF_API_TOKEN: TOKEN})
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "cannot_connect"}

    await storage.restore()
    result = await submit(hass, result, {CONF_API_TOKEN: TOKEN})
    assert result["type"] is FlowResultType.CREATE_ENTRY


@pytest.mark.usefixtures("mock_setup_entry")
async def test_another_service_at_the_announced_address(
    hass: HomeAssistant, fault_server_factory: Factory
) -> None:
    server = await fault_server_factory(token=TOKEN, name=STORAGE_SERVICE_NAME, service_id=OTHER_ID)
    result = await discover(hass, announcement(server.port))
    result = await submit(hass, result, {CONF_API_TOKEN: TOKEN})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "wrong_service"
    assert hass.config_entries.async_entries(DOMAIN) == []


@pytest.mark.parametrize(
    ("properties", "reason"),
    [
        ({"role": "printer"}, "not_an_ingestor_service"),
        ({"id": "not-a-uuid"}, "not_an_ingestor_service"),
        ({"api": "2"}, "unsupported_api"),
        ({"path": "/api/v2"}, "unsupported_api"),
    ],
)
async def test_announcements_we_cannot_use(
    hass: HomeAssistant, properties: dict[str, str], reason: str
) -> None:
    result = await discover(hass, announcement(8004, **properties))
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == reason


@pytest.mark.parametrize(
    ("addresses", "url"),
    [
        (("fd00::5",), "http://[fd00::5]:8004"),
        (("fe80::1", "192.168.1.30"), "http://192.168.1.30:8004"),
        (("fd00::5", "192.168.1.30"), "http://192.168.1.30:8004"),
        (("169.254.3.4", "fd00::5"), "http://[fd00::5]:8004"),
        (("127.0.0.1", "192.168.1.30"), "http://192.168.1.30:8004"),
    ],
)
async def test_the_address_chosen(
    hass: HomeAssistant, addresses: tuple[str, ...], url: str
) -> None:
    """Link-local addresses are never stored; IPv4 first; IPv6 bracketed in the URL."""
    result = await discover(hass, announcement(8004, *addresses))
    assert result["step_id"] == "zeroconf_confirm"
    assert result["description_placeholders"]["url"] == url


async def test_only_link_local_addresses(hass: HomeAssistant) -> None:
    result = await discover(hass, announcement(8004, "fe80::1", "169.254.3.4"))
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "no_usable_address"


async def test_tls_keeps_the_host_name_and_a_path_prefix(hass: HomeAssistant) -> None:
    info = announcement(8443, "192.168.1.30", tls="1", path="/ingest/api/v1/")
    result = await discover(hass, info)
    assert result["description_placeholders"]["url"] == "https://ingest.local:8443/ingest"


async def test_an_ignored_service_is_not_offered_again(hass: HomeAssistant) -> None:
    result = await discover(hass, announcement(8004, "192.168.1.30"))
    await hass.config_entries.flow.async_init(
        DOMAIN,
        context={"source": SOURCE_IGNORE},
        data={"unique_id": STORAGE_ID, "title": "ignored"},
    )
    result = await discover(hass, announcement(8004, "192.168.1.30"))
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


# -- a known storage service ---------------------------------------------------------------


def known_entry(hass: HomeAssistant, url: str, **data: Any) -> Any:
    entry = add_entry(hass, url, **data)
    hass.config_entries.async_update_entry(entry, unique_id=STORAGE_ID, minor_version=2)
    return entry


@pytest.mark.usefixtures("mock_setup_entry")
async def test_an_mdns_name_follows_too(hass: HomeAssistant) -> None:
    entry = known_entry(hass, "http://ingest.local:8004")
    result = await discover(hass, announcement(8005, "192.168.1.30"))
    assert result["reason"] == "already_configured"
    assert entry.data[CONF_STORAGE_URL] == "http://192.168.1.30:8005"


@pytest.mark.usefixtures("mock_setup_entry")
async def test_a_moved_service_takes_its_entry_along(hass: HomeAssistant) -> None:
    """Another address: the storage URL follows, and an enrichment URL on the same old
    host moves with it (same machine); a failover equal to the new URL goes."""
    entry = known_entry(
        hass,
        "http://192.168.1.20:8004",
        **{
            CONF_ENRICHMENT_URL: "http://192.168.1.20:8002",
            CONF_STORAGE_FAILOVER_URLS: ["http://192.168.1.30:8004", "http://10.0.0.9:8004"],
        },
    )
    result = await discover(hass, announcement(8004, "192.168.1.30"))
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert entry.data == entry_data(
        "http://192.168.1.30:8004",
        **{
            CONF_ENRICHMENT_URL: "http://192.168.1.30:8002",
            CONF_STORAGE_FAILOVER_URLS: ["http://10.0.0.9:8004"],
        },
    )
    assert entry.title == "HA Ingestor (192.168.1.30:8004)"  # it was ours
    assert entry.unique_id == STORAGE_ID


@pytest.mark.parametrize(
    ("url", "addresses"),
    [
        # Still reachable at the entry's address among the announced ones: it stays.
        ("http://192.168.1.20:8004", ("192.168.1.30", "192.168.1.20")),
        # A name the user chose (a reverse proxy with TLS in front): never an address.
        ("https://ingest.example.com", ("192.168.1.30",)),
    ],
)
@pytest.mark.usefixtures("mock_setup_entry")
async def test_a_url_that_stays(hass: HomeAssistant, url: str, addresses: tuple[str, ...]) -> None:
    entry = known_entry(hass, url, title="Basement")
    result = await discover(hass, announcement(8004, *addresses))
    assert result["reason"] == "already_configured"
    assert entry.data == entry_data(url)
    assert entry.title == "Basement"


async def test_moved_while_events_wait(
    hass: HomeAssistant, storage: FaultServer, fault_server_factory: Factory
) -> None:
    """The service comes back at another address: the loaded entry follows it, reloads,
    and the events queued while it was away are delivered there."""
    entry = known_entry(hass, url_of(storage))
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    await storage.wait_for_requests(1)
    await storage.refuse()
    for value in ("1", "2", "3"):
        hass.states.async_set("sensor.queued", value)
    await hass.async_block_till_done()
    runtime = entry.runtime_data.runtime
    assert (await runtime.outbox.stats()).pending == 3

    moved = await fault_server_factory(
        token=TOKEN, name=STORAGE_SERVICE_NAME, service_id=STORAGE_ID
    )
    result = await discover(hass, announcement(moved.port))
    assert result["reason"] == "already_configured"
    await hass.async_block_till_done()

    assert entry.data[CONF_STORAGE_URL] == url_of(moved)
    assert entry.runtime_data.runtime is not runtime  # reloaded
    await moved.wait_for_stored(3)
    assert [event["data"]["state"] for event in moved.received] == ["1", "2", "3"]
    assert await hass.config_entries.async_unload(entry.entry_id)


@pytest.mark.usefixtures("mock_setup_entry")
async def test_an_entry_from_before_ids_is_known_by_its_address(
    hass: HomeAssistant,
) -> None:
    """A 1.1 entry (its URL as unique id) at the announced address and port is that
    service: it learns its id and nothing new is offered."""
    entry = add_entry(hass, "http://192.168.1.20:8004")
    result = await discover(hass, announcement(8004, "192.168.1.20"))
    assert result["reason"] == "already_configured"
    assert entry.unique_id == STORAGE_ID
    assert len(hass.config_entries.async_entries(DOMAIN)) == 1


@pytest.mark.usefixtures("mock_setup_entry")
async def test_another_service_at_a_known_address_takes_nothing(hass: HomeAssistant) -> None:
    """Another service now answers at an entry's address (its data replaced, say): the
    entry keeps its id, and the address is not offered as a new entry either."""
    entry = known_entry(hass, "http://192.168.1.20:8004")
    result = await discover(hass, announcement(8004, "192.168.1.20", service_id=OTHER_ID))
    assert result["reason"] == "already_configured"
    assert entry.unique_id == STORAGE_ID
    assert len(hass.config_entries.async_entries(DOMAIN)) == 1


@pytest.mark.usefixtures("mock_setup_entry")
async def test_a_failover_is_not_offered_as_a_new_entry(hass: HomeAssistant) -> None:
    entry = known_entry(
        hass, "http://192.168.1.20:8004", **{CONF_STORAGE_FAILOVER_URLS: ["http://[fd00::7]:8004"]}
    )
    info = announcement(8004, "fd00::7", service_id=OTHER_ID)
    result = await discover(hass, info)
    assert result["reason"] == "already_configured"
    assert entry.unique_id == STORAGE_ID  # a failover never lends its id


# -- enrichment ------------------------------------------------------------------------


@pytest.mark.usefixtures("mock_setup_entry")
async def test_enrichment_offered_with_its_storage(
    hass: HomeAssistant, storage: FaultServer, enrichment: FaultServer
) -> None:
    """Enrichment announced first (no entry yet): kept, and offered on the storage
    service's confirm form."""
    result = await discover(
        hass, announcement(enrichment.port, role="enrichment", service_id=ENRICHMENT_ID)
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "storage_not_set_up"

    result = await discover(hass, announcement(storage.port))
    assert result["description_placeholders"]["enrichment_url"] == url_of(enrichment)
    assert set(result["data_schema"].schema) == {CONF_API_TOKEN, CONF_USE_ENRICHMENT}

    enrichment.token = "other"  # its error is shown at its switch
    result = await submit(hass, result, {CONF_API_TOKEN: TOKEN, CONF_USE_ENRICHMENT: True})
    assert result["errors"] == {CONF_API_TOKEN: "invalid_auth"}
    await enrichment.refuse()
    result = await submit(hass, result, {CONF_API_TOKEN: TOKEN, CONF_USE_ENRICHMENT: True})
    assert result["errors"] == {CONF_USE_ENRICHMENT: "cannot_connect"}
    await enrichment.restore()
    enrichment.token = TOKEN

    result = await submit(hass, result, {CONF_API_TOKEN: TOKEN, CONF_USE_ENRICHMENT: True})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_ENRICHMENT_URL] == url_of(enrichment)

    # Both are set up now: neither is offered again.
    for info in (
        announcement(storage.port),
        announcement(enrichment.port, role="enrichment", service_id=ENRICHMENT_ID),
    ):
        assert (await discover(hass, info))["reason"] == "already_configured"


@pytest.mark.usefixtures("mock_setup_entry")
async def test_enrichment_can_be_declined(
    hass: HomeAssistant, storage: FaultServer, enrichment: FaultServer
) -> None:
    await discover(hass, announcement(enrichment.port, role="enrichment", service_id=ENRICHMENT_ID))
    result = await discover(hass, announcement(storage.port))
    result = await submit(hass, result, {CONF_API_TOKEN: TOKEN, CONF_USE_ENRICHMENT: False})
    assert result["data"][CONF_ENRICHMENT_URL] is None
    assert enrichment.requests == []


async def test_enrichment_offered_to_the_entry_of_its_machine(
    hass: HomeAssistant,
    storage: FaultServer,
    enrichment: FaultServer,
    mock_setup_entry: AsyncMock,
) -> None:
    entry = known_entry(hass, url_of(storage))
    result = await discover(
        hass, announcement(enrichment.port, role="enrichment", service_id=ENRICHMENT_ID)
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "enrichment_confirm"
    assert result["description_placeholders"] == {"url": url_of(enrichment), "entry": entry.title}

    enrichment.token = "other"
    result = await submit(hass, result, {})
    assert result["errors"] == {"base": "invalid_auth"}
    enrichment.token = TOKEN

    result = await submit(hass, result, {})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "enrichment_added"
    assert entry.data == entry_data(url_of(storage), **{CONF_ENRICHMENT_URL: url_of(enrichment)})
    assert len(mock_setup_entry.mock_calls) == 1  # reloaded with it


@pytest.mark.usefixtures("mock_setup_entry")
async def test_enrichment_not_offered_to_an_entry_that_has_one(hass: HomeAssistant) -> None:
    known_entry(hass, "http://192.168.1.20:8004", enrichment_url="http://192.168.1.21:8002")
    info = announcement(8002, "192.168.1.20", role="enrichment", service_id=ENRICHMENT_ID)
    result = await discover(hass, info)
    assert result["reason"] == "enrichment_already_set"
