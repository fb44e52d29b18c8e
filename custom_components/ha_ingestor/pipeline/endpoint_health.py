"""ServiceRegistry: which URL of each service to call, from health checks and real calls.

Each service has one or more base URLs in a configured order (the first is preferred).
A URL is up, down, or not checked yet (usable until proven otherwise). Health checks
and the results of real calls move it between up and down:

unknown --success--> up          unknown --failure--> down (no evidence it ever worked)
up --`failures_to_down` consecutive failed health checks--> down (one blip is not an outage)
up --a real call that got no answer (refused, reset, timed out)--> down at once
down --first success--> up

Health checks are cheap and open (no token). An up URL is checked every `interval`; a
URL that is down, or whose last check failed, is probed every `probe_interval` or so
(jittered), so its return is seen within seconds however long it was away, and the
listeners (the runtime wakes the forwarder) hear of it at once.

Callers take the first usable URL in configured order, so traffic fails over when the
first is down and returns to it as soon as it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .envelope import HEALTH_PATH

_LOGGER = logging.getLogger(__name__)

# success_ratio() looks at this many of the latest results (checks and real calls).
RESULT_WINDOW = 20

AvailabilityListener = Callable[[str, str, bool], None]
"""Called as ``listener(service, url, available)`` on every up/down change."""


@dataclass(slots=True)
class EndpointStatus:
    url: str
    available: bool | None = None  # None: not checked yet, treated as usable
    since: float | None = None  # wall time of the last up/down change
    last_check: float | None = None  # wall time of the last health check
    last_latency_ms: float | None = None
    last_error: str | None = None
    checks: int = 0  # results in the window (health checks and real calls) ...
    successes: int = 0  # ... and how many of them succeeded
    consecutive_failures: int = 0
    next_check: float = 0.0  # clock time the periodic checks look at it next
    _window: deque[bool] = field(
        default_factory=lambda: deque(maxlen=RESULT_WINDOW), init=False, repr=False, compare=False
    )

    def success_ratio(self) -> float:
        """Share of successes over the last `RESULT_WINDOW` results (1.0 before any)."""
        return self.successes / self.checks if self.checks else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "available": self.available,
            "since": self.since,
            "last_check": self.last_check,
            "last_latency_ms": self.last_latency_ms,
            "last_error": self.last_error,
            "checks": self.checks,
            "successes": self.successes,
            "success_ratio": round(self.success_ratio(), 4),
        }

    def _record(self, ok: bool) -> None:
        self._window.append(ok)
        self.checks = len(self._window)
        self.successes = sum(self._window)
        self.consecutive_failures = 0 if ok else self.consecutive_failures + 1


@dataclass(slots=True)
class _Service:
    name: str
    health_path: str
    endpoints: list[EndpointStatus]


class ServiceRegistry:
    """Knows every service's URLs and which of them are up. Use on one event loop."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        interval: float = 30.0,
        probe_interval: float = 1.0,
        timeout: float = 5.0,
        failures_to_down: int = 2,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        logger: logging.Logger | None = None,
    ) -> None:
        if interval <= 0 or probe_interval <= 0 or timeout <= 0 or failures_to_down < 1:
            raise ValueError(
                "interval, probe_interval and timeout must be > 0 and failures_to_down >= 1"
            )
        self._session = session
        self._interval = interval
        self._probe_interval = probe_interval
        self._timeout = timeout
        self._failures_to_down = failures_to_down
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._logger = logger or _LOGGER
        self._services: dict[str, _Service] = {}
        self._listeners: list[AvailabilityListener] = []
        self._task: asyncio.Task[None] | None = None
        self._probe_soon = asyncio.Event()  # a real call failed: do not wait out the sleep

    # -- configuration ---------------------------------------------------------------

    def register_service(
        self, name: str, urls: Sequence[str], health_path: str = HEALTH_PATH
    ) -> None:
        """Add a service, or replace its URLs (what is known about kept URLs stays)."""
        if not urls:
            raise ValueError(f"{name}: at least one URL is needed")
        previous = self._services.get(name)
        known = {s.url: s for s in previous.endpoints} if previous else {}
        endpoints = [
            known.get(url) or EndpointStatus(url)
            for url in dict.fromkeys(_normalize(url) for url in urls)
        ]
        self._services[name] = _Service(name, health_path, endpoints)

    def unregister_service(self, name: str) -> None:
        self._services.pop(name, None)

    def add_listener(self, listener: AvailabilityListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # -- questions -------------------------------------------------------------------

    def get_service_url(self, name: str) -> str:
        """The first usable URL in configured order; the first URL when none is usable."""
        endpoints = self._service(name).endpoints
        for status in endpoints:
            if status.available is not False:
                return status.url
        return endpoints[0].url

    def get_service_urls(self, name: str) -> list[str]:
        """Every URL, usable ones first, each group in configured order."""
        endpoints = self._service(name).endpoints
        usable = [s.url for s in endpoints if s.available is not False]
        down = [s.url for s in endpoints if s.available is False]
        return usable + down

    def is_available(self, name: str) -> bool:
        return any(s.available is not False for s in self._service(name).endpoints)

    def status(self, name: str) -> list[EndpointStatus]:
        return list(self._service(name).endpoints)

    def snapshot(self) -> dict[str, Any]:
        return {
            "interval": self._interval,
            "probe_interval": self._probe_interval,
            "running": self._task is not None and not self._task.done(),
            "services": {
                service.name: {
                    "health_path": service.health_path,
                    "available": self.is_available(service.name),
                    "url": self.get_service_url(service.name),
                    "endpoints": [status.as_dict() for status in service.endpoints],
                }
                for service in self._services.values()
            },
        }

    # -- results ---------------------------------------------------------------------

    def record_result(
        self,
        name: str,
        url: str,
        ok: bool,
        latency_ms: float | None = None,
        error: str | None = None,
    ) -> None:
        """The result of a real call: ``ok`` when it got an answer the service stands
        behind, not ``ok`` when it got no answer at all (the URL is down at once and
        probed soon). Unknown services and URLs are ignored."""
        status = self._known(name, url)
        if status is None:
            return
        if latency_ms is not None:
            status.last_latency_ms = latency_ms
        self._apply(name, status, ok, None if ok else error or "request failed", at_once=True)
        if not ok:
            self._check_soon(status)

    def check_soon(self, name: str, url: str) -> None:
        """A real call got an error answer: check that URL's health soon (no verdict)."""
        status = self._known(name, url)
        if status is not None:
            self._check_soon(status)

    async def check_service(self, name: str) -> list[EndpointStatus]:
        """GET health on every URL at once and record the results.

        A failing endpoint never raises (its status says what went wrong); an unknown
        service is a KeyError like everywhere else.
        """
        service = self._service(name)
        endpoints = list(service.endpoints)
        await asyncio.gather(*(self._check(name, service.health_path, s) for s in endpoints))
        return endpoints

    async def check_all_services(self) -> dict[str, list[EndpointStatus]]:
        names = list(self._services)
        results = await asyncio.gather(*(self.check_service(name) for name in names))
        return dict(zip(names, results, strict=True))

    # -- periodic checks -------------------------------------------------------------

    def set_interval(self, interval: float) -> None:
        """Seconds between checks of an up URL; takes effect from each URL's next check."""
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self._interval = interval

    def start(self) -> None:
        """Check every URL now, then each when it is due, until `stop`."""
        if self._task is not None and not self._task.done():
            return
        now = self._clock()
        for service in self._services.values():
            for status in service.endpoints:
                status.next_check = now
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="ha_ingestor service health checks"
        )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def check_due(self) -> None:
        """Check, all at once, every URL whose next check is due."""
        now = self._clock()
        due = [
            (service.name, service.health_path, status)
            for service in self._services.values()
            for status in service.endpoints
            if status.next_check <= now
        ]
        await asyncio.gather(*(self._check(*item) for item in due))

    async def _run(self) -> None:
        while True:
            try:
                await self.check_due()
            except Exception:  # keep checking whatever one round did, without spinning
                self._logger.exception("Service health check round failed")
                await self._wait(self._probe_interval)
                continue
            await self._wait(self._until_next_check())

    def _until_next_check(self) -> float:
        checks = [s.next_check for v in self._services.values() for s in v.endpoints]
        return max(0.0, min(checks) - self._clock()) if checks else self._interval

    async def _wait(self, delay: float) -> None:
        """Sleep `delay`, or less when a real call failed meanwhile (a probe is due)."""
        self._probe_soon.clear()
        sleeping = asyncio.ensure_future(self._sleep(delay))
        woken = asyncio.ensure_future(self._probe_soon.wait())
        try:
            await asyncio.wait({sleeping, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            woken.cancel()

    def _schedule(self, status: EndpointStatus) -> None:
        """After a check: an up URL is checked again after `interval`, any other soon."""
        if status.available is True and status.consecutive_failures == 0:
            status.next_check = self._clock() + self._interval
        else:
            status.next_check = self._probe_at()

    def _check_soon(self, status: EndpointStatus) -> None:
        """Probe it soon, unless a check is due sooner already; cut the loop's sleep short."""
        probe_at = self._probe_at()
        if probe_at < status.next_check:
            status.next_check = probe_at
            self._probe_soon.set()

    def _known(self, name: str, url: str) -> EndpointStatus | None:
        service = self._services.get(name)
        return None if service is None else _find(service, _normalize(url))

    def _probe_at(self) -> float:
        # Jittered, so that several entries do not probe a returning service in step.
        return self._clock() + self._probe_interval * (0.5 + self._rng())

    # -- internals -------------------------------------------------------------------

    def _service(self, name: str) -> _Service:
        try:
            return self._services[name]
        except KeyError:
            raise KeyError(f"unknown service {name!r}") from None

    async def _check(self, name: str, health_path: str, status: EndpointStatus) -> None:
        # Health is open: the token never travels with a check.
        started = time.perf_counter()
        error: str | None
        try:
            async with self._session.get(
                status.url + health_path,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                allow_redirects=False,
            ) as resp:
                await resp.read()
                code = resp.status
        except TimeoutError:
            ok, error = False, f"timed out after {self._timeout} s"
        except (aiohttp.ClientError, OSError) as err:
            ok, error = False, f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        else:
            # Health is open, so 401/403 comes from something in between (a proxy that
            # wants a login): the service is reachable, and the real calls will tell.
            ok = 200 <= code < 300 or code in (401, 403)
            error = None if 200 <= code < 300 else ("auth" if ok else f"HTTP {code}")
        status.last_check = self._clock()
        status.last_latency_ms = (time.perf_counter() - started) * 1000
        # A URL dropped by a re-register meanwhile is not reported on.
        if name in self._services and _find(self._services[name], status.url) is status:
            self._apply(name, status, ok, error, at_once=False)
        self._schedule(status)

    def _apply(
        self, name: str, status: EndpointStatus, ok: bool, error: str | None, *, at_once: bool
    ) -> None:
        status._record(ok)
        status.last_error = error
        if ok:
            if status.available is not True:
                self._set_available(name, status, True)
        elif status.available is None or (
            status.available and (at_once or status.consecutive_failures >= self._failures_to_down)
        ):
            self._set_available(name, status, False)

    def _set_available(self, name: str, status: EndpointStatus, available: bool) -> None:
        now = self._clock()
        was, since = status.available, status.since
        status.available = available
        status.since = now
        if not available:
            self._logger.warning("%s at %s is down: %s", name, status.url, status.last_error)
        elif was is False:
            down_for = now - since if since is not None else 0.0
            self._logger.info("%s at %s is back after %.0f s", name, status.url, down_for)
        else:
            self._logger.debug("%s at %s is up", name, status.url)
        for listener in list(self._listeners):
            try:
                listener(name, status.url, available)
            except Exception:
                self._logger.exception("Service availability listener failed for %s", name)


def _normalize(url: str) -> str:
    return url.rstrip("/")


def _find(service: _Service, url: str) -> EndpointStatus | None:
    for status in service.endpoints:
        if status.url == url:
            return status
    return None
