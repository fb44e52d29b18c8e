"""The config flow (user, reauth, reconfigure) and the options flow, against real local services."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest.mock import patch

import pytest
import voluptuous as vol
from homeassistant.config_entries import SOURCE_USER
from homeassistant.data_entry_flow import FlowResultType
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.ha_ingestor import config_flow
from custom_components.ha_ingestor.config_flow import default_options, normalize_url
from custom_components.ha_ingestor.const import (
    ALL_EVENTS,
    ALL_EVENTS_OPTION,
    CONF_API_TOKEN,
    CONF_BATCH_SIZE,
    CONF_DURABILITY,
    CONF_ENRICHMENT_FAILOVER_URLS,
    CONF_ENRICHMENT_URL,
    CONF_EVENT_TYPES,
    CONF_EXCLUDE_DOMAINS,
    CONF_EXCLUDE_ENTITIES,
    CONF_EXCLUDE_ENTITY_GLOBS,
    CONF_FALLBACK_TO_STORAGE,
    CONF_HEALTH_INTERVAL,
    CONF_INCLUDE_DOMAINS,
    CONF_INCLUDE_ENTITIES,
    CONF_INCLUDE_ENTITY_GLOBS,
    CONF_LINGER_MS,
    CONF_MAX_EVENTS,
    CONF_MAX_MEGABYTES,
    CONF_STORAGE_FAILOVER_URLS,
    CONF_STORAGE_URL,
    CONF_VERIFY_SSL,
    CONF_WEATHER_ENTITY,
    DOMAIN,
    SUGGESTED_EVENT_TYPES,
)
from custom_components.ha_ingestor.pipeline.http_client import Timeouts
from custom_components.ha_ingestor.pipeline.retry import BackoffPolicy
from tests.integration.conftest import TOKEN
from tests.pipeline.fault_server import HEALTH_PATH, STATS_PATH, Fault

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator
    from unittest.mock import AsyncMock

    from homeassistant.config_entries import ConfigFlowResult
    from homeassistant.core import HomeAssistant

    from tests.pipeline.fault_server import FaultServer

    Factory = Callable[..., Awaitable[FaultServer]]

pytestmark = pytest.mark.usefixtures("mock_setup_entry")

INTEGRATION = Path(__file__).parents[2] / "custom_components" / "ha_ingestor"
UNUSED_URL = "http://127.0.0.1:9"  # discard port: nothing listens there


@pytest.fixture(autouse=True)
def fast_checks() -> Generator[None]:
    """Short timeouts and near-instant retries: a failing check takes milliseconds."""
    with (
        patch.object(config_flow, "CHECK_TIMEOUTS", Timeouts(connect=0.5, total=0.5)),
        patch.object(config_flow, "CHECK_BACKOFF", BackoffPolicy(base=0.001, cap=0.001)),
    ):
        yield


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


def suggested(result: Any) -> dict[str, Any]:
    """The suggested value of each field of a form, by field name."""
    values: dict[str, Any] = {}
    for key in result["data_schema"].schema:
        if key.description and "suggested_value" in key.description:
            values[str(key)] = key.description["suggested_value"]
    return values


def field_selector(result: Any, name: str) -> Any:
    for key, value in result["data_schema"].schema.items():
        if str(key) == name:
            return value
    raise KeyError(name)


# -- user step ---------------------------------------------------------------------------


async def test_user_storage_only(
    hass: HomeAssistant, storage_server: FaultServer, mock_setup_entry: AsyncMock
) -> None:
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(storage_server.url + "/"))

    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == f"HA Ingestor (127.0.0.1:{storage_server.port})"
    assert result["data"] == entry_data(storage_server.url)
    assert result["options"] == default_options()
    assert result["result"].unique_id == storage_server.url
    assert result["result"].version == 1
    assert result["result"].minor_version == 1
    assert len(mock_setup_entry.mock_calls) == 1
    # Health is open; stats needs the token.
    (health,) = storage_server.requests_to(HEALTH_PATH)
    assert "Authorization" not in health.headers
    (stats,) = storage_server.requests_to(STATS_PATH)
    assert stats.headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.usefixtures("disable_mock_zeroconf_resolver", "mock_async_zeroconf")
# localhost is also ::1, which the harness refuses; the connection goes on to 127.0.0.1.
@pytest.mark.filterwarnings("ignore:A test tried to use socket.socket.connect:UserWarning")
async def test_user_with_a_hostname(
    hass: HomeAssistant, storage_server: FaultServer, mock_setup_entry: AsyncMock
) -> None:
    # A name, not an address: Home Assistant's own resolver (aiodns, with mDNS for .local
    # names) looks it up, not the harness's stand-in.
    url = f"http://localhost:{storage_server.port}"
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(url))

    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == entry_data(url)
    assert storage_server.requests_to(HEALTH_PATH)


async def test_user_with_enrichment_and_failovers(
    hass: HomeAssistant,
    storage_server: FaultServer,
    enrichment_server: FaultServer,
    fault_server_factory: Factory,
) -> None:
    storage_2 = await fault_server_factory(token=TOKEN)
    enrichment_2 = await fault_server_factory(token=TOKEN)
    enrichment_3 = await fault_server_factory(token=TOKEN)
    result = await start_user_flow(hass)
    result = await submit(
        hass,
        result,
        user_input(
            f"  {storage_server.url}  ",
            **{
                # Blank rows, the primary and repeats are dropped; spellings normalized.
                CONF_STORAGE_FAILOVER_URLS: ["", storage_server.url, storage_2.url + "/"],
                CONF_ENRICHMENT_URL: f"HTTP://127.0.0.1:{enrichment_server.port}/",
                CONF_ENRICHMENT_FAILOVER_URLS: [
                    enrichment_2.url,
                    enrichment_3.url,
                    enrichment_2.url + "/",
                ],
                CONF_API_TOKEN: f" {TOKEN} ",
                CONF_VERIFY_SSL: False,
            },
        ),
    )

    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == {
        CONF_STORAGE_URL: storage_server.url,
        CONF_STORAGE_FAILOVER_URLS: [storage_2.url],
        CONF_ENRICHMENT_URL: enrichment_server.url,
        CONF_ENRICHMENT_FAILOVER_URLS: [enrichment_2.url, enrichment_3.url],
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
    result = await submit(hass, result, user_input(storage_server.url, enrichment_url="   "))
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_ENRICHMENT_URL] is None


async def test_user_with_path_prefix(hass: HomeAssistant, storage_server: FaultServer) -> None:
    """A path prefix (a reverse proxy) is kept and the checks go below it."""
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(storage_server.url + "/proxy/"))
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
    _, errors = config_flow._parse_connection(user_input(storage_server.url, **extra))
    assert errors == {field: "invalid_url"}
    if value == [42]:
        return
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(storage_server.url, **extra))
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
    result = await submit(hass, result, user_input(storage_server.url, **{CONF_API_TOKEN: "  "}))
    assert result["errors"] == {CONF_API_TOKEN: "invalid_auth"}
    assert storage_server.requests == []


async def test_user_storage_unreachable_then_recovers(
    hass: HomeAssistant, storage_server: FaultServer, mock_setup_entry: AsyncMock
) -> None:
    await storage_server.refuse()
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(storage_server.url))
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_STORAGE_URL: "cannot_connect"}
    assert suggested(result)[CONF_API_TOKEN] == TOKEN
    assert mock_setup_entry.mock_calls == []

    await storage_server.restore()
    result = await submit(hass, result, user_input(storage_server.url))
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert len(mock_setup_entry.mock_calls) == 1


async def test_user_enrichment_unreachable(
    hass: HomeAssistant, storage_server: FaultServer
) -> None:
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(storage_server.url, enrichment_url=UNUSED_URL))
    assert result["errors"] == {CONF_ENRICHMENT_URL: "cannot_connect"}


async def test_user_urls_of_the_other_service(
    hass: HomeAssistant, storage_server: FaultServer, enrichment_server: FaultServer
) -> None:
    # Each service names itself in its health answer: swapped URLs are caught, not stored.
    result = await start_user_flow(hass)
    swapped = user_input(enrichment_server.url, enrichment_url=storage_server.url)
    result = await submit(hass, result, swapped)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {
        CONF_STORAGE_URL: "wrong_service",
        CONF_ENRICHMENT_URL: "wrong_service",
    }
    result = await submit(
        hass, result, user_input(storage_server.url, enrichment_url=enrichment_server.url)
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_user_failovers_unreachable(
    hass: HomeAssistant, storage_server: FaultServer, enrichment_server: FaultServer
) -> None:
    result = await start_user_flow(hass)
    result = await submit(
        hass,
        result,
        user_input(
            storage_server.url,
            **{
                CONF_STORAGE_FAILOVER_URLS: [UNUSED_URL],
                CONF_ENRICHMENT_URL: enrichment_server.url,
                CONF_ENRICHMENT_FAILOVER_URLS: ["http://127.0.0.1:7"],
            },
        ),
    )
    assert result["errors"] == {
        CONF_STORAGE_FAILOVER_URLS: "cannot_connect",
        CONF_ENRICHMENT_FAILOVER_URLS: "cannot_connect",
    }


async def test_user_unhealthy_is_retried(hass: HomeAssistant, storage_server: FaultServer) -> None:
    storage_server.health_status = 503
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(storage_server.url))
    assert result["errors"] == {CONF_STORAGE_URL: "cannot_connect"}
    # A person is waiting: a few quick attempts, then the verdict.
    assert len(storage_server.requests_to(HEALTH_PATH)) == config_flow.CHECK_ATTEMPTS
    assert storage_server.requests_to(STATS_PATH) == []


async def test_user_one_failed_health_attempt_is_forgiven(
    hass: HomeAssistant, storage_server: FaultServer
) -> None:
    storage_server.add_faults(Fault.answer(503, path=HEALTH_PATH), Fault.reset(path=STATS_PATH))
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(storage_server.url))
    assert result["type"] is FlowResultType.CREATE_ENTRY


@pytest.mark.parametrize("path", [HEALTH_PATH, STATS_PATH])
async def test_user_timeout(hass: HomeAssistant, storage_server: FaultServer, path: str) -> None:
    storage_server.add_faults(*[Fault.slow(5, path=path)] * config_flow.CHECK_ATTEMPTS)
    with patch.object(config_flow, "CHECK_TIMEOUTS", Timeouts(connect=0.1, total=0.1)):
        result = await start_user_flow(hass)
        result = await submit(hass, result, user_input(storage_server.url))
    assert result["errors"] == {CONF_STORAGE_URL: "cannot_connect"}


async def test_user_stats_connection_dropped(
    hass: HomeAssistant, storage_server: FaultServer
) -> None:
    # aiohttp itself retries a GET once on a dropped keep-alive connection: enough resets.
    storage_server.add_faults(*[Fault.reset(path=STATS_PATH)] * 2 * config_flow.CHECK_ATTEMPTS)
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(storage_server.url))
    assert result["errors"] == {CONF_STORAGE_URL: "cannot_connect"}


@pytest.mark.parametrize("status", [404, 500])
async def test_user_stats_error_status(
    hass: HomeAssistant, storage_server: FaultServer, status: int
) -> None:
    storage_server.add_faults(*[Fault.answer(status, path=STATS_PATH)] * 5)
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(storage_server.url))
    assert result["errors"] == {CONF_STORAGE_URL: "cannot_connect"}


async def test_user_wrong_token_401_then_right_token(
    hass: HomeAssistant, storage_server: FaultServer
) -> None:
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(storage_server.url, api_token="wrong"))
    assert result["errors"] == {CONF_API_TOKEN: "invalid_auth"}
    assert storage_server.requests_to(STATS_PATH)[0].status == 401
    assert len(storage_server.requests_to(STATS_PATH)) == 1  # auth failures are not retried

    result = await submit(hass, result, user_input(storage_server.url))
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_API_TOKEN] == TOKEN


async def test_user_forbidden_403_on_enrichment(
    hass: HomeAssistant, storage_server: FaultServer, enrichment_server: FaultServer
) -> None:
    enrichment_server.add_faults(Fault.answer(403, path=STATS_PATH))
    result = await start_user_flow(hass)
    result = await submit(
        hass, result, user_input(storage_server.url, enrichment_url=enrichment_server.url)
    )
    assert result["errors"] == {CONF_API_TOKEN: "invalid_auth"}


async def test_user_unexpected_error_then_recovers(
    hass: HomeAssistant, storage_server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    result = await start_user_flow(hass)
    with patch.object(config_flow, "ServiceHTTPClient", side_effect=RuntimeError("boom")):
        result = await submit(hass, result, user_input(storage_server.url))
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "unknown"}
    assert "Unexpected error while checking the HA Ingestor services" in caplog.text
    assert any(record.levelno == logging.ERROR for record in caplog.records)

    result = await submit(hass, result, user_input(storage_server.url))
    assert result["type"] is FlowResultType.CREATE_ENTRY


@pytest.mark.parametrize(
    "spelling",
    [
        "{url}",
        "{url}/",
        "{url}//",
        "  {url}  ",
        "HTTP://127.0.0.1:{port}",
        "http://127.0.0.1:{port}/",
    ],
)
async def test_user_already_configured(
    hass: HomeAssistant, storage_server: FaultServer, spelling: str
) -> None:
    add_entry(hass, storage_server.url)
    result = await start_user_flow(hass)
    url = spelling.format(url=storage_server.url, port=storage_server.port)
    result = await submit(hass, result, user_input(url))
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert storage_server.requests == []  # decided before any network call


async def test_user_already_configured_default_port(hass: HomeAssistant) -> None:
    add_entry(hass, "https://ingest.example.com")
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input("HTTPS://Ingest.Example.COM:443/"))
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


async def test_user_second_entry_for_other_storage(
    hass: HomeAssistant, storage_server: FaultServer, fault_server_factory: Factory
) -> None:
    add_entry(hass, storage_server.url)
    other = await fault_server_factory(token=TOKEN)
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(other.url))
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


# -- reauth ------------------------------------------------------------------------------


async def test_reauth(
    hass: HomeAssistant, fault_server_factory: Factory, mock_setup_entry: AsyncMock
) -> None:
    server = await fault_server_factory(token="new-token")
    entry = add_entry(hass, server.url)
    result = await entry.start_reauth_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reauth_confirm"
    assert result["description_placeholders"] == {"url": server.url, "name": entry.title}

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
    assert entry.data == entry_data(server.url, api_token="new-token")
    assert len(mock_setup_entry.mock_calls) == 1  # reloaded with the new token


async def test_reauth_forbidden_and_blank(
    hass: HomeAssistant, storage_server: FaultServer, enrichment_server: FaultServer
) -> None:
    entry = add_entry(hass, storage_server.url, enrichment_url=enrichment_server.url)
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
        storage_server.url,
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
    entry = add_entry(hass, storage_server.url)
    result = await entry.start_reauth_flow(hass)
    with patch.object(config_flow, "ServiceHTTPClient", side_effect=ValueError("boom")):
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
    entry = add_entry(hass, storage_server.url, enrichment_url=enrichment_server.url)
    new_storage = await fault_server_factory(token="rotated")
    storage_server.token = enrichment_server.token = "rotated"
    result = await entry.start_reconfigure_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"
    values = suggested(result)
    assert values[CONF_STORAGE_URL] == storage_server.url
    assert values[CONF_ENRICHMENT_URL] == enrichment_server.url
    assert values[CONF_API_TOKEN] == TOKEN

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        {
            CONF_STORAGE_URL: new_storage.url + "/",
            CONF_STORAGE_FAILOVER_URLS: [storage_server.url],
            CONF_ENRICHMENT_URL: enrichment_server.url,
            CONF_API_TOKEN: "rotated",
            CONF_VERIFY_SSL: False,
        },
    )
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.unique_id == new_storage.url
    assert entry.title == f"HA Ingestor (127.0.0.1:{new_storage.port})"  # it was ours
    assert entry.data == {
        CONF_STORAGE_URL: new_storage.url,
        CONF_STORAGE_FAILOVER_URLS: [storage_server.url],
        CONF_ENRICHMENT_URL: enrichment_server.url,
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
        hass, storage_server.url, title="Basement pipeline", enrichment_url=enrichment_server.url
    )
    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], user_input(storage_server.url)
    )
    assert result["reason"] == "reconfigure_successful"
    assert entry.title == "Basement pipeline"
    assert entry.unique_id == storage_server.url
    assert entry.data == entry_data(storage_server.url)
    assert enrichment_server.requests == []


async def test_reconfigure_unique_id_clash(
    hass: HomeAssistant, storage_server: FaultServer, fault_server_factory: Factory
) -> None:
    other = await fault_server_factory(token=TOKEN)
    add_entry(hass, other.url)
    entry = add_entry(hass, storage_server.url)
    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], user_input(other.url.upper().replace("HTTP", "http") + "/")
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert entry.data[CONF_STORAGE_URL] == storage_server.url
    assert entry.unique_id == storage_server.url
    assert other.requests == []


async def test_reconfigure_errors_then_success(
    hass: HomeAssistant, storage_server: FaultServer
) -> None:
    entry = add_entry(hass, storage_server.url)
    result = await entry.start_reconfigure_flow(hass)

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], user_input("storage.lan:8004")
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_STORAGE_URL: "invalid_url"}
    assert suggested(result)[CONF_STORAGE_URL] == "storage.lan:8004"  # what was typed

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], user_input(storage_server.url, enrichment_url=UNUSED_URL)
    )
    assert result["errors"] == {CONF_ENRICHMENT_URL: "cannot_connect"}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], user_input(storage_server.url, api_token="bad")
    )
    assert result["errors"] == {CONF_API_TOKEN: "invalid_auth"}

    with patch.object(config_flow, "ServiceHTTPClient", side_effect=OSError("boom")):
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], user_input(storage_server.url)
        )
    assert result["errors"] == {"base": "unknown"}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], user_input(storage_server.url)
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"


# -- options -----------------------------------------------------------------------------


def options_input(**changes: Any) -> dict[str, Any]:
    values = default_options()
    del values[CONF_WEATHER_ENTITY]  # an empty optional field is left out by the frontend
    values.update(changes)
    return values


async def test_options_defaults(hass: HomeAssistant, storage_server: FaultServer) -> None:
    entry = add_entry(hass, storage_server.url)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "init"
    assert suggested(result) == default_options()

    result = await hass.config_entries.options.async_configure(result["flow_id"], options_input())
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == default_options()


async def test_options_of_an_entry_without_options(
    hass: HomeAssistant, storage_server: FaultServer
) -> None:
    entry = add_entry(hass, storage_server.url)
    hass.config_entries.async_update_entry(entry, options={CONF_BATCH_SIZE: 42})
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert suggested(result) == {**default_options(), CONF_BATCH_SIZE: 42}


async def test_options_changes(hass: HomeAssistant, storage_server: FaultServer) -> None:
    hass.states.async_set("light.kitchen", "on")
    hass.states.async_set("weather.home", "rainy")
    entry = add_entry(hass, storage_server.url)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    domains = field_selector(result, CONF_INCLUDE_DOMAINS).config["options"]
    assert domains == ["light", "weather"]

    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        options_input(
            event_types=["state_changed", "call_service", "my_custom_event", "call_service"],
            include_domains=["sensor", "light"],
            include_entities=["sensor.outside"],
            include_entity_globs=[" sensor.*_temperature "],
            exclude_domains=["automation"],
            exclude_entities=["sensor.noisy"],
            exclude_entity_globs=["sensor.*_linkquality", "sensor.*_linkquality"],
            batch_size=1000.0,
            linger_ms=20.0,
            durability="on_backlog",
            max_events=5000.0,
            max_megabytes=64.0,
            fallback_to_storage=False,
            health_check_interval=10.0,
            weather_entity="weather.home",
        ),
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    expected = {
        CONF_EVENT_TYPES: ["state_changed", "call_service", "my_custom_event"],
        CONF_INCLUDE_DOMAINS: ["sensor", "light"],
        CONF_INCLUDE_ENTITIES: ["sensor.outside"],
        CONF_INCLUDE_ENTITY_GLOBS: ["sensor.*_temperature"],
        CONF_EXCLUDE_DOMAINS: ["automation"],
        CONF_EXCLUDE_ENTITIES: ["sensor.noisy"],
        CONF_EXCLUDE_ENTITY_GLOBS: ["sensor.*_linkquality"],
        CONF_BATCH_SIZE: 1000,
        CONF_LINGER_MS: 20,
        CONF_DURABILITY: "on_backlog",
        CONF_MAX_EVENTS: 5000,
        CONF_MAX_MEGABYTES: 64,
        CONF_FALLBACK_TO_STORAGE: False,
        CONF_HEALTH_INTERVAL: 10,
        CONF_WEATHER_ENTITY: "weather.home",
    }
    assert entry.options == expected
    for key in (CONF_BATCH_SIZE, CONF_LINGER_MS, CONF_MAX_EVENTS, CONF_MAX_MEGABYTES):
        assert type(entry.options[key]) is int

    # Opened again: the stored values are the suggestions, custom event types included.
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert suggested(result) == expected
    assert field_selector(result, CONF_EVENT_TYPES).config["options"] == [
        "state_changed",
        "call_service",
        "automation_triggered",
        "all_events",
        "my_custom_event",
    ]
    assert field_selector(result, CONF_INCLUDE_DOMAINS).config["options"] == [
        "automation",
        "light",
        "sensor",
        "weather",
    ]

    # Clearing the weather entity stores None.
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {key: value for key, value in expected.items() if key != "weather_entity"},
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options[CONF_WEATHER_ENTITY] is None


@pytest.mark.parametrize("chosen", ["all_events", "*", " * "])
async def test_options_all_events(
    hass: HomeAssistant, storage_server: FaultServer, chosen: str
) -> None:
    """The select's "all_events" option, or "*" typed in, is stored as "*" (and shown back
    as "all_events", the select's translatable value for it)."""
    entry = add_entry(hass, storage_server.url)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], options_input(event_types=["state_changed", chosen])
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options[CONF_EVENT_TYPES] == [ALL_EVENTS]

    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert suggested(result)[CONF_EVENT_TYPES] == [ALL_EVENTS_OPTION]
    options = field_selector(result, CONF_EVENT_TYPES).config["options"]
    assert ALL_EVENTS_OPTION in options
    assert ALL_EVENTS not in options


