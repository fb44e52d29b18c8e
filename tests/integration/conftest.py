"""Fixtures shared by the integration tests: the Home Assistant harness, real local services.

Keep fixtures here general and self-contained; suite-specific ones belong in the test
modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from unittest.mock import AsyncMock, PropertyMock, patch

import pytest
from pytest_homeassistant_custom_component.syrupy import HomeAssistantSnapshotExtension

from custom_components.ha_ingestor import service_checks
from custom_components.ha_ingestor.pipeline.http_client import Timeouts
from custom_components.ha_ingestor.pipeline.retry import BackoffPolicy
from tests.pipeline.fault_server import FaultServer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator
    from pathlib import Path
    from unittest.mock import MagicMock

    from homeassistant.core import HomeAssistant
    from syrupy.assertion import SnapshotAssertion

TOKEN = "test-token"
"""The bearer token the `storage_server` and `enrichment_server` fixtures expect."""


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let Home Assistant load this repository's integration in every test."""


@pytest.fixture(autouse=True)
def config_dir_per_test(hass: HomeAssistant, tmp_path: Path) -> None:
    """Outbox files (under the config directory) must not leak from test to test."""
    hass.config.config_dir = str(tmp_path)


@pytest.fixture
def snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    """Home Assistant's snapshot format (registry entries, states), kept in ``snapshots/``.

    The harness's plugin defines the same override, but syrupy's own ``snapshot``
    fixture, registered later, shadows it; a conftest fixture wins over both.
    """
    return snapshot.use_extension(HomeAssistantSnapshotExtension)


@pytest.fixture
def entity_registry_enabled_by_default() -> Generator[None]:
    """Every entity enabled, also those the integration disables by default.

    Home Assistant core's fixture of the same name; the custom-component harness lacks it.
    """
    with patch(
        "homeassistant.helpers.entity.Entity.entity_registry_enabled_default",
        new_callable=PropertyMock,
        return_value=True,
    ):
        yield


@pytest.fixture
def mock_setup_entry() -> Generator[AsyncMock]:
    """Entries are "set up" (and unloaded) without starting the pipeline.

    For config-flow tests: creating, reauthenticating or reconfiguring an entry sets it
    up; the returned mock counts those setups.
    """
    with (
        patch("custom_components.ha_ingestor.async_setup_entry", return_value=True) as mock_setup,
        patch("custom_components.ha_ingestor.async_unload_entry", return_value=True),
    ):
        yield mock_setup


@pytest.fixture
async def storage_server(
    fault_server_factory: Callable[..., Awaitable[FaultServer]],
) -> FaultServer:
    """A data storage stand-in that expects `TOKEN`."""
    return await fault_server_factory(token=TOKEN, name="data-storage")


@pytest.fixture
async def enrichment_server(
    fault_server_factory: Callable[..., Awaitable[FaultServer]],
) -> FaultServer:
    """An enrichment pipeline stand-in that expects `TOKEN`."""
    return await fault_server_factory(token=TOKEN, name="enrichment-pipeline")


@pytest.fixture
def resolve_host_names(
    disable_mock_zeroconf_resolver: None, mock_async_zeroconf: MagicMock
) -> None:
    """Home Assistant's own resolver (aiodns, with mDNS for .local names) looks up host
    names, not the harness's stand-in: services can be reached as localhost, the way
    people enter them, so a resolver that does not work fails the test.

    localhost is also ::1, which the harness refuses with a warning (filter it with
    ``pytest.mark.filterwarnings``); the connection goes on to 127.0.0.1.
    """


@pytest.fixture
def fast_service_checks() -> Generator[None]:
    """The config flow's service checks with short timeouts and near-instant retries: a
    failing check takes milliseconds."""
    with (
        patch.object(service_checks, "CHECK_TIMEOUTS", Timeouts(connect=0.5, total=0.5)),
        patch.object(service_checks, "CHECK_BACKOFF", BackoffPolicy(base=0.001, cap=0.001)),
    ):
        yield
