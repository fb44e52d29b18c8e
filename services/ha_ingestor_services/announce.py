"""The service announces itself over mDNS/zeroconf, so Home Assistant finds it.

``_ha-ingestor._tcp.local.``, one instance per service, named by its role and the first
8 characters of its id, with TXT records ``role``, ``api``, ``token``, ``id``, ``path``
and ``tls`` (docs/ARCHITECTURE.md, "Discovery"). The addresses announced are the ones
the service listens on: the machine's own when it listens on all of them, 127.0.0.1
when it listens there.

`attach` ties the announcement to the aiohttp app's life: it is registered in the
background once the service has started (zeroconf's probing takes a few hundred ms, and
the service must not wait for it or fail by it) and withdrawn at cleanup. Any failure
(no multicast, a name already taken) is one warning in the log: the service keeps
serving, and a URL typed by hand still reaches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass

import ifaddr
from aiohttp import web
from zeroconf import InterfaceChoice, IPVersion, NonUniqueNameException
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from .contract import EventService
from .identity import API_VERSION

_LOGGER = logging.getLogger(__name__)

SERVICE_TYPE = "_ha-ingestor._tcp.local."
API_PATH = "/api/v1"
WITHDRAW_TIMEOUT_S = 5.0  # stopping never waits longer on the network than this
# The IP versions a wildcard host listens on: asyncio binds "::" IPv6 only (V6ONLY) and
# "" on both.
WILDCARDS = {"0.0.0.0": IPVersion.V4Only, "::": IPVersion.V6Only, "": IPVersion.All}

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Interfaces = Sequence[str] | InterfaceChoice  # what AsyncZeroconf takes, as we use it


def instance_name(role: str, service_id: str) -> str:
    return f"HA Ingestor {role} {service_id[:8]}.{SERVICE_TYPE}"


def txt_records(role: str, service_id: str, *, token: bool, tls: bool) -> dict[str, str]:
    """What Home Assistant reads before it calls the service (its config flow)."""
    return {
        "role": role,
        "api": str(API_VERSION),
        "token": "1" if token else "0",
        "id": service_id,
        "path": API_PATH,
        "tls": "1" if tls else "0",
    }


def _usable(address: Address) -> bool:
    # Link-local IPv6 needs a scope another machine cannot use; 169.254 is no network.
    return not (address.is_loopback or address.is_link_local or address.is_unspecified)


def machine_addresses(
    version: IPVersion, adapters: Iterable[ifaddr.Adapter] | None = None
) -> list[str]:
    """This machine's addresses of ``version`` other machines can reach; loopback only
    when there is nothing else."""
    wanted = {IPVersion.V4Only: {4}, IPVersion.V6Only: {6}, IPVersion.All: {4, 6}}[version]
    found: list[Address] = []
    for adapter in ifaddr.get_adapters() if adapters is None else adapters:
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            with contextlib.suppress(ValueError):
                address = ipaddress.ip_address(text.split("%")[0])
                if address.version in wanted:
                    found.append(address)
    usable = [address for address in found if _usable(address)]
    chosen = usable or [address for address in found if address.is_loopback]
    # IPv4 first: what Home Assistant's zeroconf discovery takes as the host.
    return [str(a) for a in sorted(set(chosen), key=lambda a: (a.version, a.packed))]


def announced_addresses(host: str, adapters: Iterable[ifaddr.Adapter] | None = None) -> list[str]:
    """The addresses the service listening on ``host`` is reached at."""
    if host in WILDCARDS:
        found = machine_addresses(WILDCARDS[host], adapters)
        if not found:
            raise OSError(f"this machine has no address of the kind --host {host!r} listens on")
        return found
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:  # a name: the addresses it stands for here
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


def zeroconf_interfaces(host: str, addresses: list[str]) -> tuple[Interfaces, IPVersion]:
    """Where to send the announcement: all interfaces for a wildcard, else the ones
    holding the service's own addresses (127.0.0.1: loopback only)."""
    if host in WILDCARDS:
        return InterfaceChoice.All, WILDCARDS[host]
    versions = {ipaddress.ip_address(address).version for address in addresses}
    version = (
        IPVersion.All
        if versions == {4, 6}
        else IPVersion.V6Only
        if 6 in versions
        else IPVersion.V4Only
    )
    return addresses, version


