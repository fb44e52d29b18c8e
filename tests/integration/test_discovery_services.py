"""Discovery against the real storage service: the records it announces, as Home
Assistant's zeroconf turns them into discovery info, set up an entry keyed by the id its
health answers; an entry from before ids learns that id. Both halves of the contract
(docs/ARCHITECTURE.md, "Discovery") meet here.

The records are the ones the service builds (announce.service_info) rather than heard
on the network: multicast on this machine's network is not the tests' to use (the
services' own tests browse on loopback, tests/services/test_announce.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from aiohttp import web
from homeassistant.config_entries import SOURCE_ZEROCONF
from homeassistant.data_entry_flow import FlowResultType

from custom_components.ha_ingestor.const import CONF_API_TOKEN, CONF_STORAGE_URL, DOMAIN
from ha_ingestor_services import announce
from ha_ingestor_services.limits import Limits
from ha_ingestor_services.storage.service import StorageService
from ha_ingestor_services.storage.settings import StorageSettings
from ha_ingestor_services.web import create_app
from tests.integration.common import flush, make_entry, setup_entry, unload, wait_until
from tests.integration.conftest import TOKEN

try:  # Home Assistant 2025.5 on; 2025.4 has it in the package itself
    from homeassistant.components.zeroconf.discovery import info_from_service
except ImportError:
    from homeassistant.components.zeroconf import (
        info_from_service,  # type: ignore[attr-defined, no-redef, unused-ignore]
    )

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path
    from unittest.mock import AsyncMock

    from homeassistant.core import HomeAssistant


class Storage:
    def __init__(self, service: StorageService, port: int) -> None:
        self.service, self.port = service, port
        self.url = f"http://127.0.0.1:{port}"


@pytest.fixture
async def storage(socket_enabled: None, tmp_path: Path) -> AsyncIterator[Storage]:
    """The real storage service on SQLite, on a free 127.0.0.1 port."""
    service = StorageService(StorageSettings(sqlite_path=str(tmp_path / "events.db")))
    runner = web.AppRunner(create_app(service, token=TOKEN, limits=Limits()))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield Storage(service, runner.addresses[0][1])
    await runner.cleanup()


@pytest.mark.usefixtures("mock_setup_entry")
async def test_the_announced_service_is_set_up_by_its_id(
    hass: HomeAssistant, storage: Storage, mock_setup_entry: AsyncMock
) -> None:
    records = announce.service_info(
        "storage", storage.service.service_id, storage.port, ["127.0.0.1"], token=True, tls=False
    )
    info = info_from_service(records)
    assert info is not None

    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=info
    )
    assert result["step_id"] == "zeroconf_confirm"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_API_TOKEN: TOKEN}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_STORAGE_URL] == storage.url
    assert result["result"].unique_id == storage.service.service_id
    assert len(mock_setup_entry.mock_calls) == 1

    # The service restarts and announces itself again: nothing new is offered.
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=info
    )
    assert result["reason"] == "already_configured"


async def test_an_old_entry_learns_the_real_service_id(
    hass: HomeAssistant, storage: Storage
) -> None:
    entry = await setup_entry(hass, make_entry(storage.url, minor_version=1))
    await wait_until(lambda: entry.unique_id == storage.service.service_id)
    hass.states.async_set("sensor.after_the_id", "1")
    await hass.async_block_till_done()
    await flush(entry)  # delivered to it as before
    await unload(hass, entry)
