"""The entry's unique id is its storage service's id: set by the user step, learned by
entries from before ids (config entry 1.1) once the service tells it, kept by
reconfigure, which refuses another storage service. Real local receivers answer the id.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from unittest.mock import patch

import pytest
from homeassistant.config_entries import SOURCE_USER, ConfigEntryState
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.ha_ingestor import config_flow
from custom_components.ha_ingestor.const import CONF_STORAGE_URL, DOMAIN
from custom_components.ha_ingestor.identity import async_fetch_service_id, parse_service_id
from custom_components.ha_ingestor.pipeline.envelope import STORAGE_SERVICE_NAME
from custom_components.ha_ingestor.service_checks import CheckResult
from tests.integration.common import make_entry, setup_entry, unload, wait_until
from tests.integration.conftest import TOKEN
from tests.integration.flow_helpers import UNUSED_URL, add_entry, entry_data, submit, user_input
from tests.integration.test_discovery import OTHER_ID, STORAGE_ID, url_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from unittest.mock import AsyncMock

    from homeassistant.core import HomeAssistant

    from tests.pipeline.fault_server import FaultServer

    Factory = Callable[..., Awaitable[FaultServer]]


@pytest.fixture
async def storage(fault_server_factory: Factory) -> FaultServer:
    return await fault_server_factory(token=TOKEN, name=STORAGE_SERVICE_NAME, service_id=STORAGE_ID)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (STORAGE_ID.upper(), STORAGE_ID),
        (f" {STORAGE_ID} ", STORAGE_ID),
        ("http://127.0.0.1:8004", None),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_parse_service_id(value: object, expected: str | None) -> None:
    assert parse_service_id(value) == expected


# -- the user step -----------------------------------------------------------------------


@pytest.mark.usefixtures("mock_setup_entry", "resolve_host_names", "fast_service_checks")
@pytest.mark.filterwarnings("ignore:A test tried to use socket.socket.connect:UserWarning")
async def test_the_user_step_takes_the_service_id(
    hass: HomeAssistant, storage: FaultServer
) -> None:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await submit(hass, result, user_input(url_of(storage)))
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["result"].unique_id == STORAGE_ID

    # The same service by another spelling of its address (another URL): refused.
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await submit(hass, result, user_input(f"http://localhost:{storage.port}"))
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_STORAGE_URL: "storage_service_in_use"}
    assert len(hass.config_entries.async_entries(DOMAIN)) == 1


# -- migrating entries from before ids ---------------------------------------------------------


async def test_an_old_entry_learns_the_id_at_setup(
    hass: HomeAssistant, storage: FaultServer
) -> None:
    entry = make_entry(url_of(storage), minor_version=1)  # 1.1: the URL is the unique id
    assert (entry.version, entry.minor_version) == (1, 1)
    await setup_entry(hass, entry)
    assert entry.minor_version == 2
    await wait_until(lambda: entry.unique_id == STORAGE_ID)
    assert entry.data[CONF_STORAGE_URL] == url_of(storage)
    await unload(hass, entry)


async def test_an_unreachable_service_is_migrated_when_it_is_back(
    hass: HomeAssistant, storage: FaultServer
) -> None:
    await storage.refuse()
    entry = await setup_entry(hass, make_entry(url_of(storage), minor_version=1))
    assert entry.state is ConfigEntryState.LOADED  # loads all the same
    assert entry.minor_version == 2
    assert entry.unique_id == url_of(storage)

    await storage.restore()  # the registry probes it every second or so
    await wait_until(lambda: entry.unique_id == STORAGE_ID, timeout=10)
    await unload(hass, entry)


async def test_an_older_service_keeps_the_url(
    hass: HomeAssistant, fault_server_factory: Factory
) -> None:
    server = await fault_server_factory(token=TOKEN, name=STORAGE_SERVICE_NAME)  # no id
    entry = await setup_entry(hass, make_entry(server.url, minor_version=1))
    await server.wait_for_requests(1)
    await hass.async_block_till_done()
    assert entry.unique_id == server.url
    assert entry.minor_version == 2
    await unload(hass, entry)


async def test_an_id_taken_by_another_entry_is_not_adopted(
    hass: HomeAssistant, storage: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Two 1.1 entries for one service (two spellings of its address): one unique id
    cannot be shared, so the second keeps its URL and the log says so."""
    first = MockConfigEntry(domain=DOMAIN, unique_id=STORAGE_ID, data=make_entry(UNUSED_URL).data)
    first.add_to_hass(hass)
    caplog.set_level(logging.WARNING)
    entry = await setup_entry(hass, make_entry(url_of(storage), minor_version=1))
    await wait_until(lambda: "same storage service" in caplog.text)
    assert entry.unique_id == url_of(storage)
    await unload(hass, entry)