def service_info(
    role: str, service_id: str, port: int, addresses: list[str], *, token: bool, tls: bool
) -> AsyncServiceInfo:
    """The record set the service announces (a pure function of what it is)."""
    return AsyncServiceInfo(
        SERVICE_TYPE,
        instance_name(role, service_id),
        port=port,
        properties=txt_records(role, service_id, token=token, tls=tls),
        server=f"ha-ingestor-{role}-{service_id[:8]}.local.",
        parsed_addresses=addresses,
    )


@dataclass(slots=True)
class Announcement:
    """One service's announcement: `start` registers in the background, `stop` withdraws."""

    service: EventService
    host: str
    port: int
    token: bool
    tls: bool
    info: AsyncServiceInfo | None = None
    _zeroconf: AsyncZeroconf | None = None
    _task: asyncio.Task[None] | None = None
    _registered: bool = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._register(), name=f"announce-{self.service.role}")

    async def _register(self) -> None:
        role = self.service.role
        try:
            addresses = await asyncio.to_thread(announced_addresses, self.host)
            interfaces, version = zeroconf_interfaces(self.host, addresses)
            self.info = service_info(
                role, self.service.service_id, self.port, addresses, token=self.token, tls=self.tls
            )
            self._zeroconf = AsyncZeroconf(interfaces=interfaces, ip_version=version)
            # The first await probes for the name, the second sends the announcements.
            await (await self._zeroconf.async_register_service(self.info))
        except Exception as err:  # no multicast, name taken, no address: never fatal
            why = f"{type(err).__name__}: {err}"
            if isinstance(err, NonUniqueNameException):  # it says nothing itself
                why = f"{type(err).__name__}: another service announces the same id (a copied "
                why += "SQLite file or state dir?)"
            _LOGGER.warning(
                "%s: cannot announce itself over mDNS/zeroconf (%s); Home Assistant will "
                "not discover it, its URL still works (--no-announce turns this off)",
                role,
                why,
            )
            await self._close()
            return
        self._registered = True
        _LOGGER.info(
            "%s announced as %r on %s port %d",
            role,
            self.info.name,
            ", ".join(addresses),
            self.port,
        )

    async def stop(self) -> None:
        """Withdraw the announcement (zeroconf's goodbye packets) and close."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._zeroconf is None:
            return
        try:
            async with asyncio.timeout(WITHDRAW_TIMEOUT_S):
                if self._registered and self.info is not None:
                    # The first await queues the goodbyes, the second sends them.
                    await (await self._zeroconf.async_unregister_service(self.info))
        except Exception as err:
            _LOGGER.warning("%s: withdrawing the announcement failed: %s", self.service.role, err)
        await self._close()

    async def _close(self) -> None:
        zeroconf, self._zeroconf, self._registered = self._zeroconf, None, False
        if zeroconf is not None:
            try:
                async with asyncio.timeout(WITHDRAW_TIMEOUT_S):
                    await zeroconf.async_close()
            except Exception as err:
                _LOGGER.debug("closing zeroconf: %s", err)


ANNOUNCEMENT = web.AppKey("ha_ingestor_announcement", Announcement)


def attach(
    app: web.Application, service: EventService, host: str, port: int, *, token: bool, tls: bool
) -> Announcement:
    """Announce ``service`` for the app's life: after its start, withdrawn before its stop."""
    announcement = Announcement(service, host, port, token, tls)
    app[ANNOUNCEMENT] = announcement

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        announcement.start()
        yield
        await announcement.stop()

    app.cleanup_ctx.append(lifecycle)
    return announcement