async def test_options_all_events_kept_on_an_error(
    hass: HomeAssistant, storage_server: FaultServer
) -> None:
    """A form shown again for another field's error keeps "all events" chosen."""
    entry = add_entry(hass, storage_server.url)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], options_input(event_types=["*"], include_domains=["Light"])
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_INCLUDE_DOMAINS: "invalid_domain"}
    assert suggested(result)[CONF_EVENT_TYPES] == [ALL_EVENTS_OPTION]


async def test_options_lists_left_out(hass: HomeAssistant, storage_server: FaultServer) -> None:
    """The frontend leaves out emptied optional lists: they are stored empty."""
    entry = add_entry(hass, storage_server.url)
    hass.config_entries.async_update_entry(
        entry, options={**default_options(), CONF_INCLUDE_DOMAINS: ["light"]}
    )
    result = await hass.config_entries.options.async_init(entry.entry_id)
    values = options_input()
    for key in (CONF_INCLUDE_DOMAINS, CONF_INCLUDE_ENTITIES, CONF_EXCLUDE_ENTITY_GLOBS):
        del values[key]
    result = await hass.config_entries.options.async_configure(result["flow_id"], values)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == default_options()


@pytest.mark.parametrize(
    ("changes", "errors"),
    [
        ({CONF_EVENT_TYPES: []}, {CONF_EVENT_TYPES: "no_event_types"}),
        ({CONF_EVENT_TYPES: ["state changed"]}, {CONF_EVENT_TYPES: "invalid_event_type"}),
        ({CONF_EVENT_TYPES: ["", "state_changed"]}, {CONF_EVENT_TYPES: "invalid_event_type"}),
        ({CONF_EVENT_TYPES: ["x" * 65]}, {CONF_EVENT_TYPES: "invalid_event_type"}),
        ({CONF_INCLUDE_DOMAINS: ["Light"]}, {CONF_INCLUDE_DOMAINS: "invalid_domain"}),
        ({CONF_EXCLUDE_DOMAINS: ["binary sensor"]}, {CONF_EXCLUDE_DOMAINS: "invalid_domain"}),
        ({CONF_INCLUDE_ENTITY_GLOBS: [""]}, {CONF_INCLUDE_ENTITY_GLOBS: "invalid_glob"}),
        ({CONF_INCLUDE_ENTITY_GLOBS: ["   "]}, {CONF_INCLUDE_ENTITY_GLOBS: "invalid_glob"}),
        ({CONF_EXCLUDE_ENTITY_GLOBS: ["Sensor.*"]}, {CONF_EXCLUDE_ENTITY_GLOBS: "invalid_glob"}),
        ({CONF_EXCLUDE_ENTITY_GLOBS: ["sensor.a *"]}, {CONF_EXCLUDE_ENTITY_GLOBS: "invalid_glob"}),
        (
            {CONF_EVENT_TYPES: [], CONF_INCLUDE_ENTITY_GLOBS: ["a", ""]},
            {CONF_EVENT_TYPES: "no_event_types", CONF_INCLUDE_ENTITY_GLOBS: "invalid_glob"},
        ),
    ],
)
async def test_options_validation(
    hass: HomeAssistant,
    storage_server: FaultServer,
    changes: dict[str, Any],
    errors: dict[str, str],
) -> None:
    entry = add_entry(hass, storage_server.url)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], options_input(**changes)
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == errors
    assert entry.options == default_options()
    # What was typed stays on the form.
    for key, value in changes.items():
        assert suggested(result)[key] == value

    result = await hass.config_entries.options.async_configure(result["flow_id"], options_input())
    assert result["type"] is FlowResultType.CREATE_ENTRY


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (CONF_BATCH_SIZE, 0),
        (CONF_BATCH_SIZE, 5001),
        (CONF_LINGER_MS, -1),
        (CONF_LINGER_MS, 1001),
        (CONF_MAX_EVENTS, 999),
        (CONF_MAX_EVENTS, 10_000_001),
        (CONF_MAX_MEGABYTES, 0),
        (CONF_MAX_MEGABYTES, 10_001),
        (CONF_HEALTH_INTERVAL, 4),
        (CONF_HEALTH_INTERVAL, 3601),
        (CONF_DURABILITY, "sometimes"),
        (CONF_WEATHER_ENTITY, "sensor.outside"),
    ],
)
async def test_options_out_of_bounds(
    hass: HomeAssistant, storage_server: FaultServer, key: str, value: Any
) -> None:
    """The selectors refuse values outside their bounds before the step sees them."""
    entry = add_entry(hass, storage_server.url)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    with pytest.raises(vol.Invalid):
        await hass.config_entries.options.async_configure(
            result["flow_id"], options_input(**{key: value})
        )
    assert entry.options == default_options()


