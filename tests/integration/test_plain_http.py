"""The config flow warns, and lets the user go on, when the API token would cross the
network in clear text: plain http:// to another machine (issue 10)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING
from unittest.mock import AsyncMock, patch

import pytest
from homeassistant.data_entry_flow import FlowResultType

from custom_components.ha_ingestor import config_flow
from custom_components.ha_ingestor.config_flow import SAFE_SERVICES_DOCS, STEP_PLAIN_HTTP
from custom_components.ha_ingestor.const import (
    CONF_ENRICHMENT_FAILOVER_URLS,
    CONF_ENRICHMENT_URL,
    CONF_STORAGE_FAILOVER_URLS,
    CONF_STORAGE_URL,
    DOMAIN,
)
from custom_components.ha_ingestor.service_checks import CheckResult, plain_http_urls
from tests.integration.flow_helpers import (
    add_entry,
    entry_data,
    local_url,
    start_user_flow,
    submit,
    user_input,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from homeassistant.core import HomeAssistant

    from tests.pipeline.fault_server import FaultServer

pytestmark = [
    pytest.mark.usefixtures("mock_setup_entry", "resolve_host_names", "fast_service_checks"),
    # localhost is also ::1, which the harness refuses; the connection goes on to 127.0.0.1.
    pytest.mark.filterwarnings("ignore:A test tried to use socket.socket.connect:UserWarning"),
]

REMOTE_HTTP = "http://192.168.1.20:8004"
REMOTE_HTTPS = "https://nas.example:8004"


@pytest.fixture
def services_answer() -> Iterator[AsyncMock]:
    """Every URL passes its checks: remote hosts cannot be reached from a test."""
    with patch.object(config_flow, "async_check_services", return_value=CheckResult({})) as check:
        yield check


@pytest.mark.parametrize(
    ("urls", "warned"),
    [
        (["http://localhost:8004"], []),
        (["http://127.0.0.1:8004", "http://127.8.9.10:8004", "http://[::1]:8004"], []),
        (["http://storage.localhost:8004"], []),
        (["https://192.168.1.20:8004", REMOTE_HTTPS], []),
        ([REMOTE_HTTP], [REMOTE_HTTP]),
        (["http://nas.local:8004"], ["http://nas.local:8004"]),
        (["http://localhost.example:8004"], ["http://localhost.example:8004"]),
        (["http://[fd00::1]:8004"], ["http://[fd00::1]:8004"]),
        (["http://10.0.0.1:8004"], ["http://10.0.0.1:8004"]),
    ],
)
def test_which_urls_carry_the_token_in_clear_text(urls: list[str], warned: list[str]) -> None:
    data = entry_data(urls[0], **{CONF_STORAGE_FAILOVER_URLS: urls[1:]})
    assert plain_http_urls(data) == warned


def test_every_configured_url_counts() -> None:
    data = entry_data(
        "https://storage.example",
        **{
            CONF_STORAGE_FAILOVER_URLS: ["http://10.0.0.2:8004"],
            CONF_ENRICHMENT_URL: "http://127.0.0.1:8002",
            CONF_ENRICHMENT_FAILOVER_URLS: ["http://10.0.0.3:8002"],
        },
    )
    assert plain_http_urls(data) == ["http://10.0.0.2:8004", "http://10.0.0.3:8002"]


async def test_a_local_url_needs_no_warning(
    hass: HomeAssistant, storage_server: FaultServer
) -> None:
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(local_url(storage_server)))
    assert result["type"] is FlowResultType.CREATE_ENTRY


@pytest.mark.usefixtures("services_answer")
async def test_https_to_another_machine_needs_no_warning(hass: HomeAssistant) -> None:
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(REMOTE_HTTPS))
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_STORAGE_URL] == REMOTE_HTTPS


@pytest.mark.usefixtures("services_answer")
async def test_plain_http_to_another_machine_warns_then_creates_the_entry(
    hass: HomeAssistant, mock_setup_entry: AsyncMock
) -> None:
    result = await start_user_flow(hass)
    result = await submit(
        hass, result, user_input(REMOTE_HTTP, enrichment_url="http://localhost:8002")
    )
    # A warning, not an error: nothing is saved yet, and the user may go on.
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == STEP_PLAIN_HTTP
    assert not result["errors"]
    assert result["description_placeholders"] == {
        "urls": REMOTE_HTTP,
        "docs_url": SAFE_SERVICES_DOCS,
    }
    assert hass.config_entries.async_entries(DOMAIN) == []
    assert mock_setup_entry.mock_calls == []

    result = await submit(hass, result, {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_STORAGE_URL] == REMOTE_HTTP
    assert result["data"][CONF_ENRICHMENT_URL] == "http://localhost:8002"
    assert len(mock_setup_entry.mock_calls) == 1


@pytest.mark.usefixtures("services_answer")
async def test_plain_http_warning_in_reconfigure(hass: HomeAssistant) -> None:
    entry = add_entry(hass, "http://localhost:8004")
    result = await entry.start_reconfigure_flow(hass)
    result = await submit(hass, result, user_input(REMOTE_HTTP))
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == STEP_PLAIN_HTTP
    assert result["description_placeholders"]["urls"] == REMOTE_HTTP
    assert entry.data[CONF_STORAGE_URL] == "http://localhost:8004"  # not yet changed

    result = await submit(hass, result, {})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.data[CONF_STORAGE_URL] == REMOTE_HTTP
    assert entry.unique_id == REMOTE_HTTP


@pytest.mark.usefixtures("services_answer")
async def test_https_in_reconfigure_needs_no_warning(hass: HomeAssistant) -> None:
    entry = add_entry(hass, REMOTE_HTTP)
    result = await entry.start_reconfigure_flow(hass)
    result = await submit(hass, result, user_input(REMOTE_HTTPS))
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.data[CONF_STORAGE_URL] == REMOTE_HTTPS


@pytest.mark.usefixtures("services_answer")
async def test_another_entry_taking_the_url_meanwhile_aborts(hass: HomeAssistant) -> None:
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(REMOTE_HTTP))
    assert result["step_id"] == STEP_PLAIN_HTTP
    add_entry(hass, REMOTE_HTTP)  # while the warning was open
    result = await submit(hass, result, {})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


@pytest.mark.usefixtures("services_answer")
async def test_another_entry_taking_the_service_meanwhile_aborts_reconfigure(
    hass: HomeAssistant,
) -> None:
    entry = add_entry(hass, "http://localhost:8004")
    result = await entry.start_reconfigure_flow(hass)
    result = await submit(hass, result, user_input(REMOTE_HTTP))
    assert result["step_id"] == STEP_PLAIN_HTTP
    add_entry(hass, REMOTE_HTTP)  # while the warning was open
    result = await submit(hass, result, {})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert entry.data[CONF_STORAGE_URL] == "http://localhost:8004"


def test_the_warning_points_to_a_readme_section() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    anchor = SAFE_SERVICES_DOCS.rpartition("#")[2]
    headings = re.findall(r"^#+ (.+)$", readme, re.M)
    assert anchor in {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
