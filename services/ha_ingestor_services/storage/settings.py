"""The storage service's settings: one flat, frozen dataclass the CLI fills in.

Each field's comment is its ``--help`` text. `__post_init__` checks the values and
raises `ValueError` with a one-line message naming the setting, so a bad flag or
environment variable stops the service before it binds its port.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

Backend = Literal["sqlite", "influxdb"]
InfluxApi = Literal["v1", "v2"]
Synchronous = Literal["full", "normal"]

BACKENDS: tuple[Backend, ...] = ("sqlite", "influxdb")
INFLUX_APIS: tuple[InfluxApi, ...] = ("v1", "v2")
SYNCHRONOUS_MODES: tuple[Synchronous, ...] = ("full", "normal")

MAX_FLUSH_EVENTS = 100_000
MAX_FLUSH_INTERVAL_MS = 1_000.0


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """Where and how the storage service keeps events."""

    # Where events are kept: "sqlite" (a local file, the default) or "influxdb".
    backend: Backend = "sqlite"
    # SQLite: the database file (created when missing; its folder must exist).
    sqlite_path: str = "ha_ingestor_events.db"
    # SQLite: "full" syncs every commit to disk (survives a power cut, the default);
    # "normal" syncs at WAL checkpoints only (survives a crash of the service, not of the OS).
    sqlite_synchronous: Synchronous = "full"
    # Days to keep events; older ones are deleted (SQLite) or expire through the retention
    # policy (InfluxDB 1.x); events older than this are rejected on arrival. 0 keeps forever.
    retention_days: int = 0
    # InfluxDB: base URL of the server, e.g. http://127.0.0.1:8086.
    influx_url: str = "http://127.0.0.1:8086"
    # InfluxDB: "v1" for InfluxDB 1.x (/write, InfluxQL), "v2" for 2.x, 3.x and Cloud (Flux).
    influx_api: InfluxApi = "v1"
    # InfluxDB 1.x: database, created at start when missing.
    influx_database: str = "ha_ingestor"
    # InfluxDB 1.x: retention policy, created (or altered) at start as the database's
    # default, with a duration of retention_days (INF when 0).
    influx_retention_policy: str = "ha_ingestor"
    # InfluxDB 1.x: user name, when the server has authentication enabled.
    influx_username: str | None = None
    # InfluxDB 1.x: password of influx_username.
    influx_password: str | None = None
    # InfluxDB 2.x+: organization (name or ID).
    influx_org: str | None = None
    # InfluxDB 2.x+: bucket; it must exist (its retention is set in InfluxDB).
    influx_bucket: str | None = None
    # InfluxDB 2.x+: API token with write and read access to the bucket.
    influx_token: str | None = None
    # Most events written in one flush (group commit); concurrent requests share a flush.
    flush_max_events: int = 5000
    # Milliseconds a flush waits for more requests to join it; 0 writes at once.
    flush_interval_ms: float = 2.0
    # Seconds one backend call (write, query, probe) may take before storage answers 503.
    timeout_s: float = 10.0
    # Retry-After seconds sent with a 503 when the backend cannot take events.
    retry_after_s: float = 5.0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.sqlite_synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"sqlite_synchronous: {self.sqlite_synchronous!r} is not one of "
                f"{', '.join(SYNCHRONOUS_MODES)}"
            )
        _check_int("retention_days", self.retention_days, 0, 100_000)
        _check_int("flush_max_events", self.flush_max_events, 1, MAX_FLUSH_EVENTS)
        _check_number("flush_interval_ms", self.flush_interval_ms, 0, MAX_FLUSH_INTERVAL_MS)
        _check_number("timeout_s", self.timeout_s, 0.1, 3600)
        _check_number("retry_after_s", self.retry_after_s, 1, 3600)
        if self.backend == "sqlite":
            if not self.sqlite_path.strip():
                raise ValueError("sqlite_path: is empty; give the SQLite file to use")
            return
        self._check_influx()

    def _check_influx(self) -> None:
        if self.influx_api not in INFLUX_APIS:
            raise ValueError(
                f"influx_api: {self.influx_api!r} is not one of {', '.join(INFLUX_APIS)}"
            )
        if "@" in self.influx_url:
            # Credentials in the URL would be shown wherever the URL is (health, stats,
            # errors); the URL is not even repeated here.
            raise ValueError(
                "influx_url: must not hold a user name or password; give them with "
                "--influx-username and --influx-password (or HA_INGESTOR_INFLUX_USERNAME and "
                "HA_INGESTOR_INFLUX_PASSWORD), or --influx-token for API v2"
            )
        parts = urlsplit(self.influx_url)
        try:
            port = parts.port  # raises on a port that is not a number
        except ValueError:
            port = -1
        if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
            raise ValueError(
                f"influx_url: {self.influx_url!r} is not an http(s) URL like http://127.0.0.1:8086"
            )
        if parts.query or parts.fragment:
            raise ValueError(f"influx_url: {self.influx_url!r} must not have a query or fragment")
        if self.influx_api == "v1":
            if not self.influx_database.strip():
                raise ValueError("influx_database: is empty")
            if not self.influx_retention_policy.strip():
                raise ValueError("influx_retention_policy: is empty")
            if (self.influx_username is None) != (self.influx_password is None):
                raise ValueError("influx_username and influx_password: give both or neither")
            return
        for name, value in (
            ("influx_org", self.influx_org),
            ("influx_bucket", self.influx_bucket),
            ("influx_token", self.influx_token),
        ):
            if value is None or not value.strip():
                raise ValueError(f"{name}: is required for InfluxDB API v2")

    @property
    def retention_ns(self) -> int | None:
        """The retention period in nanoseconds, None when events are kept forever."""
        return self.retention_days * 86_400 * 10**9 if self.retention_days else None


def _check_int(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name}: {value!r} is not a whole number from {low} to {high}")


def _check_number(name: str, value: float, low: float, high: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise ValueError(f"{name}: {value!r} is not a number from {low} to {high}")
