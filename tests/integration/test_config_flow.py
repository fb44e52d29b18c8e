"""The config flow's user step (URLs, entry data, one entry per storage URL) against real
local services, and the config flow's translations."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest.mock import patch

import pytest
from homeassistant.data_entry_flow import FlowResultType

from custom_components.ha_ingestor import config_flow
from custom_components.ha_ingestor.config_flow import default_options, normalize_url
from custom_components.ha_ingestor.const import (
    CONF_API_TOKEN,
    CONF_ENRICHMENT_FAILOVER_URLS,
    CONF_ENRICHMENT_URL,
    CONF_STORAGE_FAILOVER_URLS,
    CONF_STORAGE_URL,
    CONF_VERIFY_SSL,
    DOMAIN,
)
from custom_components.ha_ingestor.pipeline.envelope import (
    ENRICHMENT_SERVICE_NAME,
    STORAGE_SERVICE_NAME,
)
from custom_components.ha_ingestor.service_checks import CheckResult
from tests.integration.conftest import TOKEN
from tests.integration.flow_helpers import (
    UNUSED_URL,
    add_entry,
    entry_data,
    local_url,
    start_user_flow,
    submit,
    suggested,
    user_input,
)
from tests.pipeline.fault_server import HEALTH_PATH, STATS_PATH

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

INTEGRATION = Path(__file__).parents[2] / "custom_components" / "ha_ingestor"


# -- user step ---------------------------------------------------------------------------


async def test_user_storage_only(
    hass: HomeAssistant, storage_server: FaultServer, mock_setup_entry: AsyncMock
) -> None:
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(local_url(storage_server) + "/"))

    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == f"HA Ingestor (localhost:{storage_server.port})"
    assert result["data"] == entry_data(local_url(storage_server))
    assert result["options"] == default_options()
    assert result["result"].unique_id == local_url(storage_server)
    assert result["result"].version == 1
    assert result["result"].minor_version == 2
    assert len(mock_setup_entry.mock_calls) == 1
    # Health is open; stats needs the token.
    (health,) = storage_server.requests_to(HEALTH_PATH)
    assert "Authorization" not in health.headers
    (stats,) = storage_server.requests_to(STATS_PATH)
    assert stats.headers["Authorization"] == f"Bearer {TOKEN}"


async def test_user_with_an_address(hass: HomeAssistant, storage_server: FaultServer) -> None:
    # The other tests use the host name localhost; an IP address works as well.
    url = f"http://127.0.0.1:{storage_server.port}"
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(url))

    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == f"HA Ingestor (127.0.0.1:{storage_server.port})"
    assert result["data"] == entry_data(url)
    assert storage_server.requests_to(HEALTH_PATH)


async def test_user_with_enrichment_and_failovers(
    hass: HomeAssistant,
    storage_server: FaultServer,
    enrichment_server: FaultServer,
    fault_server_factory: Factory,
) -> None:
    storage_2 = await fault_server_factory(token=TOKEN, name=STORAGE_SERVICE_NAME)
    enrichment_2 = await fault_server_factory(token=TOKEN, name=ENRICHMENT_SERVICE_NAME)
    enrichment_3 = await fault_server_factory(token=TOKEN, name=ENRICHMENT_SERVICE_NAME)
    result = await start_user_flow(hass)
    result = await submit(
        hass,
        result,
        user_input(
            f"  {local_url(storage_server)}  ",
            **{
                # Blank rows, the primary and repeats are dropped; spellings normalized.
                CONF_STORAGE_FAILOVER_URLS: [
                    "",
                    local_url(storage_server),
                    local_url(storage_2) + "/",
                ],
                CONF_ENRICHMENT_URL: f"HTTP://LocalHost:{enrichment_server.port}/",
                CONF_ENRICHMENT_FAILOVER_URLS: [
                    local_url(enrichment_2),
                    local_url(enrichment_3),
                    local_url(enrichment_2) + "/",
                ],
                CONF_API_TOKEN: f" {TOKEN} ",
                CONF_VERIFY_SSL: False,
            },
        ),
    )

    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == {
        CONF_STORAGE_URL: local_url(storage_server),
        CONF_STORAGE_FAILOVER_URLS: [local_url(storage_2)],
        CONF_ENRICHMENT_URL: local_url(enrichment_server),
        CONF_ENRICHMENT_FAILOVER_URLS: [local_url(enrichment_2), local_url(enrichment_3)],
        CONF_API_TOKEN: TOKEN,
        CONF_VERIFY_SSL: False,
    }
    for server in (storage_server, storage_2, enrichment_server, enrichment_2, enrichment_3):
        assert len(server.requests_to(HEALTH_PATH)) == 1
        assert len(server.requests_to(STATS_PATH)) == 1


async def test_user_blank_enrichment_means_none(
    hass: HomeAssistant, storage_server: FaultServer
) -> None:
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(local_url(storage_server), enrichment_url="   "))
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_ENRICHMENT_URL] is None


async def test_user_with_path_prefix(hass: HomeAssistant, storage_server: FaultServer) -> None:
    """A path prefix (a reverse proxy) is kept and the checks go below it."""
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(local_url(storage_server) + "/proxy/"))
    # The fault server has no such prefix: a 404 is no usable service.
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_STORAGE_URL: "cannot_connect"}


@pytest.mark.parametrize(
    "url",
    [
        "localhost:8004",
        "127.0.0.1:8004",
        "ftp://127.0.0.1:8004",
        "http://",
        "http:///path",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:0",
        "http://127.0.0.1:port",
        "http://[::1",
        "http://user:pass@127.0.0.1:8004",
        "http://token@127.0.0.1:8004",
        "http://127.0.0.1:8004/?x=1",
        "http://127.0.0.1:8004/#top",
        "http://127.0.0.1:8004/a b",
        "",
        "   ",
    ],
)
async def test_user_invalid_storage_url(hass: HomeAssistant, url: str) -> None:
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(url))
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_STORAGE_URL: "invalid_url"}
    # The form keeps what was typed.
    assert suggested(result)[CONF_STORAGE_URL] == url


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (CONF_ENRICHMENT_URL, "enrichment:8002"),
        (CONF_STORAGE_FAILOVER_URLS, ["http://127.0.0.1:8004", "nope"]),
        (CONF_STORAGE_FAILOVER_URLS, [42]),
        (CONF_ENRICHMENT_FAILOVER_URLS, ["https://"]),
    ],
)
async def test_user_invalid_other_urls(
    hass: HomeAssistant, storage_server: FaultServer, field: str, value: Any
) -> None:
    extra: dict[str, Any] = {field: value}
    if field == CONF_ENRICHMENT_FAILOVER_URLS:
        extra[CONF_ENRICHMENT_URL] = "http://127.0.0.1:8002"
    # Lists of non-strings cannot come through the selector; check the parser directly too.
    _, errors = config_flow._parse_connection(user_input(local_url(storage_server), **extra))
    assert errors == {field: "invalid_url"}
    if value == [42]:
        return
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(local_url(storage_server), **extra))
    assert result["errors"] == {field: "invalid_url"}
    assert storage_server.requests == []  # nothing is asked before the URLs are fine


async def test_user_failover_without_primary(hass: HomeAssistant) -> None:
    result = await start_user_flow(hass)
    result = await submit(
        hass,
        result,
        user_input(UNUSED_URL, **{CONF_ENRICHMENT_FAILOVER_URLS: ["http://127.0.0.1:8002"]}),
    )
    assert result["errors"] == {CONF_ENRICHMENT_FAILOVER_URLS: "failover_without_primary"}


async def test_user_blank_token(hass: HomeAssistant, storage_server: FaultServer) -> None:
    result = await start_user_flow(hass)
    result = await submit(
        hass, result, user_input(local_url(storage_server), **{CONF_API_TOKEN: "  "})
    )
    assert result["errors"] == {CONF_API_TOKEN: "invalid_auth"}
    assert storage_server.requests == []


@pytest.mark.parametrize(
    "spelling",
    [
        "{url}",
        "{url}/",
        "{url}//",
        "  {url}  ",
        "HTTP://LocalHost:{port}",
        "http://localhost:{port}/",
    ],
)
async def test_user_already_configured(
    hass: HomeAssistant,
    storage_server: FaultServer,
    fault_server_factory: Factory,
    spelling: str,
) -> None:
    """A storage URL of another entry is an error on its field; the dialog stays open."""
    add_entry(hass, local_url(storage_server))
    result = await start_user_flow(hass)
    url = spelling.format(url=local_url(storage_server), port=storage_server.port)
    typed = user_input(url, enrichment_url="http://127.0.0.1:8002")
    result = await submit(hass, result, typed)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_STORAGE_URL: "storage_url_in_use"}
    assert suggested(result) == typed  # everything typed is still there
    assert storage_server.requests == []  # decided before any network call

    other = await fault_server_factory(token=TOKEN, name=STORAGE_SERVICE_NAME)
    result = await submit(hass, result, user_input(local_url(other)))
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["result"].unique_id == local_url(other)
    assert len(hass.config_entries.async_entries(DOMAIN)) == 2


async def test_user_already_configured_default_port(hass: HomeAssistant) -> None:
    add_entry(hass, "https://ingest.example.com")
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input("HTTPS://Ingest.Example.COM:443/"))
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_STORAGE_URL: "storage_url_in_use"}


async def test_user_already_configured_during_the_checks(
    hass: HomeAssistant, storage_server: FaultServer, mock_setup_entry: AsyncMock
) -> None:
    """Another entry for the URL appears while the services are checked: the unique id
    guard stops the flow instead of adding a second entry for it (an error on the field;
    the plain-http step's own guard aborts: test_plain_http)."""
    url = local_url(storage_server)

    async def add_it_meanwhile(hass: HomeAssistant, data: Any) -> CheckResult:
        add_entry(hass, url)
        return CheckResult({})

    result = await start_user_flow(hass)
    with patch.object(config_flow, "async_check_services", side_effect=add_it_meanwhile):
        result = await submit(hass, result, user_input(url))
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_STORAGE_URL: "storage_url_in_use"}
    assert len(hass.config_entries.async_entries(DOMAIN)) == 1
    assert mock_setup_entry.mock_calls == []