async def test_no_id_from_a_service_that_is_not_healthy(
    hass: HomeAssistant, storage: FaultServer
) -> None:
    session = async_get_clientsession(hass)
    assert await async_fetch_service_id(session, url_of(storage)) == STORAGE_ID
    storage.health_status = 503
    assert await async_fetch_service_id(session, url_of(storage)) is None
    await storage.refuse()
    assert await async_fetch_service_id(session, url_of(storage)) is None


# -- reconfigure -------------------------------------------------------------------------------

pytestmark_flow = pytest.mark.usefixtures("mock_setup_entry", "fast_service_checks")


@pytestmark_flow
async def test_reconfigure_to_another_service_is_refused(
    hass: HomeAssistant, storage: FaultServer, fault_server_factory: Factory
) -> None:
    entry = add_entry(hass, url_of(storage))
    hass.config_entries.async_update_entry(entry, unique_id=STORAGE_ID)
    other = await fault_server_factory(token=TOKEN, name=STORAGE_SERVICE_NAME, service_id=OTHER_ID)
    older = await fault_server_factory(token=TOKEN, name=STORAGE_SERVICE_NAME)  # no id
    for server in (other, older):
        result = await entry.start_reconfigure_flow(hass)
        result = await submit(hass, result, user_input(url_of(server)))
        assert result["type"] is FlowResultType.ABORT
        assert result["reason"] == "wrong_service"
        assert entry.data == entry_data(url_of(storage))
        assert entry.unique_id == STORAGE_ID


@pytestmark_flow
async def test_reconfigure_follows_the_same_service_elsewhere(
    hass: HomeAssistant,
    storage: FaultServer,
    fault_server_factory: Factory,
    mock_setup_entry: AsyncMock,
) -> None:
    entry = add_entry(hass, url_of(storage))
    hass.config_entries.async_update_entry(entry, unique_id=STORAGE_ID)
    moved = await fault_server_factory(
        token=TOKEN, name=STORAGE_SERVICE_NAME, service_id=STORAGE_ID
    )
    result = await entry.start_reconfigure_flow(hass)
    result = await submit(hass, result, user_input(url_of(moved)))
    assert result["reason"] == "reconfigure_successful"
    assert entry.data == entry_data(url_of(moved))
    assert entry.unique_id == STORAGE_ID


@pytestmark_flow
async def test_reconfigure_of_an_old_entry_takes_the_id(
    hass: HomeAssistant, storage: FaultServer, fault_server_factory: Factory
) -> None:
    older = await fault_server_factory(token=TOKEN, name=STORAGE_SERVICE_NAME)  # no id
    entry = add_entry(hass, url_of(older))
    result = await entry.start_reconfigure_flow(hass)
    result = await submit(hass, result, user_input(url_of(storage)))
    assert result["reason"] == "reconfigure_successful"
    assert entry.unique_id == STORAGE_ID

    # Another old entry cannot take a service that is set up already.
    second = add_entry(hass, url_of(older))
    result = await second.start_reconfigure_flow(hass)
    result = await submit(hass, result, user_input(url_of(storage) + "/"))
    assert result["errors"] == {CONF_STORAGE_URL: "storage_url_in_use"}
    other = await fault_server_factory(
        token=TOKEN, name=STORAGE_SERVICE_NAME, service_id=STORAGE_ID
    )
    result = await submit(hass, result, user_input(url_of(other)))
    assert result["errors"] == {CONF_STORAGE_URL: "storage_service_in_use"}
    assert second.unique_id == url_of(older)


@pytestmark_flow
async def test_reconfigure_service_taken_while_the_warning_was_open(
    hass: HomeAssistant,
) -> None:
    entry = add_entry(hass, "http://localhost:8004")
    remote = "http://192.168.1.20:8004"
    with patch.object(config_flow, "async_check_services", return_value=CheckResult({}, OTHER_ID)):
        result = await entry.start_reconfigure_flow(hass)
        result = await submit(hass, result, user_input(remote))
        assert result["step_id"] == config_flow.STEP_PLAIN_HTTP
        taken = add_entry(hass, "http://10.0.0.9:8004")
        hass.config_entries.async_update_entry(taken, unique_id=OTHER_ID)
        result = await submit(hass, result, {})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert entry.data[CONF_STORAGE_URL] == "http://localhost:8004"
