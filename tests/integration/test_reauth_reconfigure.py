"""Reauthentication and reconfiguration of an entry, against real local services."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from unittest.mock import patch

import pytest
from homeassistant.data_entry_flow import FlowResultType

from custom_components.ha_ingestor import config_flow, service_checks
from custom_components.ha_ingestor.config_flow import default_options
from custom_components.ha_ingestor.const import (
    CONF_API_TOKEN,
    CONF_ENRICHMENT_FAILOVER_URLS,
    CONF_ENRICHMENT_URL,
    CONF_STORAGE_FAILOVER_URLS,
    CONF_STORAGE_URL,
    CONF_VERIFY_SSL,
)
from custom_components.ha_ingestor.pipeline.envelope import STORAGE_SERVICE_NAME
from custom_components.ha_ingestor.service_checks import CheckResult
from tests.integration.conftest import TOKEN
from tests.integration.flow_helpers import (
    UNUSED_URL,
    add_entry,
    entry_data,
    local_url,
    suggested,
    user_input,
)
from tests.pipeline.fault_server import STATS_PATH, Fault

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from unittest.mock import AsyncMock

    from homeassistant.core import HomeAssistant

    from tests.pipeline.fault_server import FaultServer

    Factory = Callable[..., Awaitable[FaultServer]]

pytestmark = [
    pytest.mark.usefixtures("mock_setup_entry", "resolve_host_names", "fast_service_checks"),
    # localhost is also ::1, which the harness refuses; the connection goes on to 127.0.0.1.
    pytest.mark.filterwarnings("ignore:A test tried to use socket.socket.connect:UserWarning"),
]


# -- reauth ------------------------------------------------------------------------------


async def test_reauth(
    hass: HomeAssistant, fault_server_factory: Factory, mock_setup_entry: AsyncMock
) -> None:
    server = await fault_server_factory(token="new-token", name=STORAGE_SERVICE_NAME)
    entry = add_entry(hass, local_url(server))
    result = await entry.start_reauth_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reauth_confirm"
    assert result["description_placeholders"] == {"url": local_url(server), "name": entry.title}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_API_TOKEN: "still-wrong"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_API_TOKEN: "invalid_auth"}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_API_TOKEN: " new-token "}
    )
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    assert entry.data == entry_data(local_url(server), api_token="new-token")
    assert len(mock_setup_entry.mock_calls) == 1  # reloaded with the new token


async def test_reauth_forbidden_and_blank(
    hass: HomeAssistant, storage_server: FaultServer, enrichment_server: FaultServer
) -> None:
    entry = add_entry(hass, local_url(storage_server), enrichment_url=local_url(enrichment_server))
    result = await entry.start_reauth_flow(hass)
    enrichment_server.add_faults(Fault.answer(403, path=STATS_PATH))
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_API_TOKEN: TOKEN}
    )
    assert result["errors"] == {CONF_API_TOKEN: "invalid_auth"}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_API_TOKEN: "   "}
    )
    assert result["errors"] == {CONF_API_TOKEN: "invalid_auth"}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_API_TOKEN: TOKEN}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"


async def test_reauth_cannot_connect(hass: HomeAssistant, storage_server: FaultServer) -> None:
    entry = add_entry(
        hass,
        local_url(storage_server),
        storage_failover_urls=[UNUSED_URL],
        api_token="old",
    )
    result = await entry.start_reauth_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_API_TOKEN: TOKEN}
    )
    # The URLs are not on this form: the error is the form's.
    assert result["errors"] == {"base": "cannot_connect"}
    assert entry.data[CONF_API_TOKEN] == "old"


async def test_reauth_unexpected_error(hass: HomeAssistant, storage_server: FaultServer) -> None:
    entry = add_entry(hass, local_url(storage_server))
    result = await entry.start_reauth_flow(hass)
    with patch.object(service_checks, "ServiceHTTPClient", side_effect=ValueError("boom")):
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], {CONF_API_TOKEN: TOKEN}
        )
    assert result["errors"] == {"base": "unknown"}


# -- reconfigure -------------------------------------------------------------------------


async def test_reconfigure_moves_storage(
    hass: HomeAssistant,
    storage_server: FaultServer,
    enrichment_server: FaultServer,
    fault_server_factory: Factory,
    mock_setup_entry: AsyncMock,
) -> None:
    entry = add_entry(hass, local_url(storage_server), enrichment_url=local_url(enrichment_server))
    new_storage = await fault_server_factory(token="rotated", name=STORAGE_SERVICE_NAME)
    storage_server.token = enrichment_server.token = "rotated"
    result = await entry.start_reconfigure_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"
    values = suggested(result)
    assert values[CONF_STORAGE_URL] == local_url(storage_server)
    assert values[CONF_ENRICHMENT_URL] == local_url(enrichment_server)
    assert values[CONF_API_TOKEN] == TOKEN

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        {
            CONF_STORAGE_URL: local_url(new_storage) + "/",
            CONF_STORAGE_FAILOVER_URLS: [local_url(storage_server)],
            CONF_ENRICHMENT_URL: local_url(enrichment_server),
            CONF_API_TOKEN: "rotated",
            CONF_VERIFY_SSL: False,
        },
    )
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.unique_id == local_url(new_storage)
    assert entry.title == f"HA Ingestor (localhost:{new_storage.port})"  # it was ours
    assert entry.data == {
        CONF_STORAGE_URL: local_url(new_storage),
        CONF_STORAGE_FAILOVER_URLS: [local_url(storage_server)],
        CONF_ENRICHMENT_URL: local_url(enrichment_server),
        CONF_ENRICHMENT_FAILOVER_URLS: [],
        CONF_API_TOKEN: "rotated",
        CONF_VERIFY_SSL: False,
    }
    assert entry.options == default_options()
    assert len(mock_setup_entry.mock_calls) == 1


async def test_reconfigure_keeps_custom_title_and_drops_enrichment(
    hass: HomeAssistant, storage_server: FaultServer, enrichment_server: FaultServer
) -> None:
    entry = add_entry(
        hass,
        local_url(storage_server),
        title="Basement pipeline",
        enrichment_url=local_url(enrichment_server),
    )
    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], user_input(local_url(storage_server))
    )
    assert result["reason"] == "reconfigure_successful"
    assert entry.title == "Basement pipeline"
    assert entry.unique_id == local_url(storage_server)
    assert entry.data == entry_data(local_url(storage_server))
    assert enrichment_server.requests == []


async def test_reconfigure_unique_id_clash(
    hass: HomeAssistant, storage_server: FaultServer, fault_server_factory: Factory
) -> None:
    """Another entry's storage URL is an error on the field; what was typed stays."""
    other = await fault_server_factory(token=TOKEN, name=STORAGE_SERVICE_NAME)
    add_entry(hass, local_url(other))
    entry = add_entry(hass, local_url(storage_server))
    result = await entry.start_reconfigure_flow(hass)
    typed = user_input(local_url(other).upper().replace("HTTP", "http") + "/", api_token="new")
    result = await hass.config_entries.flow.async_configure(result["flow_id"], typed)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_STORAGE_URL: "storage_url_in_use"}
    assert suggested(result) == typed
    assert entry.data[CONF_STORAGE_URL] == local_url(storage_server)
    assert entry.unique_id == local_url(storage_server)
    assert other.requests == []

    # Its own URL is no clash.
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], user_input(local_url(storage_server), verify_ssl=False)
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.data == entry_data(local_url(storage_server), verify_ssl=False)


