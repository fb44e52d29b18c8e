"""What a zeroconf announcement of a companion service says, and which entry it is.

The services announce themselves as ``_ha-ingestor._tcp.local.`` with TXT properties
``role`` (storage or enrichment), ``api`` ("1"), ``token`` ("1"/"0"), ``id`` (the
service id, see identity.py), ``path`` ("/api/v1") and optionally ``tls`` ("1"/"0")
(docs/ARCHITECTURE.md, "Discovery"). The config flow's zeroconf steps use these helpers
to turn an announcement into a URL and to find the entry it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Any

from yarl import URL

from .const import (
    CONF_ENRICHMENT_FAILOVER_URLS,
    CONF_ENRICHMENT_URL,
    CONF_STORAGE_FAILOVER_URLS,
    CONF_STORAGE_URL,
    DOMAIN,
    SERVICE_ENRICHMENT,
    SERVICE_STORAGE,
)
from .identity import parse_service_id

if TYPE_CHECKING:
    from homeassistant.config_entries import ConfigEntry
    from homeassistant.core import HomeAssistant
    from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo

ZEROCONF_TYPE = "_ha-ingestor._tcp.local."
API_VERSION = "1"
API_PATH = "/api/v1"

# Enrichment services announced on machines without an entry yet, by host: the storage
# service's confirm form of the same machine offers them (hass.data, not persisted).
_ENRICHMENT_SEEN = f"{DOMAIN}_enrichment_announcements"


@dataclass(frozen=True, slots=True)
class Announcement:
    """A service as announced: its role, id, base URL and the machine it runs on."""

    role: str
    service_id: str
    url: str
    token_required: bool
    # Every address and the host name it was announced with, lower case: "this machine".
    hosts: frozenset[str]

    @property
    def port(self) -> int | None:
        return URL(self.url).port


def _address(info: ZeroconfServiceInfo) -> IPv4Address | IPv6Address | None:
    """The address to store: not link-local (it needs an interface to mean anything) nor
    unspecified; IPv4 before IPv6 (a global IPv6 address is often a temporary one) and
    loopback last (it is this machine's only when the service runs beside Home Assistant)."""
    usable = [
        address
        for address in dict.fromkeys([info.ip_address, *info.ip_addresses])
        if not (address.is_link_local or address.is_unspecified or address.is_multicast)
    ]
    usable.sort(key=lambda address: (address.is_loopback, address.version != 4))
    return usable[0] if usable else None


def parse_announcement(info: ZeroconfServiceInfo) -> Announcement | str:
    """The announcement, or the abort reason when it cannot be used."""
    properties: dict[str, Any] = info.properties
    role = properties.get("role")
    service_id = parse_service_id(properties.get("id"))
    if role not in (SERVICE_STORAGE, SERVICE_ENRICHMENT) or service_id is None:
        return "not_an_ingestor_service"
    path = str(properties.get("path") or API_PATH).rstrip("/")
    if properties.get("api") != API_VERSION or not path.endswith(API_PATH):
        return "unsupported_api"
    address = _address(info)
    if address is None or not info.port:
        return "no_usable_address"
    hostname = info.hostname.rstrip(".").lower()
    tls = properties.get("tls") == "1"
    # A certificate names the host, not its address: with TLS the URL keeps the mDNS
    # host name (Home Assistant's resolver resolves .local names).
    host = hostname if tls and hostname else str(address)
    url = URL.build(scheme="https" if tls else "http", host=host, port=info.port)
    return Announcement(
        role=str(role),
        service_id=service_id,
        url=str(url.origin()) + path.removesuffix(API_PATH),
        token_required=properties.get("token") != "0",
        hosts=frozenset({*info.addresses, str(info.ip_address), hostname} - {""}),
    )


def _host_port(url: str) -> tuple[str, int | None]:
    parsed = URL(url)
    return (parsed.host or "").lower(), parsed.port


def on_machine(url: str | None, announcement: Announcement) -> bool:
    """True when the URL's host is the announcing machine (one of its addresses or name)."""
    return url is not None and _host_port(url)[0] in announcement.hosts


def is_announced_service(url: str | None, announcement: Announcement) -> bool:
    """True when the URL reaches the announced service: its machine and its port (one
    address and port is one service at a time)."""
    return on_machine(url, announcement) and _host_port(str(url))[1] == announcement.port


def _entries(hass: HomeAssistant) -> list[ConfigEntry]:
    return [
        entry
        for entry in hass.config_entries.async_entries(DOMAIN, include_ignore=False)
        if entry.data.get(CONF_STORAGE_URL)
    ]


def entry_using(hass: HomeAssistant, announcement: Announcement) -> ConfigEntry | None:
    """An entry that already calls the announced service at one of its URLs."""
    keys = (
        (CONF_STORAGE_URL, CONF_STORAGE_FAILOVER_URLS)
        if announcement.role == SERVICE_STORAGE
        else (CONF_ENRICHMENT_URL, CONF_ENRICHMENT_FAILOVER_URLS)
    )
    for entry in _entries(hass):
        urls = [entry.data.get(keys[0]), *(entry.data.get(keys[1]) or [])]
        if any(is_announced_service(url, announcement) for url in urls):
            return entry
    return None


def entries_on_machine(hass: HomeAssistant, announcement: Announcement) -> list[ConfigEntry]:
    """The entries whose storage service runs on the announcing machine."""
    return [e for e in _entries(hass) if on_machine(e.data[CONF_STORAGE_URL], announcement)]


def moved_url(url: str, new_host_url: str) -> str:
    """``url`` with the scheme, host and port of ``new_host_url`` (its path kept)."""
    parsed, new = URL(url), URL(new_host_url)
    return str(new.origin()) + parsed.raw_path.rstrip("/")


def storage_updates(entry: ConfigEntry, announcement: Announcement) -> dict[str, Any]:
    """The entry data that follows a storage service to its announced address.

    Nothing changes when the entry's URL still reaches the service (a machine announces
    all its addresses: the one chosen stays) or is a name the user chose (a DNS name,
    perhaps a reverse proxy with TLS in front: an address must not replace it). An
    enrichment URL on the service's old host moves along: the same machine moved.
    """
    current = str(entry.data[CONF_STORAGE_URL])
    old_host = _host_port(current)[0]
    if is_announced_service(current, announcement) or not _is_address(old_host):
        return {}
    new = moved_url(current, announcement.url)
    updates: dict[str, Any] = {
        CONF_STORAGE_URL: new,
        CONF_STORAGE_FAILOVER_URLS: [
            url for url in entry.data.get(CONF_STORAGE_FAILOVER_URLS) or [] if url != new
        ],
    }
    enrichment = entry.data.get(CONF_ENRICHMENT_URL)
    if enrichment and _host_port(enrichment)[0] == old_host:
        moved = URL(enrichment).with_host(URL(new).host or old_host)
        updates[CONF_ENRICHMENT_URL] = str(moved.origin()) + moved.raw_path.rstrip("/")
    return updates


def _is_address(host: str) -> bool:
    """An IP address or an mDNS .local name: what discovery may replace."""
    if host.endswith(".local"):
        return True
    try:
        IPv6Address(host) if ":" in host else IPv4Address(host)
    except ValueError:
        return False
    return True


def remember_enrichment(hass: HomeAssistant, announcement: Announcement) -> None:
    """Keep an enrichment service announced on a machine without an entry yet."""
    seen: dict[str, Announcement] = hass.data.setdefault(_ENRICHMENT_SEEN, {})
    for host in announcement.hosts:
        seen[host] = announcement


def enrichment_beside(hass: HomeAssistant, storage: Announcement) -> Announcement | None:
    """An enrichment service announced on the storage service's machine, if any."""
    seen: dict[str, Announcement] = hass.data.get(_ENRICHMENT_SEEN, {})
    for host in sorted(storage.hosts):
        if host in seen:
            return seen[host]
    return None
