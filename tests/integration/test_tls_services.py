"""The integration against a storage service speaking HTTPS with a self-signed
certificate (issue 10): refused while *Verify TLS certificates* is on, set up and
delivering with it off. The real storage service, started with ``--tls-cert`` and
``--tls-key``."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
from homeassistant.data_entry_flow import FlowResultType

from benchmarks.influxd import free_port
from custom_components.ha_ingestor.const import CONF_STORAGE_URL, CONF_VERIFY_SSL, DOMAIN
from tests.integration.common import make_entry, setup_entry, unload
from tests.integration.conftest import TOKEN
from tests.integration.flow_helpers import start_user_flow, submit, user_input
from tests.services.test_tls import make_certificate, run_cli, stop, wait_healthy

if TYPE_CHECKING:
    from homeassistant.core import HomeAssistant

pytestmark = [
    pytest.mark.usefixtures("resolve_host_names", "fast_service_checks"),
    pytest.mark.filterwarnings("ignore:A test tried to use socket.socket.connect:UserWarning"),
]


@pytest.fixture
async def tls_storage(socket_enabled: None, tmp_path: Path) -> AsyncIterator[str]:
    """``https://localhost:<port>`` of a storage service on SQLite (tmp_path/events.db),
    in a process of its own: a client refusing its certificate resets the handshake,
    which a server in Home Assistant's loop would report as an error of the test."""
    certificate = make_certificate(tmp_path)
    port = free_port()
    process = run_cli(
        "storage",
        "--port",
        str(port),
        "--sqlite-path",
        str(tmp_path / "events.db"),
        "--tls-cert",
        str(certificate.cert),
        "--tls-key",
        str(certificate.key),
        extra_env={"HA_INGESTOR_TOKEN": TOKEN},
    )
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, f"https://127.0.0.1:{port}", ssl=False)
        yield f"https://localhost:{port}"
    finally:
        stop(process)


@pytest.mark.usefixtures("mock_setup_entry")
async def test_config_flow_needs_verify_off_for_a_self_signed_certificate(
    hass: HomeAssistant, tls_storage: str
) -> None:
    result = await start_user_flow(hass)
    result = await submit(hass, result, user_input(tls_storage))
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_STORAGE_URL: "cannot_connect"}
    result = await submit(hass, result, user_input(tls_storage, **{CONF_VERIFY_SSL: False}))
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert result["data"][CONF_STORAGE_URL] == tls_storage


async def test_events_are_delivered_over_tls(
    hass: HomeAssistant, tls_storage: str, tmp_path: Path
) -> None:
    entry = await setup_entry(hass, make_entry(tls_storage, data={CONF_VERIFY_SSL: False}))
    response = await hass.services.async_call(
        DOMAIN,
        "forward_event",
        {"event_type": "door_opened", "entity_id": "binary_sensor.front_door"},
        blocking=True,
        return_response=True,
    )
    assert response is not None
    assert response["status"] == "stored", response
    await unload(hass, entry)
    with contextlib.closing(sqlite3.connect(tmp_path / "events.db")) as db:
        rows = db.execute("SELECT entity_id FROM events WHERE event_type = 'door_opened'")
        assert rows.fetchall() == [("binary_sensor.front_door",)]