async def test_reconfigure_unique_id_taken_during_the_checks(
    hass: HomeAssistant, storage_server: FaultServer, fault_server_factory: Factory
) -> None:
    new_storage = await fault_server_factory(token=TOKEN, name=STORAGE_SERVICE_NAME)
    entry = add_entry(hass, local_url(storage_server))

    async def add_it_meanwhile(hass: HomeAssistant, data: Any) -> CheckResult:
        add_entry(hass, local_url(new_storage))
        return CheckResult({})

    result = await entry.start_reconfigure_flow(hass)
    with patch.object(config_flow, "async_check_services", side_effect=add_it_meanwhile):
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], user_input(local_url(new_storage))
        )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_STORAGE_URL: "storage_url_in_use"}
    assert entry.unique_id == local_url(storage_server)
    assert entry.data == entry_data(local_url(storage_server))


async def test_reconfigure_to_the_other_service(
    hass: HomeAssistant, storage_server: FaultServer, enrichment_server: FaultServer
) -> None:
    entry = add_entry(hass, local_url(storage_server), enrichment_url=local_url(enrichment_server))
    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        user_input(local_url(enrichment_server), enrichment_url=local_url(storage_server)),
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {
        CONF_STORAGE_URL: "answers_as_enrichment",
        CONF_ENRICHMENT_URL: "answers_as_storage",
    }
    assert entry.data[CONF_STORAGE_URL] == local_url(storage_server)


async def test_reconfigure_errors_then_success(
    hass: HomeAssistant, storage_server: FaultServer
) -> None:
    entry = add_entry(hass, local_url(storage_server))
    result = await entry.start_reconfigure_flow(hass)

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], user_input("storage.lan:8004")
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_STORAGE_URL: "invalid_url"}
    assert suggested(result)[CONF_STORAGE_URL] == "storage.lan:8004"  # what was typed

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], user_input(local_url(storage_server), enrichment_url=UNUSED_URL)
    )
    assert result["errors"] == {CONF_ENRICHMENT_URL: "cannot_connect"}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], user_input(local_url(storage_server), api_token="bad")
    )
    assert result["errors"] == {CONF_API_TOKEN: "invalid_auth"}

    with patch.object(service_checks, "ServiceHTTPClient", side_effect=OSError("boom")):
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], user_input(local_url(storage_server))
        )
    assert result["errors"] == {"base": "unknown"}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], user_input(local_url(storage_server))
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
