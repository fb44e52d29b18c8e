"""The OpenWeatherMap provider: current weather for one location, in the enriched shape.

One call is one ``GET /data/2.5/weather?lat=&lon=&appid=&units=metric`` through the
shared resilient client (short timeout, circuit breaker, no retry: the weather step
caches failures instead). Conditions are mapped onto Home Assistant's condition names
(the same table as Home Assistant's own openweathermap integration), so the stored
``weather_condition`` means the same whichever source it came from.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict, cast
from urllib.parse import quote, quote_plus

import aiohttp
import orjson
import yarl

from ha_ingestor_pipeline.circuit_breaker import BreakerConfig
from ha_ingestor_pipeline.http_client import ServiceCallError, ServiceHTTPClient, Timeouts
from ha_ingestor_pipeline.retry import BackoffPolicy, Outcome

WEATHER_PATH = "/data/2.5/weather"


# Every form of each API key in use, longest first: the key travels in the URL
# (appid=), URL-encoded, and an upstream or an aiohttp error may quote that URL.
_KEY_FORMS: list[str] = []


def _forms(key: str) -> set[str]:
    """The key as it is and as it appears in a URL (yarl's query encoding, %20, +)."""
    in_url = str(yarl.URL("http://h/").with_query({"k": key})).removeprefix("http://h/?k=")
    forms = {key, in_url, quote(key, safe=""), quote_plus(key)}
    return {form for form in forms if form}


def remember_key(key: str) -> None:
    _KEY_FORMS[:] = sorted(set(_KEY_FORMS) | _forms(key), key=len, reverse=True)


def hide_keys(text: str) -> str:
    """``text`` with every form of every API key replaced by ``***``: call it before a
    message is cut, or the start of a key survives the cut."""
    for form in _KEY_FORMS:
        if form in text:
            text = text.replace(form, "***")
    return text


class _HideKeys(logging.Filter):
    """Hides API keys in log records (the shared client logs errors that quote URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        hidden = hide_keys(message)
        if record.exc_info:  # a traceback's text may quote the URL too
            trace = logging.Formatter().formatException(record.exc_info)
            if hide_keys(trace) != trace:
                hidden += "\n" + hide_keys(trace)
                record.exc_info, record.exc_text = None, None
        if hidden != message:
            record.msg, record.args = hidden, None
        return True


HIDE_KEYS = _HideKeys()
_CLIENT_LOGGER = logging.getLogger(f"{__name__}.client")
_CLIENT_LOGGER.addFilter(HIDE_KEYS)


class WeatherInfo(TypedDict):
    """The ``weather`` member of an enriched envelope."""

    condition: str | None
    temperature_c: float | None
    humidity: float | None
    pressure_hpa: float | None
    wind_speed_ms: float | None
    source: Literal["home_assistant", "openweathermap"]
    observed_at: str | None


class ProviderError(Exception):
    """The provider gave no weather; ``retry_after`` when it said how long to stay away."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# OpenWeatherMap condition codes -> Home Assistant conditions (homeassistant.components.
# openweathermap.const.CONDITION_CLASSES). 800 is "clear": sunny by day, clear-night by
# night (the icon code ends in "n" at night).
_CONDITION_CODES: dict[str, tuple[int, ...]] = {
    "cloudy": (803, 804),
    "fog": (701, 721, 741),
    "hail": (906,),
    "lightning": (210, 211, 212, 221),
    "lightning-rainy": (200, 201, 202, 230, 231, 232),
    "partlycloudy": (801, 802),
    "pouring": (314, 502, 503, 504, 522),
    "rainy": (300, 301, 302, 310, 311, 312, 313, 500, 501, 520, 521),
    "snowy": (600, 601, 602, 611, 612, 620, 621, 622),
    "snowy-rainy": (511, 615, 616),
    "windy": (905, 951, 952, 953, 954, 955, 956, 957),
    "windy-variant": (958, 959, 960, 961),
    "exceptional": (711, 731, 751, 761, 762, 771, 900, 901, 903, 904, 962),
}
CONDITIONS = {code: name for name, codes in _CONDITION_CODES.items() for code in codes}
CLEAR = 800


def condition_of(code: object, icon: object) -> str | None:
    if isinstance(code, bool) or not isinstance(code, int):
        return None
    if code == CLEAR:
        return "clear-night" if isinstance(icon, str) and icon.endswith("n") else "sunny"
    return CONDITIONS.get(code)


def number(value: object) -> float | None:
    """A finite number as float; anything else (bool, text, NaN, huge) is None."""
    # `type(...) is` first: this runs for several fields of every event.
    kind = type(value)
    if (kind is not float and kind is not int) and (
        isinstance(value, bool) or not isinstance(value, int | float)
    ):
        return None
    try:
        result = float(cast("float", value))  # an int or float by now
    except OverflowError:  # an int past float's range
        return None
    return result if math.isfinite(result) else None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def parse_current(body: object) -> WeatherInfo:
    """The current weather API's answer in the enriched shape; ProviderError if unusable."""
    if not isinstance(body, Mapping) or not isinstance(body.get("main"), Mapping):
        raise ProviderError("OpenWeatherMap answered without current weather ('main' missing)")
    main = body["main"]
    conditions = body.get("weather")
    first = _mapping(conditions[0]) if isinstance(conditions, list) and conditions else {}
    observed = body.get("dt")
    observed_at = None
    if not isinstance(observed, bool) and isinstance(observed, int) and observed > 0:
        try:
            observed_at = datetime.fromtimestamp(observed, UTC).isoformat().replace("+00:00", "Z")
        except (OverflowError, OSError, ValueError):
            observed_at = None
    return {
        "condition": condition_of(first.get("id"), first.get("icon")),
        "temperature_c": number(main.get("temp")),
        "humidity": number(main.get("humidity")),
        "pressure_hpa": number(main.get("pressure")),
        "wind_speed_ms": number(_mapping(body.get("wind")).get("speed")),
        "source": "openweathermap",
        "observed_at": observed_at,
    }


class OpenWeatherMap:
    """Current weather by latitude and longitude."""

    name = "openweathermap"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        session: aiohttp.ClientSession,
        *,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api_key = api_key
        remember_key(api_key)
        self.client = ServiceHTTPClient(
            self.name,
            [base_url],
            session,
            timeouts=Timeouts(connect=min(timeout_s, 2.0), total=timeout_s),
            # A few failures in a row and the provider is left alone for a while, across
            # every location (the weather step's negative cache is per location).
            breaker_config=BreakerConfig(
                failure_threshold=3, open_interval=30.0, max_open_interval=300.0
            ),
            # No retries here (the weather step caches failures); the cap only bounds how
            # long a Retry-After (a rate limit) keeps the step away from the provider.
            backoff=BackoffPolicy(cap=900.0),
            clock=clock,
            logger=_CLIENT_LOGGER,
        )

    async def current(self, latitude: float, longitude: float, precision: int) -> WeatherInfo:
        """Raise ProviderError when no weather comes back, whatever the reason."""
        params = {
            "lat": f"{latitude:.{precision}f}",
            "lon": f"{longitude:.{precision}f}",
            "appid": self._api_key,
            "units": "metric",  # °C, m/s; pressure and humidity come as hPa and %
        }
        try:
            response = await self.client.get(WEATHER_PATH, params=params, retry=False, auth=False)
            if response.outcome is not Outcome.SUCCESS:
                message = _error_message(response.body)
                if response.outcome is Outcome.AUTH:
                    message = "the API key was refused"
                raise ProviderError(
                    f"OpenWeatherMap answered HTTP {response.status}: {message}",
                    retry_after=response.retry_after,
                )
            try:
                body = orjson.loads(response.body)
            except orjson.JSONDecodeError:
                # Not response.json(): its error quotes the body's start, key and all.
                raise ProviderError(
                    f"OpenWeatherMap answered HTTP {response.status} with a body that is "
                    f"not JSON: {_error_message(response.body)}"
                ) from None
            return parse_current(body)
        except ServiceCallError as err:  # no answer: refused, timed out, circuit open
            raise ProviderError(
                self._scrub(f"OpenWeatherMap: {err}"), retry_after=err.retry_after
            ) from None

    def _scrub(self, message: str) -> str:
        """The key travels in the URL (appid=), and some aiohttp errors quote the URL;
        messages end up in logs, stats and health (on one line)."""
        return " ".join(hide_keys(message).split())


def _error_message(body: bytes) -> str:
    """An error answer's ``message`` (OpenWeatherMap's shape) or its text, keys hidden
    on the whole text first, then cut: an upstream may echo the request's URL."""
    text = hide_keys(body.decode("utf-8", "replace"))
    try:
        answer = orjson.loads(text)
    except orjson.JSONDecodeError:
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("message"), str):
        text = answer["message"]
    return " ".join(text.split())[:120] or "(no message)"