# -- translations ------------------------------------------------------------------------


def test_translations_in_step() -> None:
    """en.json is strings.json; every field, error and abort reason has its text."""
    strings = json.loads((INTEGRATION / "strings.json").read_text(encoding="utf-8"))
    english = json.loads((INTEGRATION / "translations" / "en.json").read_text(encoding="utf-8"))
    assert english == strings

    config, options = strings["config"], strings["options"]
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
        "wrong_service",
        "unknown",
    }
    assert set(config["abort"]) == {
        "already_configured",
        "reauth_successful",
        "reconfigure_successful",
    }

    option_fields = set(default_options())
    assert set(options["step"]["init"]["data"]) == option_fields
    assert set(options["step"]["init"]["data_description"]) == option_fields
    assert set(options["error"]) == {
        "no_event_types",
        "invalid_event_type",
        "invalid_domain",
        "invalid_glob",
    }
    assert set(strings["selector"]["durability"]["options"]) == {"always", "on_backlog"}
    assert set(strings["selector"]["event_types"]["options"]) == {
        *SUGGESTED_EVENT_TYPES,
        ALL_EVENTS_OPTION,
    }
    # Select values are translation keys: lower case, digits, - and _, not at either end.
    for selector in strings["selector"].values():
        for value in selector["options"]:
            assert re.fullmatch(r"[a-z0-9]([a-z0-9_-]*[a-z0-9])?", value), value
