"""What the config flow's checks of the services find (`service_checks`), through the
user step, against real local services: unreachable, unhealthy, slow, the wrong service,
another web server, a refused token."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from unittest.mock import patch

import pytest
from homeassistant.data_entry_flow import FlowResultType

from custom_components.ha_ingestor import service_checks
from custom_components.ha_ingestor.const import (
    CONF_API_TOKEN,
    CONF_ENRICHMENT_FAILOVER_URLS,
    CONF_ENRICHMENT_URL,
    CONF_STORAGE_FAILOVER_URLS,
    CONF_STORAGE_URL,
)
from custom_components.ha_ingestor.pipeline.envelope import STORAGE_SERVICE_NAME
from custom_components.ha_ingestor.pipeline.http_client import Timeouts
from tests.integration.conftest import TOKEN
from tests.integration.flow_helpers import (
    UNUSED_URL,
    local_url,
    start_user_flow,
    submit,
    suggested,
    user_input,
)
from tests.pipeline.fault_server import HEALTH_PATH, STATS_PATH, Fault

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


async def test_user_storage_unreachable_then_recovers(
    hass: HomeAssistant, storage_server: FaultServer, mock_setup_entry: AsyncMock
) -> None:
    await storage_server.refuse()
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(local_url(storage_server)))
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_STORAGE_URL: "cannot_connect"}
    assert suggested(result)[CONF_API_TOKEN] == TOKEN
    assert mock_setup_entry.mock_calls == []

    await storage_server.restore()
    result = await submit(hass, result, user_input(local_url(storage_server)))
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert len(mock_setup_entry.mock_calls) == 1


async def test_user_enrichment_unreachable(
    hass: HomeAssistant, storage_server: FaultServer
) -> None:
    result = await start_user_flow(hass)
    result = await submit(
        hass, result, user_input(local_url(storage_server), enrichment_url=UNUSED_URL)
    )
    assert result["errors"] == {CONF_ENRICHMENT_URL: "cannot_connect"}


async def test_user_urls_of_the_other_service(
    hass: HomeAssistant, storage_server: FaultServer, enrichment_server: FaultServer
) -> None:
    # Each service names itself in its health answer: swapped URLs are caught, not stored,
    # and the error says which service answered.
    result = await start_user_flow(hass)
    swapped = user_input(local_url(enrichment_server), enrichment_url=local_url(storage_server))
    result = await submit(hass, result, swapped)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {
        CONF_STORAGE_URL: "answers_as_enrichment",
        CONF_ENRICHMENT_URL: "answers_as_storage",
    }
    assert suggested(result)[CONF_STORAGE_URL] == local_url(enrichment_server)
    assert storage_server.requests_to(STATS_PATH) == []  # the token is not offered to it
    assert enrichment_server.requests_to(STATS_PATH) == []
    result = await submit(
        hass,
        result,
        user_input(local_url(storage_server), enrichment_url=local_url(enrichment_server)),
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_user_failover_urls_of_the_other_service(
    hass: HomeAssistant, storage_server: FaultServer, enrichment_server: FaultServer
) -> None:
    result = await start_user_flow(hass)
    result = await submit(
        hass,
        result,
        user_input(
            local_url(storage_server),
            **{
                CONF_STORAGE_FAILOVER_URLS: [local_url(enrichment_server)],
                CONF_ENRICHMENT_URL: local_url(enrichment_server),
                CONF_ENRICHMENT_FAILOVER_URLS: [local_url(storage_server)],
            },
        ),
    )
    assert result["errors"] == {
        CONF_STORAGE_FAILOVER_URLS: "answers_as_enrichment",
        CONF_ENRICHMENT_FAILOVER_URLS: "answers_as_storage",
    }


@pytest.mark.parametrize(
    ("name", "health"),
    [
        ("fault-server", None),  # JSON that names another service
        (STORAGE_SERVICE_NAME, Fault.answer(200, path=HEALTH_PATH, body=b"<html>OK</html>")),
        (STORAGE_SERVICE_NAME, Fault.answer(200, path=HEALTH_PATH, body=b'{"status": "ok"}')),
        (STORAGE_SERVICE_NAME, Fault.answer(200, path=HEALTH_PATH, body=b'["data-storage"]')),
    ],
)
async def test_user_url_of_another_web_server(
    hass: HomeAssistant,
    storage_server: FaultServer,
    fault_server_factory: Factory,
    name: str,
    health: Fault | None,
) -> None:
    """Something answers the health path, but not as one of our services."""
    server = await fault_server_factory(token=TOKEN, name=name)
    if health is not None:
        server.add_faults(health, health)  # one for each check below
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(local_url(server)))
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_STORAGE_URL: "not_an_ingestor_service"}
    assert server.requests_to(STATS_PATH) == []

    # In the enrichment field, the same.
    result = await submit(
        hass, result, user_input(local_url(storage_server), enrichment_url=local_url(server))
    )
    assert result["errors"] == {CONF_ENRICHMENT_URL: "not_an_ingestor_service"}


async def test_user_failovers_unreachable(
    hass: HomeAssistant, storage_server: FaultServer, enrichment_server: FaultServer
) -> None:
    result = await start_user_flow(hass)
    result = await submit(
        hass,
        result,
        user_input(
            local_url(storage_server),
            **{
                CONF_STORAGE_FAILOVER_URLS: [UNUSED_URL],
                CONF_ENRICHMENT_URL: local_url(enrichment_server),
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
    result = await submit(hass, result, user_input(local_url(storage_server)))
    assert result["errors"] == {CONF_STORAGE_URL: "cannot_connect"}
    # A person is waiting: a few quick attempts, then the verdict.
    assert len(storage_server.requests_to(HEALTH_PATH)) == service_checks.CHECK_ATTEMPTS
    assert storage_server.requests_to(STATS_PATH) == []


async def test_user_one_failed_health_attempt_is_forgiven(
    hass: HomeAssistant, storage_server: FaultServer
) -> None:
    storage_server.add_faults(Fault.answer(503, path=HEALTH_PATH), Fault.reset(path=STATS_PATH))
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(local_url(storage_server)))
    assert result["type"] is FlowResultType.CREATE_ENTRY


@pytest.mark.parametrize("path", [HEALTH_PATH, STATS_PATH])
async def test_user_timeout(hass: HomeAssistant, storage_server: FaultServer, path: str) -> None:
    storage_server.add_faults(*[Fault.slow(5, path=path)] * service_checks.CHECK_ATTEMPTS)
    with patch.object(service_checks, "CHECK_TIMEOUTS", Timeouts(connect=0.1, total=0.1)):
        result = await start_user_flow(hass)
        result = await submit(hass, result, user_input(local_url(storage_server)))
    assert result["errors"] == {CONF_STORAGE_URL: "cannot_connect"}


async def test_user_stats_connection_dropped(
    hass: HomeAssistant, storage_server: FaultServer
) -> None:
    # aiohttp itself retries a GET once on a dropped keep-alive connection: enough resets.
    storage_server.add_faults(*[Fault.reset(path=STATS_PATH)] * 2 * service_checks.CHECK_ATTEMPTS)
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(local_url(storage_server)))
    assert result["errors"] == {CONF_STORAGE_URL: "cannot_connect"}


@pytest.mark.parametrize("status", [404, 500])
async def test_user_stats_error_status(
    hass: HomeAssistant, storage_server: FaultServer, status: int
) -> None:
    storage_server.add_faults(*[Fault.answer(status, path=STATS_PATH)] * 5)
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(local_url(storage_server)))
    assert result["errors"] == {CONF_STORAGE_URL: "cannot_connect"}


async def test_user_wrong_token_401_then_right_token(
    hass: HomeAssistant, storage_server: FaultServer
) -> None:
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(local_url(storage_server), api_token="wrong"))
    assert result["errors"] == {CONF_API_TOKEN: "invalid_auth"}
    assert storage_server.requests_to(STATS_PATH)[0].status == 401
    assert len(storage_server.requests_to(STATS_PATH)) == 1  # auth failures are not retried

    result = await submit(hass, result, user_input(local_url(storage_server)))
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_API_TOKEN] == TOKEN


async def test_user_forbidden_403_on_enrichment(
    hass: HomeAssistant, storage_server: FaultServer, enrichment_server: FaultServer
) -> None:
    enrichment_server.add_faults(Fault.answer(403, path=STATS_PATH))
    result = await start_user_flow(hass)
    result = await submit(
        hass,
        result,
        user_input(local_url(storage_server), enrichment_url=local_url(enrichment_server)),
    )
    assert result["errors"] == {CONF_API_TOKEN: "invalid_auth"}


async def test_user_unexpected_error_then_recovers(
    hass: HomeAssistant, storage_server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    result = await start_user_flow(hass)
    with patch.object(service_checks, "ServiceHTTPClient", side_effect=RuntimeError("boom")):
        result = await submit(hass, result, user_input(local_url(storage_server)))
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "unknown"}
    assert "Unexpected error while checking the HA Ingestor services" in caplog.text
    assert any(record.levelno == logging.ERROR for record in caplog.records)

    result = await submit(hass, result, user_input(local_url(storage_server)))
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_health_checks_carry_no_token(
    hass: HomeAssistant, storage_server: FaultServer, enrichment_server: FaultServer
) -> None:
    """Health is open: the token travels only where it is checked (stats), so a health
    check never hands it to whatever answers at a mistyped URL (issue 10)."""
    result = await start_user_flow(hass)
    result = await submit(
        hass,
        result,
        user_input(local_url(storage_server), enrichment_url=local_url(enrichment_server)),
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    for server in (storage_server, enrichment_server):
        health = server.requests_to(HEALTH_PATH)
        assert health
        for request in health:
            assert "authorization" not in {name.lower() for name in request.headers}
        stats = server.requests_to(STATS_PATH)
        assert [request.headers.get("Authorization") for request in stats] == [f"Bearer {TOKEN}"]
