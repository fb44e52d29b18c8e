"""Settings: defaults, and a clear one-line error for each bad value."""

from __future__ import annotations

import re
from typing import Any

import pytest

from ha_ingestor_services.enrichment.settings import EnrichmentSettings
from ha_ingestor_services.options import comma_list


def test_defaults() -> None:
    settings = EnrichmentSettings(storage_token="t")
    assert settings.storage_urls == ("http://127.0.0.1:8004",)
    assert settings.weather_provider == "none"
    assert not settings.weather_enabled
    assert settings.weather_cache_ttl_s == 900
    assert settings.openweathermap_url == "https://api.openweathermap.org"


def test_urls_are_tidied() -> None:
    settings = EnrichmentSettings(
        storage_token="t",
        storage_urls=comma_list(" http://a:8004/ , https://b.example/storage/,"),
        weather_provider="openweathermap",
        openweathermap_api_key="k",
        openweathermap_url="http://127.0.0.1:9999/",
    )
    assert settings.storage_urls == ("http://a:8004", "https://b.example/storage")
    assert settings.openweathermap_url == "http://127.0.0.1:9999"
    assert settings.weather_enabled


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"storage_urls": ()}, "storage_urls: at least one storage URL is needed"),
        ({"storage_urls": ("storage:8004",)}, "is not an http:// or https:// URL with a host"),
        ({"storage_urls": ("ftp://host",)}, "is not an http:// or https:// URL with a host"),
        ({"storage_urls": ("http://host:99999",)}, "is not a valid URL"),
        ({"storage_urls": ("http://host:0",)}, "has port 0"),
        ({"storage_urls": ("http://host/?a=1",)}, "must not have a query or fragment"),
        ({"storage_urls": (8004,)}, "is not a URL"),
        ({"storage_token": ""}, "storage_token: a bearer token for the storage service"),
        ({"storage_token": " t "}, "storage_token"),
        ({"storage_attempts": 0}, "storage_attempts: 0 is not from 1 to 10"),
        ({"storage_timeout_s": 0}, "storage_timeout_s: 0 is not a positive number"),
        ({"weather_cache_ttl_s": float("nan")}, "weather_cache_ttl_s: nan is not a positive"),
        ({"weather_timeout_s": "2"}, "weather_timeout_s: '2' is not a positive"),
        ({"weather_provider": "darksky"}, "weather_provider: 'darksky' is not one of none, "),
        ({"weather_provider": "openweathermap"}, "openweathermap_api_key: an API key is needed"),
        ({"openweathermap_url": "api.openweathermap.org"}, "openweathermap_url: "),
        ({"weather_location_precision": 7}, "weather_location_precision: 7 is not from 0 to 6"),
    ],
)
def test_bad_values_are_refused_in_one_line(overrides: dict[str, Any], message: str) -> None:
    settings: dict[str, Any] = {"storage_token": "t", **overrides}
    with pytest.raises(ValueError, match=re.escape(message)) as raised:
        EnrichmentSettings(**settings)
    assert "\n" not in str(raised.value)


def test_settings_are_frozen() -> None:
    settings = EnrichmentSettings(storage_token="t")
    with pytest.raises(AttributeError):
        settings.storage_token = "other"  # type: ignore[misc]
