"""ServiceHTTPClient: the one way the integration and the services call each other.

One call is one or more attempt rounds. A round walks the endpoints (configured order,
or the registry's healthy-first order), skipping those whose circuit breaker refuses,
and fails over to the next endpoint on a retryable failure. Any HTTP answer comes back
as a `ServiceResponse` whose `outcome` says what to do (the contract's answer table, in
retry.py); only transport failures (and "every breaker is open") raise. Queued events
get one round (the forwarder retries them itself); interactive calls (``retry=True``)
get a few rounds with backoff.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from .circuit_breaker import BreakerConfig, BreakerState, CircuitBreaker
from .retry import BackoffPolicy, Outcome, classify_exception, classify_status, parse_retry_after

if TYPE_CHECKING:
    from .endpoint_health import ServiceRegistry

_LOGGER = logging.getLogger(__name__)

USER_AGENT = f"ha-ingestor aiohttp/{aiohttp.__version__}"
# Bodies at least this big are compressed on a worker thread, not on the event loop.
_THREAD_GZIP_BYTES = 64 * 1024

BreakerListener = Callable[[str, BreakerState, BreakerState], None]
"""Called as ``listener(endpoint_url, old_state, new_state)`` on every transition."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0
    total: float = 30.0

    def client_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=self.total, sock_connect=self.connect)


