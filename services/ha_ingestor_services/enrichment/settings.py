"""The enrichment service's settings: one flat, frozen record the CLI fills in.

Every field with a help text in its metadata is one command-line flag and environment
variable (options.py). `__post_init__` refuses a bad value with a one-line
``ValueError`` the CLI prints as is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from ha_ingestor_services import tls
from ha_ingestor_services.options import option

ProviderName = Literal["none", "openweathermap"]

WEATHER_PROVIDERS: tuple[ProviderName, ...] = ("none", "openweathermap")
DEFAULT_STORAGE_URL = "http://127.0.0.1:8004"
DEFAULT_OPENWEATHERMAP_URL = "https://api.openweathermap.org"


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrichmentSettings:
    # Several URLs fail over in order.
    storage_urls: tuple[str, ...] = field(
        default=(DEFAULT_STORAGE_URL,),
        metadata=option(
            "storage base URL; several, comma-separated, fail over in order (default {default})",
            flag="--storage-url",
            metavar="URL[,URL...]",
        ),
    )
    # The CLI gives this service's own token when none is set.
    storage_token: str = field(metadata=option("bearer token storage expects (default: --token)"))
    # Trusted on top of the system's CAs (storage's self-signed certificate, or a private CA).
    storage_ca_file: str | None = field(
        default=None,
        metadata=option(
            "PEM certificate(s) to trust for https:// storage URLs, e.g. storage's self-signed one",
            metavar="FILE",
        ),
    )
    # Whether the storage certificate must name the URL's host; False only for `stack`,
    # which trusts exactly its own storage's certificate on 127.0.0.1. No flag.
    storage_check_hostname: bool = True
    # Keep it under the integration's own 30 s timeout, so the integration hears why.
    storage_timeout_s: float = field(
        default=20.0,
        metadata=option(
            "seconds storage gets to take a batch before the answer is 503 (default {default})"
        ),
    )
    storage_connect_timeout_s: float = field(
        default=3.0, metadata=option("seconds to connect to storage (default {default})")
    )
    # A refused connection or a 5xx without Retry-After is tried again after a short
    # pause; the integration retries after that.
    storage_attempts: int = field(
        default=2, metadata=option("tries per request before answering 503 (default {default})")
    )
    weather_provider: ProviderName = field(
        default="none",
        metadata=option("weather when Home Assistant sends none (default {default})"),
    )
    openweathermap_api_key: str | None = field(
        default=None,
        metadata=option("OpenWeatherMap API key (for --weather-provider openweathermap)"),
    )
    # The current weather API lives under /data/2.5/weather.
    openweathermap_url: str = field(
        default=DEFAULT_OPENWEATHERMAP_URL,
        metadata=option("OpenWeatherMap API base URL (default {default})"),
    )
    weather_cache_ttl_s: float = field(
        default=900.0,
        metadata=option("seconds a weather answer is reused per location (default {default})"),
    )
    # So a dead provider is not hammered.
    weather_failure_ttl_s: float = field(
        default=60.0,
        metadata=option("seconds a failed weather call is remembered (default {default})"),
    )
    # One cache entry and one provider call per rounded location.
    weather_location_precision: int = field(
        default=2,
        metadata=option(
            "decimals locations are rounded to for weather (default {default}, about 1 km)"
        ),
    )
    # Events never wait longer for weather.
    weather_timeout_s: float = field(
        default=2.0, metadata=option("seconds one weather call may take (default {default})")
    )
    # Events at the others go on with weather_status "too_many_locations".
    weather_max_lookups: int = field(
        default=20,
        metadata=option(
            "most uncached locations one batch looks up; the rest go without (default {default})"
        ),
    )

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


def _check_url(url: object, setting: str) -> str:
    """An http(s) base URL without query or fragment, trailing slash removed."""
    if not isinstance(url, str):
        raise ValueError(f"{setting}: {url!r} is not a URL")
    if "@" in url:
        # A password there would be shown wherever the URL is (health, stats, logs).
        raise ValueError(f"{setting}: must not hold a user name or password (user:password@)")
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # reading it checks it: "http://host:99999" raises here
    except ValueError as err:
        raise ValueError(f"{setting}: {url!r} is not a valid URL ({err})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{setting}: {url!r} is not an http:// or https:// URL with a host")
    if port == 0:
        raise ValueError(f"{setting}: {url!r} has port 0")
    if parts.query or parts.fragment:
        raise ValueError(f"{setting}: {url!r} must not have a query or fragment")
    return url.strip().rstrip("/")


def _check_positive(value: float, setting: str) -> None:
    # Written so that NaN (which fails every comparison) is refused too.
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{setting}: {value!r} is not a positive number of seconds")