async def test_user_second_entry_for_other_storage(
    hass: HomeAssistant, storage_server: FaultServer, fault_server_factory: Factory
) -> None:
    add_entry(hass, local_url(storage_server))
    other = await fault_server_factory(token=TOKEN, name=STORAGE_SERVICE_NAME)
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(local_url(other)))
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert len(hass.config_entries.async_entries(DOMAIN)) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://127.0.0.1:8004", "http://127.0.0.1:8004"),
        ("HTTP://Storage.LAN:8004/", "http://storage.lan:8004"),
        ("http://storage.lan:80/", "http://storage.lan"),
        ("https://storage.lan:443", "https://storage.lan"),
        ("https://storage.lan:8443/Ingest/v1/", "https://storage.lan:8443/Ingest/v1"),
        ("http://[::1]:8004/", "http://[::1]:8004"),
        (" http://a.b ", "http://a.b"),
        ("http://a.b/x%20y/", "http://a.b/x%20y"),
        ("mqtt://a.b", None),
        (None, None),
        (8004, None),
    ],
)
def test_normalize_url(text: Any, expected: str | None) -> None:
    assert normalize_url(text) == expected


# -- translations ------------------------------------------------------------------------


def test_translations_in_step() -> None:
    """en.json is strings.json; every config field, error and abort reason has its text
    (the options flow's: test_options_flow)."""
    strings = json.loads((INTEGRATION / "strings.json").read_text(encoding="utf-8"))
    english = json.loads((INTEGRATION / "translations" / "en.json").read_text(encoding="utf-8"))
    assert english == strings

    config = strings["config"]
    connection_fields = {str(key) for key in config_flow.CONNECTION_SCHEMA.schema}
    for step in ("user", "reconfigure"):
        assert set(config["step"][step]["data"]) == connection_fields
        assert set(config["step"][step]["data_description"]) == connection_fields
    reauth = config["step"]["reauth_confirm"]
    assert set(reauth["data"]) == set(reauth["data_description"]) == {CONF_API_TOKEN}
    assert set(config["error"]) == {
        "cannot_connect",
        "invalid_auth",
        "invalid_url",
        "failover_without_primary",
        "answers_as_enrichment",
        "answers_as_storage",
        "not_an_ingestor_service",
        "storage_url_in_use",
        "storage_service_in_use",
        "unknown",
    }
    # The errors say what to do: which service answered and where each one listens...
    assert config["error"]["answers_as_enrichment"].startswith(
        "This URL answers as the enrichment service (port 8002 by default). "
        "The storage service listens on port 8004 by default"
    )
    assert config["error"]["answers_as_storage"].startswith(
        "This URL answers as the storage service (port 8004 by default). "
        "The enrichment service listens on port 8002 by default"
    )
    # ... and how to change the entry that has the URL.
    for text in (
        config["error"]["storage_url_in_use"],
        config["error"]["storage_service_in_use"],
        config["abort"]["already_configured"],
    ):
        assert "open it and choose Reconfigure" in text
    # Discovery's confirm form (its placeholders: test_discovery).
    confirm = config["step"]["zeroconf_confirm"]
    assert set(confirm["data"]) == set(confirm["data_description"])
    assert set(confirm["data"]) == {CONF_API_TOKEN, config_flow.CONF_USE_ENRICHMENT}
    assert set(config["abort"]) == {
        "already_configured",
        "already_in_progress",
        "reauth_successful",
        "reconfigure_successful",
        "wrong_service",
        "not_an_ingestor_service",
        "unsupported_api",
        "no_usable_address",
        "enrichment_added",
        "enrichment_already_set",
        "storage_not_set_up",
    }
    # Select values are translation keys: lower case, digits, - and _, not at either end.
    for selector in strings["selector"].values():
        for value in selector["options"]:
            assert re.fullmatch(r"[a-z0-9]([a-z0-9_-]*[a-z0-9])?", value), value
