"""The weather step: which weather goes with each event of a batch.

In order of preference:

1. the weather Home Assistant sent in the envelope's ``context.weather`` (from the
   weather entity the user picked): status ``home_assistant``;
2. the provider's current weather at ``context.location`` rounded to
   ``weather_location_precision`` decimals: ``provider`` when fetched for this request,
   ``cache`` when a fresh answer was already there;
3. none: ``not_configured`` (no provider), ``no_location``, ``unavailable`` (the
   provider failed; the event goes on without weather and says so), or
   ``too_many_locations`` (the batch named more uncached locations than
   ``max_lookups`` and this one was past them).

Provider answers are cached per rounded location for ``weather_cache_ttl_s``; failures
for ``weather_failure_ttl_s`` (a negative cache, so a dead provider is not hammered).
Single flight: however many events and requests wait on one location, one upstream call
is made; the others await the same task. A batch resolves each distinct location once,
so the per-event work is a few dictionary lookups.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

from ha_ingestor_pipeline.envelope import ValidationError, to_rfc3339

from .openweathermap import HIDE_KEYS, ProviderError, WeatherInfo, hide_keys, number

_LOGGER = logging.getLogger(__name__)
_LOGGER.addFilter(HIDE_KEYS)  # an unexpected error's text may quote the provider's URL

WeatherStatus = Literal[
    "home_assistant",
    "provider",
    "cache",
    "not_configured",
    "no_location",
    "unavailable",
    "too_many_locations",
]
WeatherAnswer = tuple[WeatherInfo | None, WeatherStatus]
LocationKey = tuple[float, float]

STATUSES: tuple[WeatherStatus, ...] = get_args(WeatherStatus)
# Weather entity states that say nothing about the weather.
_NO_CONDITION = frozenset({"unavailable", "unknown", ""})
MAX_CACHE_ENTRIES = 10_000
# Upstream lookups one batch may start: a batch naming 5,000 places must not make
# 5,000 calls (issue 10). A home has one location; a few homes share a pipeline.
MAX_LOOKUPS_PER_BATCH = 20

_NOT_CONFIGURED: WeatherAnswer = (None, "not_configured")
_NO_LOCATION: WeatherAnswer = (None, "no_location")
_UNAVAILABLE: WeatherAnswer = (None, "unavailable")
_TOO_MANY: WeatherAnswer = (None, "too_many_locations")


class WeatherProvider(Protocol):
    name: str

    async def current(self, latitude: float, longitude: float, precision: int) -> WeatherInfo:
        """Current weather; raise `ProviderError` when there is none."""


def from_home_assistant(raw: Mapping[str, Any]) -> WeatherInfo | None:
    """Home Assistant's ``context.weather`` in the enriched shape; None when it says nothing.

    Home Assistant already converts to °C and hPa (see the integration's listener).
    """
    condition = raw.get("condition")
    if not isinstance(condition, str) or condition in _NO_CONDITION:
        condition = None
    weather: WeatherInfo = {
        "condition": condition,
        "temperature_c": number(raw.get("temperature_c")),
        "humidity": number(raw.get("humidity")),
        "pressure_hpa": number(raw.get("pressure_hpa")),
        "wind_speed_ms": number(raw.get("wind_speed_ms")),
        "source": "home_assistant",
        "observed_at": None,
    }
    if (
        condition is None
        and weather["temperature_c"] is None
        and weather["humidity"] is None
        and weather["pressure_hpa"] is None
        and weather["wind_speed_ms"] is None
    ):
        return None  # e.g. the weather entity is unavailable: try the provider instead
    observed_at = raw.get("observed_at")
    if observed_at is not None:
        with contextlib.suppress(ValidationError):
            weather["observed_at"] = to_rfc3339(observed_at, "context.weather.observed_at")
    return weather


def location_key(location: object, precision: int) -> LocationKey | None:
    """Latitude and longitude rounded (``+ 0.0`` turns -0.0 into 0.0), or None."""
    if not isinstance(location, Mapping):
        return None
    latitude = number(location.get("latitude"))
    longitude = number(location.get("longitude"))
    if latitude is None or longitude is None:
        return None
    return round(latitude, precision) + 0.0, round(longitude, precision) + 0.0


@dataclass(slots=True)
class _Entry:
    weather: WeatherInfo | None  # None: a remembered failure
    expires_at: float


@dataclass(slots=True)
class WeatherStats:
    events: dict[str, int]  # events answered, by weather status
    cache_hits: int = 0  # locations found fresh in the cache (per batch)
    cache_misses: int = 0  # locations that needed the provider (per batch)
    negative_hits: int = 0  # locations answered "unavailable" from a remembered failure
    upstream_calls: int = 0
    upstream_failures: int = 0
    single_flight_joins: int = 0  # lookups that awaited a call already in flight
    lookups_skipped: int = 0  # locations past a batch's lookup limit
    last_call_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None


class WeatherStep:
    """Weather for each envelope of a batch; see the module docstring."""

    def __init__(
        self,
        provider: WeatherProvider | None,
        *,
        cache_ttl_s: float = 900.0,
        failure_ttl_s: float = 60.0,
        precision: int = 2,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = MAX_CACHE_ENTRIES,
        max_lookups: int = MAX_LOOKUPS_PER_BATCH,
    ) -> None:
        self.provider = provider
        self._cache_ttl = cache_ttl_s
        self._failure_ttl = failure_ttl_s
        self._precision = precision
        self._clock = clock
        self._max_entries = max_entries
        self._max_lookups = max_lookups
        self._cache: dict[LocationKey, _Entry] = {}
        self._in_flight: dict[LocationKey, asyncio.Task[WeatherAnswer]] = {}
        self.stats = WeatherStats(events=dict.fromkeys(STATUSES, 0))

    async def resolve(self, envelopes: Sequence[Mapping[str, Any]]) -> list[WeatherAnswer]:
        """One answer per envelope, in order."""
        answers: list[WeatherAnswer] = []
        waiting: dict[LocationKey, list[int]] = {}  # locations to fetch -> event positions
        # Per batch, by raw (latitude, longitude): the answer, or the rounded location
        # still to fetch; so most events cost two dict lookups. (check_envelope has
        # refused booleans, which would share keys with 1 and 0.)
        answered: dict[tuple[Any, Any], WeatherAnswer] = {}
        to_fetch: dict[tuple[Any, Any], LocationKey] = {}
        provider = self.provider
        now = self._clock()
        for envelope in envelopes:
            context = envelope.get("context")
            location = None
            if type(context) is dict or isinstance(context, Mapping):
                sent = context.get("weather")
                if sent:
                    weather = from_home_assistant(sent)
                    if weather is not None:
                        answers.append((weather, "home_assistant"))
                        continue
                location = context.get("location")
            if provider is None:
                answers.append(_NOT_CONFIGURED)
                continue
            if type(location) is not dict and not isinstance(location, Mapping):
                answers.append(_NO_LOCATION)
                continue
            raw = (location.get("latitude"), location.get("longitude"))
            try:
                answer = answered.get(raw)
            except TypeError:  # unhashable: not numbers (check_envelope refuses those)
                answers.append(_NO_LOCATION)
                continue
            if answer is not None:
                answers.append(answer)
                continue
            key = to_fetch.get(raw)
            if key is None:
                key = location_key(location, self._precision)
                if key is None:
                    answer = _NO_LOCATION
                elif key not in waiting:
                    answer = self._cached(key, now) or self._over_limit(key, len(waiting))
                if answer is not None:
                    answered[raw] = answer
                    answers.append(answer)
                    continue
                assert key is not None
                to_fetch[raw] = key
            waiting.setdefault(key, []).append(len(answers))
            answers.append(_UNAVAILABLE)  # replaced once fetched
        if waiting:
            await self._fetch_into(answers, waiting)
        self._count(answers)
        return answers

    def _count(self, answers: list[WeatherAnswer]) -> None:
        counts = self.stats.events
        for _, status in answers:
            counts[status] += 1

    async def _fetch_into(
        self, answers: list[WeatherAnswer], waiting: dict[LocationKey, list[int]]
    ) -> None:
        """Fetch each waiting location (at once, single flight) into its events' answers."""
        self.stats.cache_misses += len(waiting)
        fetched = await asyncio.gather(*(self._fetch_shared(key) for key in waiting))
        for positions, answer in zip(waiting.values(), fetched, strict=True):
            for position in positions:
                answers[position] = answer

    def _over_limit(self, key: LocationKey, lookups: int) -> WeatherAnswer | None:
        """``too_many_locations`` when this batch has started its lookups already."""
        if lookups < self._max_lookups or key in self._in_flight:  # joining costs no call
            return None
        self.stats.lookups_skipped += 1
        return _TOO_MANY

    def _cached(self, key: LocationKey, now: float) -> WeatherAnswer | None:
        entry = self._cache.get(key)
        if entry is None or entry.expires_at <= now:
            return None
        if entry.weather is None:
            self.stats.negative_hits += 1
            return _UNAVAILABLE
        self.stats.cache_hits += 1
        return entry.weather, "cache"

    async def _fetch_shared(self, key: LocationKey) -> WeatherAnswer:
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(key), name=f"weather {key}")
            self._in_flight[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        else:
            self.stats.single_flight_joins += 1
        # Shielded: a request that goes away (client disconnect) must not cancel the call
        # the other waiters share; the answer still lands in the cache.
        return await asyncio.shield(task)

    def _forget(self, key: LocationKey, task: asyncio.Task[WeatherAnswer]) -> None:
        if self._in_flight.get(key) is task:
            del self._in_flight[key]

    async def _fetch(self, key: LocationKey) -> WeatherAnswer:
        assert self.provider is not None
        stats = self.stats
        stats.upstream_calls += 1
        stats.last_call_at = self._clock()
        try:
            weather = await self.provider.current(key[0], key[1], self._precision)
        except ProviderError as err:
            stay_away = max(self._failure_ttl, err.retry_after or 0.0)
            # One warning per outage, not one per location.
            level = logging.WARNING if stats.last_error is None else logging.DEBUG
            _LOGGER.log(
                level,
                "no weather for %s; events go on without it (retry in %.0f s): %s",
                key,
                stay_away,
                err,
            )
            stats.upstream_failures += 1
            stats.last_error = str(err)
            stats.last_error_at = self._clock()
            self._store(key, _Entry(None, self._clock() + stay_away))
            return _UNAVAILABLE
        except Exception as err:  # a bug must not hold events back either
            _LOGGER.exception("weather lookup for %s failed", key)
            stats.upstream_failures += 1
            stats.last_error = hide_keys(f"{type(err).__name__}: {err}")
            stats.last_error_at = self._clock()
            self._store(key, _Entry(None, self._clock() + self._failure_ttl))
            return _UNAVAILABLE
        if stats.last_error is not None:
            _LOGGER.info("%s answers again", self.provider.name)
            stats.last_error = None
        self._store(key, _Entry(weather, self._clock() + self._cache_ttl))
        return weather, "provider"

    def _store(self, key: LocationKey, entry: _Entry) -> None:
        cache = self._cache
        cache.pop(key, None)  # re-inserted last: the dict's order is the age order
        if len(cache) >= self._max_entries:
            now = self._clock()
            for stale in [k for k, e in cache.items() if e.expires_at <= now]:
                del cache[stale]
            while len(cache) >= self._max_entries:
                del cache[next(iter(cache))]
        cache[key] = entry

    def health(self) -> tuple[bool, str]:
        """Whether the provider answered its last call (never a call of its own)."""
        if self.provider is None:
            return True, "no provider configured; weather only from Home Assistant"
        stats = self.stats
        if stats.last_call_at is None:
            return True, f"{self.provider.name}: no call yet"
        ago = self._clock() - stats.last_call_at
        if stats.last_error is not None:
            return False, f"{self.provider.name}: last call {ago:.0f} s ago failed: " + (
                stats.last_error
            )
        return True, f"{self.provider.name}: last call {ago:.0f} s ago answered"

    def snapshot(self) -> dict[str, Any]:
        stats = self.stats
        return {
            "provider": self.provider.name if self.provider is not None else None,
            "events": dict(stats.events),
            "cache_entries": len(self._cache),
            "cache_hits": stats.cache_hits,
            "cache_misses": stats.cache_misses,
            "negative_cache_hits": stats.negative_hits,
            "upstream_calls": stats.upstream_calls,
            "upstream_failures": stats.upstream_failures,
            "single_flight_joins": stats.single_flight_joins,
            "lookups_skipped": stats.lookups_skipped,
            "in_flight": len(self._in_flight),
            "last_error": stats.last_error,
        }

    async def close(self) -> None:
        """Cancel calls still in flight (their waiters are gone by now)."""
        tasks = list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._in_flight.clear()