class ServiceCallError(Exception):
    """A call that got no HTTP answer: transport failure, or no endpoint to try."""

    def __init__(
        self,
        message: str,
        *,
        service: str,
        outcome: Outcome = Outcome.RETRYABLE,
        endpoint: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.service = service
        self.outcome = outcome
        self.endpoint = endpoint
        self.status = status
        self.retry_after = retry_after


class CircuitOpenError(ServiceCallError):
    """Every endpoint's breaker is open: nothing was sent."""

    def __init__(self, message: str, *, service: str, retry_in: float) -> None:
        super().__init__(message, service=service, retry_after=retry_in)
        self.retry_in = retry_in


@dataclass(frozen=True, slots=True)
class ServiceResponse:
    status: int
    body: bytes
    headers: Mapping[str, str]
    endpoint: str
    duration_ms: float
    attempt: int  # 1-based attempt round that produced this answer
    outcome: Outcome
    retry_after: float | None  # seconds, already clamped to the backoff cap
    service: str = ""

    def json(self) -> Any:
        """The body as JSON; a body that is not JSON is a permanent error of the call."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            raise ServiceCallError(
                f"{self.service or 'service'} at {self.endpoint} answered HTTP {self.status} "
                f"with a body that is not JSON: {self.body[:80]!r}",
                service=self.service,
                outcome=Outcome.PERMANENT,
                endpoint=self.endpoint,
                status=self.status,
                retry_after=self.retry_after,
            ) from None

    def error(self) -> tuple[str, str]:
        """Code and message of an error answer (the contract's error body), else the status."""
        try:
            body = self.json()
        except ServiceCallError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            error = body["error"]
            return str(error.get("code", f"HTTP_{self.status}")), str(error.get("message", ""))
        return f"HTTP_{self.status}", self.body[:200].decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class _Request:
    """One call's request, prepared once and sent as is on every attempt."""

    method: str
    path: str
    data: bytes | None
    headers: Mapping[str, str]
    params: Mapping[str, str] | None
    timeout: aiohttp.ClientTimeout
    correlation_id: str | None


class ServiceHTTPClient:
    """Resilient calls to one service that may have several endpoints (base URLs)."""

    def __init__(
        self,
        service_name: str,
        endpoints: Sequence[str],
        session: aiohttp.ClientSession,
        *,
        token: str | None = None,
        timeouts: Timeouts = Timeouts(),  # noqa: B008 - frozen, so sharing is safe
        breaker_config: BreakerConfig | None = None,
        backoff: BackoffPolicy = BackoffPolicy(),  # noqa: B008 - frozen, so sharing is safe
        interactive_attempts: int = 3,
        gzip_min_bytes: int = 1024 * 1024,
        registry: ServiceRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        wall_clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
    ) -> None:
        if not endpoints and registry is None:
            raise ValueError(f"{service_name}: at least one endpoint URL is needed")
        if interactive_attempts < 1:
            raise ValueError("interactive_attempts must be at least 1")
        self.service = service_name
        self._endpoints = [_normalize(url) for url in endpoints]
        self._session = session
        self._token = token
        self._timeouts = timeouts
        self._breaker_config = breaker_config or BreakerConfig()
        self._backoff = backoff
        self._interactive_attempts = interactive_attempts
        self._gzip_min_bytes = gzip_min_bytes
        self._registry = registry
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._wall_clock = wall_clock
        self._logger = logger or _LOGGER
        self._breakers: dict[str, CircuitBreaker] = {}
        self._listeners: list[BreakerListener] = []
        self._down_since: dict[str, float] = {}
        self._endpoint_errors: dict[str, str] = {}
        # Counters for diagnostics; one "request" is one HTTP attempt at one endpoint.
        self._requests = 0
        self._failures = 0
        self._circuit_open = 0
        self._outcomes: dict[str, int] = {outcome.value: 0 for outcome in Outcome}
        self._last_error: dict[str, Any] | None = None
        for url in self._endpoints:
            self._breaker(url)

    # -- public API ------------------------------------------------------------------

    @property
    def breakers(self) -> Mapping[str, CircuitBreaker]:
        return MappingProxyType(self._breakers)

    def set_token(self, token: str | None) -> None:
        self._token = token

    def add_breaker_listener(self, listener: BreakerListener) -> Callable[[], None]:
        """Call ``listener(endpoint, old, new)`` on every breaker transition."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def available(self) -> bool:
        """Whether some endpoint would take a call now (no half-open probe is consumed)."""
        return any(self._breaker(url).retry_in() == 0 for url in self._candidates())

    def retry_in(self) -> float:
        """Seconds until some endpoint takes a call (0 when one would now)."""
        waits = [self._breaker(url).retry_in() for url in self._candidates()]
        return min(waits) if waits else 0.0

    async def post(
        self,
        path: str,
        body: bytes | Any,
        *,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
        timeout: Timeouts | None = None,
        retry: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> ServiceResponse:
        """POST JSON (bytes as is, anything else through orjson); gzip when large."""
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        request_headers = self._headers(auth=True)
        request_headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            request_headers["Idempotency-Key"] = idempotency_key
        if correlation_id is not None:
            request_headers["X-Correlation-ID"] = correlation_id
        if headers:
            request_headers.update(headers)
        if len(data) >= self._gzip_min_bytes:
            data = await _gzip(data)
            request_headers["Content-Encoding"] = "gzip"
        request = _Request(
            method="POST",
            path=path,
            data=data,
            headers=request_headers,
            params=None,
            timeout=(timeout or self._timeouts).client_timeout(),
            correlation_id=correlation_id,
        )
        return await self._call(request, retry=retry)

    async def get(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        timeout: Timeouts | None = None,
        retry: bool = True,
        auth: bool = True,
    ) -> ServiceResponse:
        request = _Request(
            method="GET",
            path=path,
            data=None,
            headers=self._headers(auth=auth),
            params=params,
            timeout=(timeout or self._timeouts).client_timeout(),
            correlation_id=None,
        )
        return await self._call(request, retry=retry)

    async def check_health(self, path: str, *, timeout: Timeouts) -> ServiceResponse:
        """GET an open health path on each endpoint in order, past the breakers, until
        one answers; raises `ServiceCallError` when none does.

        Health is cheap and says whether the service can work, so it is asked even while
        a breaker waits out its open interval; a 2xx lets that endpoint's probe through
        now (`probe_now`), so recovery does not wait for the interval.
        """
        errors: list[str] = []
        for url in self._candidates():
            started = time.perf_counter()
            try:
                async with self._session.get(
                    url + path,
                    headers=self._headers(auth=False),
                    timeout=timeout.client_timeout(),
                    allow_redirects=False,
                ) as resp:
                    body = await resp.read()
                    status, headers = resp.status, resp.headers
            except (aiohttp.ClientError, TimeoutError, OSError) as err:
                errors.append(f"{url}: {_describe(err, timeout.client_timeout())}")
                continue
            outcome = classify_status(status)
            if outcome is Outcome.SUCCESS:
                self.probe_now(url)
            duration_ms = (time.perf_counter() - started) * 1000
            return self._response(url, status, body, headers, duration_ms, 1, outcome)
        raise ServiceCallError(
            f"{self.service}: no endpoint answered its health: {'; '.join(errors)}",
            service=self.service,
        )

    def probe_now(self, url: str) -> None:
        """The endpoint answers its health again: let the next call through as the
        breaker's probe now, instead of after its (possibly long) open interval."""
        breaker = self._breakers.get(_normalize(url))
        if breaker is not None:
            breaker.probe_now()

    def snapshot(self) -> dict[str, Any]:
        """Diagnostics: endpoints, breakers, counters and the last error (never the token)."""
        return {
            "service": self.service,
            "endpoints": self._candidates(),
            "available": self.available(),
            "retry_in": round(self.retry_in(), 3),
            "breakers": {url: breaker.snapshot() for url, breaker in self._breakers.items()},
            "requests": self._requests,
            "failures": self._failures,
            "circuit_open_rejections": self._circuit_open,
            "outcomes": dict(self._outcomes),
            "last_error": dict(self._last_error) if self._last_error else None,
            "token_set": self._token is not None,
        }

    # -- one call --------------------------------------------------------------------

    async def _call(self, request: _Request, *, retry: bool) -> ServiceResponse:
        attempts = self._interactive_attempts if retry else 1
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            try:
                response = await self._round(request, attempt)
            except CircuitOpenError:
                # Fast-failing is the point of an open breaker, even for a person waiting.
                raise
            except ServiceCallError:
                if last:
                    raise
                await self._sleep(self._retry_delay(attempt, None))
                continue
            if last or response.outcome not in (Outcome.RETRYABLE, Outcome.RATE_LIMITED):
                return response
            await self._sleep(self._retry_delay(attempt, response.retry_after))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _retry_delay(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter backoff for the 1-based attempt that failed, or Retry-After if longer."""
        delay = self._backoff.delay(attempt - 1, self._rng)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self._backoff.cap)

    async def _round(self, request: _Request, attempt: int) -> ServiceResponse:
        """Try each endpoint at most once; fail over on retryable failures."""
        candidates = self._candidates()
        if not candidates:
            raise ServiceCallError(f"{self.service}: no endpoint configured", service=self.service)
        tried = 0
        failed_response: ServiceResponse | None = None
        failed_error: ServiceCallError | None = None
        for url in candidates:
            breaker = self._breaker(url)
            if not breaker.allow_request():
                continue
            tried += 1
            try:
                result = await self._send(url, request, attempt, breaker)
            except BaseException:
                # Cancelled (or a bug): no verdict on the endpoint, free its probe.
                breaker.release_probe()
                raise
            if isinstance(result, ServiceCallError):
                failed_error = result
                continue
            if result.outcome is Outcome.RETRYABLE:
                failed_response = result
                continue
            return result
        if tried == 0:
            self._circuit_open += 1
            retry_in = self.retry_in()
            raise CircuitOpenError(
                f"{self.service}: every endpoint's circuit is open; next try in {retry_in:.1f} s",
                service=self.service,
                retry_in=retry_in,
            )
        # An HTTP answer says more (status, Retry-After) than a transport error.
        if failed_response is not None:
            return failed_response
        assert failed_error is not None
        raise failed_error

    async def _send(
        self, url: str, request: _Request, attempt: int, breaker: CircuitBreaker
    ) -> ServiceResponse | ServiceCallError:
        """One HTTP attempt at one endpoint; feeds the breaker, registry and counters."""
        self._requests += 1
        started = time.perf_counter()
        status: int | None = None
        try:
            async with self._session.request(
                request.method,
                url + request.path,
                data=request.data,
                headers=request.headers,
                params=request.params,
                timeout=request.timeout,
                allow_redirects=False,  # a receiver of ours never redirects
            ) as resp:
                body = await resp.read()
                status = resp.status
                headers: Mapping[str, str] = resp.headers
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            duration_ms = (time.perf_counter() - started) * 1000
            message = _describe(err, request.timeout)
            outcome = classify_exception(err)
            breaker.record_failure()
            self._feedback(url, ok=False, latency_ms=None, error=message)
            self._count(outcome, failed=True)
            self._remember_error(url, f"{request.method} {request.path}: {message}")
            self._log_attempt(request, url, None, duration_ms, attempt, breaker, message)
            return ServiceCallError(
                f"{self.service} at {url}: {message}",
                service=self.service,
                outcome=outcome,
                endpoint=url,
            )
        duration_ms = (time.perf_counter() - started) * 1000
        outcome = classify_status(status)
        if outcome is Outcome.RETRYABLE:
            breaker.record_failure()
            self._remember_error(url, f"{request.method} {request.path}: HTTP {status}")
        elif outcome is Outcome.RATE_LIMITED:
            # Rate limiting says the endpoint is alive and busy: no verdict for the breaker.
            breaker.release_probe()
        else:
            # 2xx and the other 4xx: the endpoint is alive and answering.
            breaker.record_success()
        if outcome is not Outcome.RETRYABLE:
            # An answer the service stands behind.
            self._feedback(url, ok=True, latency_ms=duration_ms)
        elif self._registry is not None:
            # A 5xx is no verdict on reachability, but a reason to ask its health soon:
            # a service that cannot work (a dependency down) says so there, is marked
            # down and probed until it can (docs/ARCHITECTURE.md, "Recovery").
            self._registry.check_soon(self.service, url)
        self._count(outcome, failed=outcome is Outcome.RETRYABLE)
        self._log_attempt(request, url, status, duration_ms, attempt, breaker, None)
        return self._response(url, status, body, headers, duration_ms, attempt, outcome)

    def _response(
        self,
        url: str,
        status: int,
        body: bytes,
        headers: Mapping[str, str],
        duration_ms: float,
        attempt: int,
        outcome: Outcome,
    ) -> ServiceResponse:
        return ServiceResponse(
            status=status,
            body=body,
            headers=headers,
            endpoint=url,
            duration_ms=duration_ms,
            attempt=attempt,
            outcome=outcome,
            retry_after=parse_retry_after(headers.get("Retry-After"), cap=self._backoff.cap),
            service=self.service,
        )

    # -- helpers ---------------------------------------------------------------------

    def _candidates(self) -> list[str]:
        """Endpoints in the order to try: the registry's (healthy first) when it knows us."""
        if self._registry is not None:
            try:
                return self._registry.get_service_urls(self.service)
            except KeyError:
                pass
        return list(self._endpoints)

    def _breaker(self, url: str) -> CircuitBreaker:
        breaker = self._breakers.get(url)
        if breaker is None:
            breaker = CircuitBreaker(f"{self.service}@{url}", self._breaker_config, self._clock)
            breaker.add_listener(functools.partial(self._on_transition, url))
            self._breakers[url] = breaker
        return breaker

    def _headers(self, *, auth: bool) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if auth and self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _feedback(
        self, url: str, *, ok: bool, latency_ms: float | None, error: str | None = None
    ) -> None:
        if self._registry is not None:
            self._registry.record_result(self.service, url, ok, latency_ms, error)

    def _count(self, outcome: Outcome, *, failed: bool) -> None:
        self._outcomes[outcome.value] += 1
        if failed:
            self._failures += 1

    def _remember_error(self, url: str, message: str) -> None:
        self._endpoint_errors[url] = message
        self._last_error = {
            "message": message,
            "endpoint": url,
            "time": datetime.fromtimestamp(self._wall_clock(), UTC).isoformat(),
        }

    def _log_attempt(
        self,
        request: _Request,
        url: str,
        status: int | None,
        duration_ms: float,
        attempt: int,
        breaker: CircuitBreaker,
        error: str | None,
    ) -> None:
        if not self._logger.isEnabledFor(logging.DEBUG):
            return
        self._logger.debug(
            "%s %s %s%s -> %s in %.1f ms (attempt %d)",
            self.service,
            request.method,
            url,
            request.path,
            status if error is None else error,
            duration_ms,
            attempt,
            extra={
                "service": self.service,
                "method": request.method,
                "path": request.path,
                "status": status,
                "duration_ms": round(duration_ms, 2),
                "attempt": attempt,
                "correlation_id": request.correlation_id,
                "breaker_state": breaker.state.value,
                "endpoint": url,
            },
        )

    def _on_transition(
        self, url: str, _: CircuitBreaker, old: BreakerState, new: BreakerState
    ) -> None:
        # With a registry, the registry tells the user once per outage; here it is detail.
        level = logging.DEBUG if self._registry is not None else logging.WARNING
        if old is BreakerState.CLOSED and new is BreakerState.OPEN:
            self._down_since[url] = self._clock()
            self._logger.log(
                level,
                "%s at %s is down, pausing calls to it: %s",
                self.service,
                url,
                self._endpoint_errors.get(url, "repeated failures"),
            )
        elif new is BreakerState.CLOSED:
            down_for = self._clock() - self._down_since.pop(url, self._clock())
            self._logger.log(
                min(level, logging.INFO),
                "%s at %s is back after %.0f s",
                self.service,
                url,
                down_for,
            )
        for listener in list(self._listeners):
            try:
                listener(url, old, new)
            except Exception:
                self._logger.exception("Breaker listener failed for %s at %s", self.service, url)


def _normalize(url: str) -> str:
    return url.rstrip("/")


def _describe(err: BaseException, timeout: aiohttp.ClientTimeout) -> str:
    """A short, readable reason for a transport failure."""
    if isinstance(err, TimeoutError):
        return f"timed out (total {timeout.total} s, connect {timeout.sock_connect} s)"
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


async def _gzip(data: bytes) -> bytes:
    # Level 1: most of the size win for a fraction of the CPU of the default level.
    if len(data) >= _THREAD_GZIP_BYTES:
        return await asyncio.to_thread(gzip.compress, data, 1)
    return gzip.compress(data, 1)
