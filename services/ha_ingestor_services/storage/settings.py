"""The storage service's settings: one flat, frozen dataclass the CLI fills in.

Each field's metadata holds its ``--help`` text (options.py). `__post_init__` checks
the values and raises `ValueError` with a one-line message naming the setting, so a bad
flag or environment variable stops the service before it binds its port.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from ha_ingestor_services.options import option

Backend = Literal["sqlite", "influxdb"]
InfluxApi = Literal["v1", "v2"]
Synchronous = Literal["full", "normal"]
InfluxLayout = Literal["ha_ingestor", "home_assistant"]

BACKENDS: tuple[Backend, ...] = ("sqlite", "influxdb")
INFLUX_APIS: tuple[InfluxApi, ...] = ("v1", "v2")
SYNCHRONOUS_MODES: tuple[Synchronous, ...] = ("full", "normal")
INFLUX_LAYOUTS: tuple[InfluxLayout, ...] = ("ha_ingestor", "home_assistant")

MAX_FLUSH_EVENTS = 100_000
MAX_FLUSH_INTERVAL_MS = 1_000.0


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """Where and how the storage service keeps events."""

    backend: Backend = field(
        default="sqlite", metadata=option("where events are kept (default {default})")
    )
    # Its folder must exist.
    sqlite_path: str = field(
        default="ha_ingestor_events.db",
        metadata=option("SQLite database file, created when missing (default {default})"),
    )
    # "full" survives a power cut; "normal" syncs at WAL checkpoints only.
    sqlite_synchronous: Synchronous = field(
        default="full",
        metadata=option(
            "full: each commit synced to disk (default); normal: safe from a service crash only"
        ),
    )
    # Older events are deleted (SQLite) or expire through the retention policy (InfluxDB
    # 1.x), and are rejected on arrival.
    retention_days: int = field(
        default=0,
        metadata=option("days to keep events; 0 keeps them forever (default {default})"),
    )
    influx_url: str = field(
        default="http://127.0.0.1:8086",
        metadata=option("InfluxDB base URL (default {default})"),
    )
    # v1: /write and InfluxQL; v2: Flux.
    influx_api: InfluxApi = field(
        default="v1",
        metadata=option("v1 for InfluxDB 1.x; v2 for 2.x, 3.x and Cloud (default {default})"),
    )
    # home_assistant: what Home Assistant's influxdb integration writes with its
    # defaults, state changes only (docs/ARCHITECTURE.md, "Storage schema").
    influx_layout: InfluxLayout = field(
        default="ha_ingestor",
        metadata=option(
            "InfluxDB points: ha_ingestor (measurement = event type, default) or "
            "home_assistant (as Home Assistant's influxdb integration writes them)"
        ),
    )
    influx_database: str = field(
        default="ha_ingestor",
        metadata=option("InfluxDB 1.x database, created at start (default {default})"),
    )
    # Created (or altered) at start with a duration of retention_days (INF when 0).
    influx_retention_policy: str = field(
        default="ha_ingestor",
        metadata=option("InfluxDB 1.x retention policy, made the default (default {default})"),
    )
    influx_username: str | None = field(
        default=None, metadata=option("InfluxDB 1.x user, when authentication is on")
    )
    influx_password: str | None = field(
        default=None, metadata=option("InfluxDB 1.x password (prefer the env var)")
    )
    # Name or ID.
    influx_org: str | None = field(default=None, metadata=option("InfluxDB 2.x+ organization"))
    # Its retention is set in InfluxDB.
    influx_bucket: str | None = field(
        default=None, metadata=option("InfluxDB 2.x+ bucket (must exist)")
    )
    # With write and read access to the bucket.
    influx_token: str | None = field(
        default=None, metadata=option("InfluxDB 2.x+ API token (prefer the env var)")
    )
    # Concurrent requests share a flush (group commit).
    flush_max_events: int = field(
        default=5000, metadata=option("most events in one group commit (default {default})")
    )
    # 0 writes at once.
    flush_interval_ms: float = field(
        default=2.0,
        metadata=option("milliseconds a write waits for others to join it (default {default})"),
    )
    # Writes, queries and probes.
    timeout_s: float = field(
        default=10.0,
        metadata=option(
            "seconds a backend call may take before the answer is 503 (default {default})",
            flag="--backend-timeout",
        ),
    )
    # Sent when the backend cannot take events.
    retry_after_s: float = field(
        default=5.0, metadata=option("Retry-After seconds sent with a 503 (default {default})")
    )

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
        if self.influx_layout not in INFLUX_LAYOUTS:
            raise ValueError(
                f"influx_layout: {self.influx_layout!r} is not one of {', '.join(INFLUX_LAYOUTS)}"
            )
        if self.backend == "sqlite":
            if self.influx_layout != "ha_ingestor":
                raise ValueError(
                    "influx_layout: home_assistant is a layout of InfluxDB points; "
                    "give --backend influxdb with it"
                )
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
