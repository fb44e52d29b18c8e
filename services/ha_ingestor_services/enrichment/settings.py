"""The enrichment pipeline's settings: one flat, frozen record the CLI fills in.

Every field maps onto one command-line flag and environment variable; the comment above
each field is its help text. `__post_init__` refuses a bad value with a one-line
``ValueError`` the CLI prints as is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import urlsplit

from ha_ingestor_services import tls

WEATHER_PROVIDERS = ("none", "openweathermap")
DEFAULT_STORAGE_URL = "http://127.0.0.1:8004"
DEFAULT_OPENWEATHERMAP_URL = "https://api.openweathermap.org"


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrichmentSettings:
    # Base URL(s) of the data storage service; several (comma-separated) fail over in order.
    storage_urls: tuple[str, ...] = (DEFAULT_STORAGE_URL,)
    # Bearer token the storage service expects (defaults to this service's own token).
    storage_token: str
    # PEM certificate(s) trusted for https:// storage URLs on top of the system's CAs
    # (storage's self-signed certificate, or a private CA).
    storage_ca_file: str | None = None
    # Whether the storage certificate must name the URL's host; False only for `stack`,
    # which trusts exactly its own storage's certificate on 127.0.0.1.
    storage_check_hostname: bool = True
    # Seconds to wait for storage to take a batch before answering 503 (keep it under the
    # integration's own 30 s timeout, so the integration hears why).
    storage_timeout_s: float = 20.0
    # Seconds to wait for a TCP connection to storage.
    storage_connect_timeout_s: float = 3.0
    # Tries per request before answering 503 (a refused connection or a 5xx without
    # Retry-After is tried again after a short pause; the integration retries after that).
    storage_attempts: int = 2
    # Where weather comes from when Home Assistant sends none: "none" or "openweathermap".
    weather_provider: str = "none"
    # OpenWeatherMap API key (required with --weather-provider openweathermap).
    openweathermap_api_key: str | None = None
    # OpenWeatherMap API base URL (the current weather API lives under /data/2.5/weather).
    openweathermap_url: str = DEFAULT_OPENWEATHERMAP_URL
    # Seconds a provider answer is reused for the same rounded location.
    weather_cache_ttl_s: float = 900.0
    # Seconds a failed provider call is remembered, so a dead provider is not hammered.
    weather_failure_ttl_s: float = 60.0
    # Decimals latitude and longitude are rounded to before the lookup (2 ≈ 1 km): one
    # cache entry and one provider call per rounded location.
    weather_location_precision: int = 2
    # Seconds one provider call may take; events never wait longer for weather.
    weather_timeout_s: float = 2.0
    # Most distinct uncached locations one batch may look up; events at the others go
    # on without weather (weather_status "too_many_locations").
    weather_max_lookups: int = 20

    def __post_init__(self) -> None:
        urls = tuple(_check_url(url, "storage_urls") for url in self.storage_urls)
        if not urls:
            raise ValueError("storage_urls: at least one storage URL is needed")
        object.__setattr__(self, "storage_urls", urls)
        if not self.storage_token or self.storage_token != self.storage_token.strip():
            raise ValueError("storage_token: a bearer token for the storage service is needed")
        # Read now, so an unreadable file stops the command at start (exit status 2).
        tls.client_context(self.storage_ca_file)
        _check_positive(self.storage_timeout_s, "storage_timeout_s")
        _check_positive(self.storage_connect_timeout_s, "storage_connect_timeout_s")
        if not 1 <= self.storage_attempts <= 10:
            raise ValueError(f"storage_attempts: {self.storage_attempts} is not from 1 to 10")
        if self.weather_provider not in WEATHER_PROVIDERS:
            raise ValueError(
                f"weather_provider: {self.weather_provider!r} is not one of "
                + ", ".join(WEATHER_PROVIDERS)
            )
        if self.weather_provider == "openweathermap" and not self.openweathermap_api_key:
            raise ValueError(
                "openweathermap_api_key: an API key is needed for the openweathermap provider"
            )
        object.__setattr__(
            self,
            "openweathermap_url",
            _check_url(self.openweathermap_url, "openweathermap_url"),
        )
        _check_positive(self.weather_cache_ttl_s, "weather_cache_ttl_s")
        _check_positive(self.weather_failure_ttl_s, "weather_failure_ttl_s")
        _check_positive(self.weather_timeout_s, "weather_timeout_s")
        if not 1 <= self.weather_max_lookups <= 1000:
            raise ValueError(
                f"weather_max_lookups: {self.weather_max_lookups} is not from 1 to 1000"
            )
        if not 0 <= self.weather_location_precision <= 6:
            raise ValueError(
                f"weather_location_precision: {self.weather_location_precision} "
                "is not from 0 to 6 decimals"
            )

    @property
    def weather_enabled(self) -> bool:
        return self.weather_provider != "none"


def parse_url_list(text: str) -> tuple[str, ...]:
    """``"http://a:8004, http://b:8004"`` (a flag or env var) as ``storage_urls``."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _check_url(url: object, field: str) -> str:
    """An http(s) base URL without query or fragment, trailing slash removed."""
    if not isinstance(url, str):
        raise ValueError(f"{field}: {url!r} is not a URL")
    if "@" in url:
        # A password there would be shown wherever the URL is (health, stats, logs).
        raise ValueError(f"{field}: must not hold a user name or password (user:password@)")
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # reading it checks it: "http://host:99999" raises here
    except ValueError as err:
        raise ValueError(f"{field}: {url!r} is not a valid URL ({err})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{field}: {url!r} is not an http:// or https:// URL with a host")
    if port == 0:
        raise ValueError(f"{field}: {url!r} has port 0")
    if parts.query or parts.fragment:
        raise ValueError(f"{field}: {url!r} must not have a query or fragment")
    return url.strip().rstrip("/")


def _check_positive(value: float, field: str) -> None:
    # Written so that NaN (which fails every comparison) is refused too.
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{field}: {value!r} is not a positive number of seconds")
