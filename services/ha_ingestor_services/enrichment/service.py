"""The enrichment service: add weather, normalization and processing metadata to each
event, then hand the batch to storage and answer with storage's per-event results.

The enrichment keeps no queue. When storage cannot take the events (down, busy,
refusing our token, answering nonsense) the whole request is answered 503 with
Retry-After (storage's own when it gave one), and the integration keeps the events in
its outbox until the enrichment takes them.

How storage's answers map onto ours:

- 2xx with per-event results: each event gets storage's result for its ``event_id``.
  An event storage said nothing about is answered ``rejected`` (code
  ``STORAGE_NO_RESULT``): never ``stored`` when nobody confirmed it, and not a 503
  either, because a storage that keeps skipping one event would then block every event
  behind it. The integration keeps rejected events as dead letters, from where they can
  be replayed. A 2xx without any readable results is a 503 (that is not a storage
  answering).
- 413: the batch is split in halves and each half resent; one event that is still too
  large is rejected (``payload_too_large``).
- 400/422 and other 4xx about the request: halves again, to isolate the event storage
  refuses (rejected with storage's code and message); the others go through.
- 404/405 (storage_urls does not point at a storage), 401/403 (wrong storage token),
  408/429/5xx, timeouts, refused connections and an open circuit: 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import orjson
from aiohttp import web

from ha_ingestor_pipeline.circuit_breaker import BreakerConfig
from ha_ingestor_pipeline.envelope import (
    BATCH_PATH,
    ENRICHMENT_SERVICE_NAME,
    HEALTH_PATH,
    PAYLOAD_TOO_LARGE,
    STATS_PATH,
    EventResult,
    parse_results,
    utc_now_iso,
)
from ha_ingestor_pipeline.http_client import (
    CircuitOpenError,
    ServiceCallError,
    ServiceHTTPClient,
    ServiceResponse,
    Timeouts,
)
from ha_ingestor_pipeline.metrics import LatencyWindow
from ha_ingestor_pipeline.retry import Outcome
from ha_ingestor_services import __version__, tls
from ha_ingestor_services.contract import DependencyHealth, ServiceUnavailable
from ha_ingestor_services.identity import IdentitySource
from ha_ingestor_services.normalize import normalize

from .openweathermap import OpenWeatherMap
from .settings import EnrichmentSettings
from .weather import WeatherAnswer, WeatherProvider, WeatherStep

_LOGGER = logging.getLogger(__name__)

# What was done to each event before it went to storage (its processing.processing_steps).
EVENT_STEPS = ("validation", "enrichment", "normalization")
STORAGE_NO_RESULT = "STORAGE_NO_RESULT"

# Retry-After when storage gave none: long enough not to hammer it, short enough that
# the integration's own backoff (which honours it as a floor) decides.
DEFAULT_RETRY_AFTER_S = 5.0
# A misconfiguration (token, URL) is not fixed in seconds.
CONFIG_RETRY_AFTER_S = 30.0
# Pause before trying storage again within one request (jittered up to this).
RETRY_PAUSE_S = 0.2
HEALTH_TIMEOUTS = Timeouts(connect=2.0, total=3.0)


@dataclass(slots=True)
class _Clients:
    """What `start` opens and `stop` closes."""

    session: aiohttp.ClientSession
    owns_session: bool
    storage: ServiceHTTPClient
    storage_session: aiohttp.ClientSession | None  # its own, for a storage CA file
    weather: WeatherStep


@dataclass(slots=True)
class _Counters:
    events_enriched: int = 0
    batches: int = 0
    storage_requests: int = 0  # batch posts, splits and retries included
    storage_splits: int = 0  # batches halved after a 413 or a whole-request 4xx
    storage_retries: int = 0
    unavailable_answers: int = 0  # requests answered 503
    unconfirmed_events: int = 0  # events storage answered 2xx without a result for
    rejected_by_storage: int = 0


_STORED = ("stored", "duplicate")  # a tuple: `in` must not hash what storage sent


def _stored_in_order(envelopes: list[dict[str, Any]], body: object) -> list[EventResult] | None:
    """Storage's results as they are when they are the usual answer: one plain
    ``stored``/``duplicate`` result per event, in order. None for anything else, which
    then goes the careful way (`parse_results`, by event id)."""
    items = body.get("results") if type(body) is dict else None
    if type(items) is not list or len(items) != len(envelopes):
        return None
    for envelope, item in zip(envelopes, items, strict=True):
        if (
            type(item) is not dict
            or len(item) != 2
            or item.get("status") not in _STORED
            or item.get("event_id") != envelope["event_id"]
        ):
            return None
    return cast("list[EventResult]", items)


class EnrichmentService:
    """The `EventService` of the enrichment service (see `ha_ingestor_services.contract`).

    Not a `DecodesBatches`: each envelope is checked as a dict and forwarded as it came;
    decoding typed here gained nothing measurable (BENCHMARKS.md, "e2e").
    """

    name = ENRICHMENT_SERVICE_NAME
    role = "enrichment"

    def __init__(
        self,
        settings: EnrichmentSettings,
        session: aiohttp.ClientSession | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        identity: IdentitySource | None = None,
    ) -> None:
        """``session``: share one (closed by its owner); else `start` opens its own.

        ``clock`` drives the weather cache and the circuit breakers (tests inject one).
        ``identity``: where the service id is kept (the command gives its state file).
        """
        self.settings = settings
        self._identity = identity or IdentitySource("enrichment")
        self._service_id: str | None = None
        self.processing_steps = [*EVENT_STEPS, "forwarding"]
        self._session = session
        self._clock = clock
        self._clients: _Clients | None = None
        self._counters = _Counters()
        self._storage_latency = LatencyWindow()
        self._enrich_latency = LatencyWindow()
        self._storage_problem: str | None = None  # a misconfiguration seen on the last call
        self._last_storage_error: str | None = None

    # -- life cycle ------------------------------------------------------------------

    @property
    def service_id(self) -> str:
        if self._service_id is None:
            raise RuntimeError("the service id is known once the service has started")
        return self._service_id

    async def start(self) -> None:
        self._service_id = await asyncio.to_thread(self._identity.resolve)
        settings = self.settings
        session = self._session
        owns_session = session is None
        if session is None:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, ttl_dns_cache=300)
            )
        storage_context = tls.client_context(
            settings.storage_ca_file, check_hostname=settings.storage_check_hostname
        )
        storage_session = None
        if storage_context is not None:
            # A session of its own: what storage calls trust is not what the weather
            # provider's calls (public CAs, host names checked) must trust.
            storage_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, ttl_dns_cache=300, ssl=storage_context)
            )
        storage = ServiceHTTPClient(
            "storage",  # its name in logs and errors ("data-storage" is its wire name)
            settings.storage_urls,
            storage_session or session,
            token=settings.storage_token,
            timeouts=Timeouts(
                connect=settings.storage_connect_timeout_s, total=settings.storage_timeout_s
            ),
            # Storage back after an outage should be noticed within half a minute.
            breaker_config=BreakerConfig(max_open_interval=30.0),
            clock=self._clock,
            logger=_LOGGER,
        )
        provider: WeatherProvider | None = None
        if settings.weather_provider == "openweathermap":
            assert settings.openweathermap_api_key is not None  # checked by the settings
            provider = OpenWeatherMap(
                settings.openweathermap_url,
                settings.openweathermap_api_key,
                session,
                timeout_s=settings.weather_timeout_s,
                clock=self._clock,
            )
        weather = WeatherStep(
            provider,
            cache_ttl_s=settings.weather_cache_ttl_s,
            failure_ttl_s=settings.weather_failure_ttl_s,
            precision=settings.weather_location_precision,
            clock=self._clock,
            max_lookups=settings.weather_max_lookups,
        )
        self._clients = _Clients(session, owns_session, storage, storage_session, weather)
        _LOGGER.info(
            "enrichment forwards to storage at %s; weather provider: %s",
            ", ".join(settings.storage_urls),
            settings.weather_provider,
        )
        # Storage may come up later (the integration holds events meanwhile): say so, go on.
        state = await self._storage_health(storage)
        if not state.healthy:
            _LOGGER.warning(
                "storage is not ready yet (%s); answering 503 until it is", state.detail
            )

    async def stop(self) -> None:
        clients, self._clients = self._clients, None
        if clients is None:
            return
        await clients.weather.close()
        if clients.storage_session is not None:
            await clients.storage_session.close()
        if clients.owns_session:
            await clients.session.close()

    def _ready(self) -> _Clients:
        if self._clients is None:
            raise ServiceUnavailable("the enrichment is not started", retry_after=1.0)
        return self._clients

    # -- events ----------------------------------------------------------------------

    async def process(
        self, envelopes: list[dict[str, Any]], correlation_id: str
    ) -> list[EventResult]:
        clients = self._ready()
        processing = envelopes[0].get("processing")
        if isinstance(processing, dict) and "processor_version" in processing:
            # Enriched already: an enrichment whose storage_urls points at an enrichment
            # (perhaps itself). Refuse rather than forward in a circle.
            self._counters.unavailable_answers += 1
            raise ServiceUnavailable(
                "these events are enriched already: the sender's storage_urls points at an "
                "enrichment, not at storage",
                retry_after=CONFIG_RETRY_AFTER_S,
            )
        started = time.perf_counter()
        weather = await clients.weather.resolve(envelopes)
        self.enrich(envelopes, weather, started)
        self._counters.batches += 1
        self._counters.events_enriched += len(envelopes)
        return await self._forward(clients.storage, envelopes, correlation_id)

    def enrich(
        self,
        envelopes: list[dict[str, Any]],
        weather: list[WeatherAnswer],
        started: float,
    ) -> None:
        """Add ``normalized``, ``weather`` and ``processing`` to each envelope, in place.

        The envelopes are `check_envelope`'s fresh top-level dicts, so adding keys does
        not touch the request's own objects. The ``processing`` dict is shared by every
        event of the batch with the same weather status: it says the same thing.
        """
        processed_at = utc_now_iso()
        processing: dict[str, dict[str, Any]] = {}
        steps = list(EVENT_STEPS)
        for envelope, (info, status) in zip(envelopes, weather, strict=True):
            envelope["normalized"] = normalize(envelope)
            envelope["weather"] = info
            metadata = processing.get(status)
            if metadata is None:
                metadata = processing[status] = {
                    "processed_at": processed_at,
                    "processor_version": __version__,
                    "processing_time_ms": 0.0,
                    "processing_steps": steps,
                    "weather_status": status,
                }
            envelope["processing"] = metadata
        elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
        for metadata in processing.values():
            metadata["processing_time_ms"] = elapsed_ms
        self._enrich_latency.record(elapsed_ms)

    async def _forward(
        self, storage: ServiceHTTPClient, envelopes: list[dict[str, Any]], correlation_id: str
    ) -> list[EventResult]:
        """Storage's result for each envelope, in order; see the module docstring."""
        body = orjson.dumps({"events": envelopes})
        response = await self._post(storage, body, correlation_id)
        outcome = response.outcome
        if outcome is Outcome.SUCCESS:
            self._storage_problem = None
            return self._results(envelopes, response)
        splittable = outcome is Outcome.TOO_LARGE or (
            outcome is Outcome.PERMANENT and response.status not in (404, 405)
        )
        if not splittable:
            raise self._unavailable(response)
        code, message = response.error()
        if len(envelopes) == 1:
            self._counters.rejected_by_storage += 1
            if outcome is Outcome.TOO_LARGE:
                code = PAYLOAD_TOO_LARGE
            return [
                {
                    "event_id": envelopes[0]["event_id"],
                    "status": "rejected",
                    "error": {
                        "code": code,
                        "message": f"storage refused the event (HTTP {response.status}): "
                        + message[:300],
                    },
                }
            ]
        # Halves in order, one after the other: storage sees the events in FIFO order.
        self._counters.storage_splits += 1
        _LOGGER.info(
            "storage answered HTTP %s to %d events (%s); resending in halves",
            response.status,
            len(envelopes),
            code,
        )
        middle = len(envelopes) // 2
        first = await self._forward(storage, envelopes[:middle], correlation_id)
        return first + await self._forward(storage, envelopes[middle:], correlation_id)

    async def _post(
        self, storage: ServiceHTTPClient, body: bytes, correlation_id: str
    ) -> ServiceResponse:
        """Storage's answer; a second try after a blip; 503 when it never answers."""
        attempts = self.settings.storage_attempts
        for attempt in range(1, attempts + 1):
            self._counters.storage_requests += 1
            try:
                response = await storage.post(BATCH_PATH, body, correlation_id=correlation_id)
            except CircuitOpenError as err:
                raise self._answer_503(
                    f"storage is failing; calls to it are paused (last error: "
                    f"{self._last_storage_error or err})",
                    retry_after=max(1.0, err.retry_in),
                ) from None
            except ServiceCallError as err:
                self._last_storage_error = str(err)
                if attempt < attempts:
                    await self._pause()
                    continue
                raise self._answer_503(
                    f"storage did not answer: {err}", retry_after=DEFAULT_RETRY_AFTER_S
                ) from None
            self._storage_latency.record(response.duration_ms)
            # A 5xx without Retry-After may be a blip: once more. One with Retry-After
            # goes back to the integration at once (storage said when).
            if (
                response.outcome is Outcome.RETRYABLE
                and response.retry_after is None
                and attempt < attempts
            ):
                self._last_storage_error = f"HTTP {response.status}"
                await self._pause()
                continue
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _pause(self) -> None:
        self._counters.storage_retries += 1
        await asyncio.sleep(RETRY_PAUSE_S * (0.5 + random.random() / 2))

    def _results(
        self, envelopes: list[dict[str, Any]], response: ServiceResponse
    ) -> list[EventResult]:
        try:
            body = response.json()
        except ServiceCallError as err:  # a 2xx whose body is not JSON
            body = None
            self._last_storage_error = str(err)
        fast = _stored_in_order(envelopes, body)
        if fast is not None:
            return fast
        parsed = parse_results(body)
        if parsed is None:
            self._storage_problem = (
                f"storage at {response.endpoint} answered HTTP {response.status} without "
                "per-event results; is storage_urls the storage service?"
            )
            raise self._answer_503(self._storage_problem, retry_after=CONFIG_RETRY_AFTER_S)
        results: list[EventResult] = []
        for envelope in envelopes:
            event_id: str = envelope["event_id"]
            result = parsed.get(event_id)
            if result is None:
                self._counters.unconfirmed_events += 1
                result = {
                    "event_id": event_id,
                    "status": "rejected",
                    "error": {
                        "code": STORAGE_NO_RESULT,
                        "message": "storage answered without a result for this event; "
                        "it may not be stored (replay it from the dead letters)",
                    },
                }
            elif result["status"] == "rejected":
                self._counters.rejected_by_storage += 1
            results.append(result)
        return results

    def _unavailable(self, response: ServiceResponse) -> ServiceUnavailable:
        code, message = response.error()
        where = f"storage at {response.endpoint}"
        if response.outcome is Outcome.AUTH:
            self._storage_problem = (
                f"{where} refused this service's token (HTTP {response.status}); "
                "set storage_token to the token storage expects"
            )
            return self._answer_503(self._storage_problem, retry_after=CONFIG_RETRY_AFTER_S)
        if response.status in (404, 405):
            self._storage_problem = (
                f"{where} answered HTTP {response.status} to {BATCH_PATH}; "
                "is storage_urls the storage service?"
            )
            return self._answer_503(self._storage_problem, retry_after=CONFIG_RETRY_AFTER_S)
        self._last_storage_error = f"HTTP {response.status} {code}: {message[:200]}"
        return self._answer_503(
            f"storage cannot take events now (HTTP {response.status} {code}: {message[:200]})",
            retry_after=response.retry_after or DEFAULT_RETRY_AFTER_S,
        )

    def _answer_503(self, message: str, *, retry_after: float) -> ServiceUnavailable:
        self._counters.unavailable_answers += 1
        _LOGGER.debug("answering 503: %s", message)
        return ServiceUnavailable(message, retry_after=retry_after)

    # -- health and figures ----------------------------------------------------------

    async def health(self) -> dict[str, DependencyHealth]:
        clients = self._clients
        if clients is None:
            return {"self": DependencyHealth(False, "not started")}
        ok, detail = clients.weather.health()
        return {
            "storage": await self._storage_health(clients.storage),
            "weather": DependencyHealth(ok, detail, required=False),
        }

    async def _storage_health(self, storage: ServiceHTTPClient) -> DependencyHealth:
        if self._storage_problem is not None:
            # Storage refused our token, or the URL is not a storage: ask again (with the
            # token) rather than wait for events that may go elsewhere meanwhile.
            if not await self._takes_our_calls(storage):
                return DependencyHealth(False, self._storage_problem)
            self._storage_problem = None
        try:
            # Past the breaker: storage's own health says at once when it is back, and
            # lets the next batch through (docs/ARCHITECTURE.md, "Recovery").
            response = await storage.check_health(HEALTH_PATH, timeout=HEALTH_TIMEOUTS)
        except ServiceCallError as err:
            return DependencyHealth(False, f"unreachable: {err}")
        try:
            body = response.json()
        except ServiceCallError:
            body = None
        body = body if isinstance(body, dict) else {}
        if body.get("service") == ENRICHMENT_SERVICE_NAME:
            return DependencyHealth(
                False,
                f"{response.endpoint} answers as the enrichment, not storage (check storage_urls)",
            )
        status = body.get("status") if isinstance(body.get("status"), str) else "unknown"
        detail = f"{response.endpoint}: HTTP {response.status}, {status}"
        return DependencyHealth(response.outcome is Outcome.SUCCESS, detail)

    async def _takes_our_calls(self, storage: ServiceHTTPClient) -> bool:
        """Whether storage answers an authenticated request (its stats) with a 2xx."""
        try:
            response = await storage.get(STATS_PATH, timeout=HEALTH_TIMEOUTS, retry=False)
        except ServiceCallError:
            return False
        return response.outcome is Outcome.SUCCESS

    def count_requests_with(self, in_progress: Callable[[], int]) -> None:
        """Nothing to do with it: every request is forwarded at once."""

    def stats(self) -> dict[str, Any]:
        counters = self._counters
        storage_p50, storage_p95, storage_p99 = self._storage_latency.percentiles(50, 95, 99)
        enrich_p50, enrich_p95, enrich_p99 = self._enrich_latency.percentiles(50, 95, 99)
        clients = self._clients
        return {
            "events_enriched": counters.events_enriched,
            "batches": counters.batches,
            "enrich_batch_ms": {"p50": enrich_p50, "p95": enrich_p95, "p99": enrich_p99},
            "storage": {
                "urls": list(self.settings.storage_urls),
                "requests": counters.storage_requests,
                "retries": counters.storage_retries,
                "splits": counters.storage_splits,
                "unavailable_answers": counters.unavailable_answers,
                "unconfirmed_events": counters.unconfirmed_events,
                "rejected_events": counters.rejected_by_storage,
                "latency_ms": {"p50": storage_p50, "p95": storage_p95, "p99": storage_p99},
                "problem": self._storage_problem,
                "last_error": self._last_storage_error,
                "client": clients.storage.snapshot() if clients is not None else None,
            },
            "weather": clients.weather.snapshot() if clients is not None else None,
        }

    def routes(self) -> list[web.RouteDef]:
        return []

    def openapi_paths(self) -> dict[str, Any]:
        return {}
