"""The config flow's checks of the service URLs, before an entry is created or changed.

Every configured URL is asked for ``GET /api/v1/health`` without a token and
``GET /api/v1/stats`` with it, through the same resilient client the forwarder uses,
with short timeouts and a few quick retries: a person is waiting. The health answer
must name the service the field is for (its ``"service"``), so a swapped URL, a wrong
port or some other web server is caught before it is stored. The main storage URL's
health also gives the service's id (identity.py), the entry's unique id.

`plain_http_urls` finds the URLs where the token would cross the network in clear text,
for the flow's warning (a warning only: a trusted network may be the user's choice).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from homeassistant.core import HomeAssistant
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from yarl import URL

from .const import (
    CONF_API_TOKEN,
    CONF_ENRICHMENT_FAILOVER_URLS,
    CONF_ENRICHMENT_URL,
    CONF_STORAGE_FAILOVER_URLS,
    CONF_STORAGE_URL,
    CONF_VERIFY_SSL,
    LOGGER,
    SERVICE_ENRICHMENT,
    SERVICE_STORAGE,
)
from .identity import health_service_id
from .pipeline.envelope import (
    ENRICHMENT_SERVICE_NAME,
    HEALTH_PATH,
    STATS_PATH,
    STORAGE_SERVICE_NAME,
)
from .pipeline.http_client import ServiceCallError, ServiceHTTPClient, ServiceResponse, Timeouts
from .pipeline.retry import BackoffPolicy, Outcome

# A person waits on these checks: short timeouts and a few quick retries. Read at call
# time, so tests may shorten them.
CHECK_TIMEOUTS = Timeouts(connect=3.0, total=5.0)
CHECK_ATTEMPTS = 3
CHECK_BACKOFF = BackoffPolicy(base=0.25, cap=1.0)


@dataclass(frozen=True, slots=True)
class _Target:
    """One URL to check, and the form field its failure is shown on."""

    service: str
    field: str
    url: str


def _targets(data: Mapping[str, Any]) -> list[_Target]:
    targets = [_Target(SERVICE_STORAGE, CONF_STORAGE_URL, data[CONF_STORAGE_URL])]
    targets += [
        _Target(SERVICE_STORAGE, CONF_STORAGE_FAILOVER_URLS, url)
        for url in data.get(CONF_STORAGE_FAILOVER_URLS) or []
    ]
    if data.get(CONF_ENRICHMENT_URL):
        targets.append(_Target(SERVICE_ENRICHMENT, CONF_ENRICHMENT_URL, data[CONF_ENRICHMENT_URL]))
        targets += [
            _Target(SERVICE_ENRICHMENT, CONF_ENRICHMENT_FAILOVER_URLS, url)
            for url in data.get(CONF_ENRICHMENT_FAILOVER_URLS) or []
        ]
    return targets


def _is_this_machine(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1: what travels there never crosses a network."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: assume another machine
        return False


def plain_http_urls(data: Mapping[str, Any]) -> list[str]:
    """The configured URLs that would carry the token in clear text: plain ``http://``
    to another machine."""
    urls = [target.url for target in _targets(data)]
    return [
        url
        for url in urls
        if URL(url).scheme == "http" and not _is_this_machine(URL(url).host or "")
    ]


# What each companion service calls itself in its health answer ("service").
HEALTH_NAMES = {SERVICE_STORAGE: STORAGE_SERVICE_NAME, SERVICE_ENRICHMENT: ENRICHMENT_SERVICE_NAME}
# The error for a URL that answers as the other companion service (a swapped URL or a
# wrong port): its text names the service that answered and the usual ports.
ANSWERED_AS = {
    STORAGE_SERVICE_NAME: "answers_as_storage",
    ENRICHMENT_SERVICE_NAME: "answers_as_enrichment",
}


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What the checks found: the errors by form field (empty: all good), and the id the
    main storage URL's health answered (None: an older service without one)."""

    errors: dict[str, str]
    storage_id: str | None = None


def _health_body(health: ServiceResponse) -> dict[str, Any]:
    """A health answer's JSON object ({}: not JSON, or not an object)."""
    try:
        body = health.json()
    except ServiceCallError:
        return {}
    return body if isinstance(body, dict) else {}


async def _async_check_target(
    session: aiohttp.ClientSession, target: _Target, token: str
) -> tuple[str | None, str | None]:
    """(None, the service id) when the URL is healthy and takes the token, else
    (the error key, None)."""
    client = ServiceHTTPClient(
        target.service,
        [target.url],
        session,
        token=token,
        timeouts=CHECK_TIMEOUTS,
        backoff=CHECK_BACKOFF,
        interactive_attempts=CHECK_ATTEMPTS,
        logger=LOGGER,
    )
    try:
        health = await client.get(HEALTH_PATH, auth=False, retry=True)
        if health.outcome is not Outcome.SUCCESS:
            LOGGER.debug(
                "%s at %s is not healthy: HTTP %s", target.service, target.url, health.status
            )
            return "cannot_connect", None
        body = _health_body(health)
        name = body.get("service")
        if name != HEALTH_NAMES[target.service]:
            LOGGER.debug("%s at %s answers as %r", target.service, target.url, name)
            # Neither of ours: some other web server answers the health path.
            return ANSWERED_AS.get(str(name), "not_an_ingestor_service"), None
        stats = await client.get(STATS_PATH, retry=True)
    except ServiceCallError as err:
        LOGGER.debug("Cannot reach %s at %s: %s", target.service, target.url, err)
        return "cannot_connect", None
    if stats.outcome is Outcome.AUTH:
        LOGGER.debug(
            "%s at %s refused the token: HTTP %s", target.service, target.url, stats.status
        )
        return "invalid_auth", None
    if stats.outcome is not Outcome.SUCCESS:
        LOGGER.debug("%s at %s answered HTTP %s", target.service, target.url, stats.status)
        return "cannot_connect", None
    return None, health_service_id(body)


async def async_check_services(hass: HomeAssistant, data: Mapping[str, Any]) -> CheckResult:
    """Check every configured URL at once: the errors by form field, the storage's id.

    ``invalid_auth`` is reported on the token field, every other error on the field of
    the URL that failed. Unexpected exceptions propagate (as an ExceptionGroup).
    """
    session = async_get_clientsession(hass, verify_ssl=bool(data.get(CONF_VERIFY_SSL, True)))
    token = str(data[CONF_API_TOKEN])
    targets = _targets(data)
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_async_check_target(session, t, token)) for t in targets]
    errors: dict[str, str] = {}
    for target, task in zip(targets, tasks, strict=True):
        if (error := task.result()[0]) is not None:
            errors.setdefault(CONF_API_TOKEN if error == "invalid_auth" else target.field, error)
    # The first target is the main storage URL.
    return CheckResult(errors, tasks[0].result()[1])
