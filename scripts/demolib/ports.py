"""The ports of a demo run: the usual ones where free, others where not."""

from __future__ import annotations

import socket
from dataclasses import dataclass

# Every server of the demo listens on loopback only.
HOST = "127.0.0.1"

DEFAULT_HA_PORT = 8123
DEFAULT_ENRICHMENT_PORT = 8002
DEFAULT_STORAGE_PORT = 8004


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on the port now (as aiohttp does: reuse_address)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    """A port nothing listens on (the system's choice)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass(frozen=True, slots=True)
class Ports:
    """The three ports of a demo run."""

    ha: int
    enrichment: int
    storage: int


def pick_ports(wanted: Ports) -> tuple[Ports, list[str]]:
    """The wanted ports where free (0: any free port), else free ones; and notes on that."""
    notes: list[str] = []
    chosen: dict[str, int] = {}
    for name, port in (
        ("Home Assistant", wanted.ha),
        ("enrichment", wanted.enrichment),
        ("storage", wanted.storage),
    ):
        if port and port not in chosen.values() and port_is_free(port):
            chosen[name] = port
            continue
        new = free_port()
        while new in chosen.values():
            new = free_port()
        if port:
            notes.append(f"port {port} is taken: {name} uses port {new} instead")
        chosen[name] = new
    return Ports(chosen["Home Assistant"], chosen["enrichment"], chosen["storage"]), notes
