"""Helpers shared by the tests of the config and options flows: form input, entries, the
fields of a form."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import voluptuous as vol
from homeassistant.config_entries import SOURCE_USER
from homeassistant.data_entry_flow import FlowResultType, section
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.ha_ingestor.config_flow import default_options
from custom_components.ha_ingestor.const import (
    CONF_API_TOKEN,
    CONF_ENRICHMENT_FAILOVER_URLS,
    CONF_ENRICHMENT_URL,
    CONF_STORAGE_FAILOVER_URLS,
    CONF_STORAGE_URL,
    CONF_VERIFY_SSL,
    DOMAIN,
)
from tests.integration.conftest import TOKEN

if TYPE_CHECKING:
    from homeassistant.config_entries import ConfigFlowResult
    from homeassistant.core import HomeAssistant

    from tests.pipeline.fault_server import FaultServer

UNUSED_URL = "http://127.0.0.1:9"  # discard port: nothing listens there


def local_url(server: FaultServer) -> str:
    """The test server's URL with a host name, not an address (see `resolve_host_names`)."""
    return f"http://localhost:{server.port}"


def user_input(storage: str, **extra: Any) -> dict[str, Any]:
    return {CONF_STORAGE_URL: storage, CONF_API_TOKEN: TOKEN, CONF_VERIFY_SSL: True, **extra}


def entry_data(storage: str, **extra: Any) -> dict[str, Any]:
    return {
        CONF_STORAGE_URL: storage,
        CONF_STORAGE_FAILOVER_URLS: [],
        CONF_ENRICHMENT_URL: None,
        CONF_ENRICHMENT_FAILOVER_URLS: [],
        CONF_API_TOKEN: TOKEN,
        CONF_VERIFY_SSL: True,
        **extra,
    }


def add_entry(hass: HomeAssistant, storage: str, title: str | None = None, **data: Any) -> Any:
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=title or f"HA Ingestor ({storage.split('://')[1]})",
        unique_id=storage,
        data=entry_data(storage, **data),
        options=default_options(),
        version=1,
        minor_version=1,
    )
    entry.add_to_hass(hass)
    return entry


async def start_user_flow(hass: HomeAssistant) -> ConfigFlowResult:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    assert result["errors"] == {}
    return result


async def submit(hass: HomeAssistant, result: ConfigFlowResult, data: dict[str, Any]) -> Any:
    return await hass.config_entries.flow.async_configure(result["flow_id"], data)


def fields(schema: vol.Schema) -> dict[str, Any]:
    """A form's fields by name, with those of its sections (each name is used once)."""
    found: dict[str, Any] = {}
    for key, value in schema.schema.items():
        if isinstance(value, section):
            found.update(fields(value.schema))
        else:
            found[str(key)] = (key, value)
    return found


def suggested(result: Any) -> dict[str, Any]:
    """The suggested value of each field of a form (sections included), by field name."""
    return {
        name: key.description["suggested_value"]
        for name, (key, _) in fields(result["data_schema"]).items()
        if key.description and "suggested_value" in key.description
    }


def field_selector(result: Any, name: str) -> Any:
    return fields(result["data_schema"])[name][1]
