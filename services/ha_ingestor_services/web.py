"""The aiohttp adapter: the HTTP surface both services share around their processing.

`create_app` turns an `EventService` (contract.py: the enrichment or the storage) into
an aiohttp application with

- bearer-token auth compared in constant time (health is the only open endpoint),
- body and batch limits (413), malformed JSON (400) and schema errors (422) in the one
  error body of the contract (docs/ARCHITECTURE.md, "Contracts"), never a 500 for bad
  input,
- ``POST /api/v1/events`` and ``POST /api/v1/events/batch`` answering with one result
  per event, so one bad event never sinks its batch,
- ``GET /api/v1/health`` (open: status, service name, id, role, API version and
  whether a token is needed; with the token: details),
  ``GET /api/v1/stats``, ``GET /metrics`` (Prometheus text) and
  ``GET /api/v1/openapi.json``,
- ``GET /``: a small HTML status page for people (status_page.py), open like health.

A service only implements `EventService.process` for the events that passed the
envelope checks, plus its health, stats and any routes of its own; its errors
(`RequestError`, `ServiceUnavailable`) become answers here.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from ha_ingestor_pipeline.envelope import (
    BATCH_PATH,
    EVENTS_PATH,
    HEALTH_PATH,
    OPENAPI_PATH,
    STATS_PATH,
    VALIDATION_ERROR,
    EventResult,
    ValidationError,
    new_event_id,
    utc_now_iso,
)
from ha_ingestor_pipeline.metrics import LatencyWindow, RateMeter

from . import __version__, status_page
from .connections import LIMITS
from .contract import (
    BAD_REQUEST,
    FORBIDDEN,
    INTERNAL_ERROR,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    PAYLOAD_TOO_LARGE,
    UNAUTHORIZED,
    DecodesBatches,
    DependencyHealth,
    EventService,
    RequestError,
    ServiceUnavailable,
)
from .envelopes import check_envelope
from .identity import API_VERSION
from .limits import BodyError, Limits, RequestGate, read_body
from .openapi import build_document
from .responses import error_body_response, json_response

_LOGGER = logging.getLogger(__name__)

OPEN_PATHS = frozenset({HEALTH_PATH, "/"})

CORRELATION_HEADER = "X-Correlation-ID"


class ServiceMetrics:
    """Prometheus metrics (one registry per app) and the figures of ``/api/v1/stats``."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self.started = time.monotonic()
        self.requests = Counter(
            "ha_ingestor_http_requests",
            "HTTP requests answered, by route and status.",
            ["service", "method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "ha_ingestor_http_request_duration_seconds",
            "Time to answer a request, by route.",
            ["service", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self.events = Counter(
            "ha_ingestor_events",
            "Events answered, by result status.",
            ["service", "status"],
            registry=self.registry,
        )
        self.event_counts = {"stored": 0, "duplicate": 0, "rejected": 0}
        self.batch_latency = LatencyWindow()
        self.event_rate = RateMeter()

    def count_results(self, results: list[EventResult]) -> None:
        counts = dict.fromkeys(self.event_counts, 0)
        for result in results:
            counts[result["status"]] += 1
        for status, count in counts.items():
            if count:
                self.event_counts[status] += count
                self.events.labels(self.service, status).inc(count)
        self.event_rate.mark(len(results))

    def snapshot(self) -> dict[str, Any]:
        p50, p95, p99 = self.batch_latency.percentiles(50, 95, 99)
        return {
            "uptime_s": round(time.monotonic() - self.started, 3),
            "events": dict(self.event_counts),
            "events_per_s": self.event_rate.per_second(),
            "events_per_minute": self.event_rate.per_minute(),
            "request_latency_ms": {"p50": p50, "p95": p95, "p99": p99},
        }


@dataclass(slots=True)
class _Context:
    service: EventService
    decoder: DecodesBatches | None  # the service, when it reads batches itself
    token: str
    limits: Limits
    metrics: ServiceMetrics
    gate: RequestGate


_CONTEXT = web.AppKey("ha_ingestor_context", _Context)


def service_of(app: web.Application) -> EventService:
    return app[_CONTEXT].service


def metrics_of(app: web.Application) -> ServiceMetrics:
    return app[_CONTEXT].metrics


def token_required(app: web.Application) -> bool:
    return bool(app[_CONTEXT].token)


# -- middlewares ----------------------------------------------------------------------


def _correlation_id(request: web.Request) -> str:
    given = request.headers.get(CORRELATION_HEADER, "")
    return given if _valid_correlation_id(given) else new_event_id()


@web.middleware
async def _errors_and_metrics(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure becomes the standard error body; every answer is counted."""
    context = request.app[_CONTEXT]
    started = time.perf_counter()
    correlation_id = _correlation_id(request)
    request["correlation_id"] = correlation_id
    try:
        response = await handler(request)
    except RequestError as err:
        response = error_body_response(
            err.status,
            err.code,
            err.message,
            err.details,
            correlation_id=correlation_id,
            retry_after=err.retry_after,
        )
    except web.HTTPException as err:  # aiohttp's own: 404, 405
        response = _from_http_exception(err, correlation_id)
    except Exception:
        _LOGGER.exception("unexpected error answering %s %s", request.method, request.path)
        response = error_body_response(
            500,
            INTERNAL_ERROR,
            "internal error; see the service log",
            correlation_id=correlation_id,
        )
    response.headers[CORRELATION_HEADER] = correlation_id
    route = request.match_info.route.resource
    route_name = route.canonical if route is not None else "unmatched"
    metrics = context.metrics
    metrics.requests.labels(metrics.service, request.method, route_name, str(response.status)).inc()
    metrics.request_seconds.labels(metrics.service, route_name).observe(
        time.perf_counter() - started
    )
    return response


def _from_http_exception(err: web.HTTPException, correlation_id: str) -> web.Response:
    codes = {
        404: (NOT_FOUND, "no such endpoint"),
        405: (METHOD_NOT_ALLOWED, "method not allowed on this endpoint"),
        413: (PAYLOAD_TOO_LARGE, "request body too large"),
    }
    code, message = codes.get(err.status, (BAD_REQUEST, err.reason))
    if err.status == 413:
        message = err.text or message
    response = error_body_response(err.status, code, message, correlation_id=correlation_id)
    if "Allow" in err.headers:
        response.headers["Allow"] = err.headers["Allow"]
    return response


def _given_token(request: web.Request) -> str | None:
    """The bearer token of the request; None when there is none or it is malformed.

    Header values arrive decoded with surrogate escapes: bytes that are not UTF-8 (or
    any control character) make the header malformed, never an encoding error later.
    """
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given or not (given.isascii() and given.isprintable()):
        return None
    return given


def _token_is_valid(request: web.Request) -> bool:
    given = _given_token(request)
    expected = request.app[_CONTEXT].token
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


@web.middleware
async def _auth(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.path in OPEN_PATHS:
        return await handler(request)
    if _given_token(request) is None:
        raise RequestError(
            401, UNAUTHORIZED, "a bearer token is required (Authorization: Bearer <token>)"
        )
    if not _token_is_valid(request):
        raise RequestError(403, FORBIDDEN, "the bearer token is not valid for this service")
    return await handler(request)


# -- request bodies ---------------------------------------------------------------------


async def read_json(request: web.Request, limits: Limits) -> Any:
    """The request's JSON body; 413 past the size limit, 415 when not sent as JSON,
    400 when it is not JSON (limits.read_body)."""
    return parse_json(await read_request_body(request, limits))


async def read_request_body(request: web.Request, limits: Limits) -> bytes:
    """The request's body, not empty (`read_json` without the parse)."""
    if request.content_length is not None and request.content_length > limits.max_body_bytes:
        raise RequestError(
            413,
            PAYLOAD_TOO_LARGE,
            f"request body is {request.content_length} bytes, over the limit of "
            f"{limits.max_body_bytes}",
            {"limit_bytes": limits.max_body_bytes},
        )
    try:
        body = await read_body(request, limits)
    except BodyError as err:
        details = {"limit_bytes": limits.max_body_bytes} if err.status == 413 else None
        raise RequestError(err.status, err.code, err.message, details) from None
    if not body:
        raise RequestError(400, BAD_REQUEST, "the request body is empty; JSON expected")
    return body


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise RequestError(400, BAD_REQUEST, f"the request body is not valid JSON: {err}") from None


def batch_events(body: Any, limits: Limits) -> list[Any]:
    """The ``events`` list of a batch body; 422 for the wrong shape, 413 past the limit."""
    if not isinstance(body, dict):
        raise RequestError(
            422,
            VALIDATION_ERROR,
            "a batch is an object with an events list",
            {"field": "events", "issue": "body is not an object", "expected": "object"},
        )
    events = body.get("events")
    if not isinstance(events, list):
        raise RequestError(
            422,
            VALIDATION_ERROR,
            "events: is missing or not a list",
            {"field": "events", "issue": "is missing or not a list", "expected": "array"},
        )
    if not events:
        raise RequestError(
            422,
            VALIDATION_ERROR,
            "events: is empty",
            {"field": "events", "issue": "is empty", "expected": "at least one event"},
        )
    if len(events) > limits.max_batch_events:
        raise RequestError(
            413,
            PAYLOAD_TOO_LARGE,
            f"batch has {len(events)} events, over the limit of {limits.max_batch_events}",
            {"limit_events": limits.max_batch_events},
        )
    return events


def _event_id_of(raw: object) -> str:
    event_id = raw.get("event_id") if isinstance(raw, dict) else None
    return event_id if isinstance(event_id, str) else ""


async def run_events(
    context: _Context, raws: list[Any], correlation_id: str
) -> tuple[list[EventResult], float]:
    """Check each envelope, let the service process the good ones, merge the results."""
    started = time.perf_counter()
    results: list[EventResult | None] = []
    accepted: list[dict[str, Any]] = []
    for raw in raws:
        try:
            accepted.append(check_envelope(raw))
        except ValidationError as err:
            results.append(
                {"event_id": _event_id_of(raw), "status": "rejected", "error": err.to_error()}
            )
        else:
            results.append(None)
    processed = await context.service.process(accepted, correlation_id) if accepted else []
    if len(processed) != len(accepted):
        raise RuntimeError(
            f"{context.service.name} answered {len(processed)} results for {len(accepted)} events"
        )
    answers = iter(processed)
    merged = [result if result is not None else next(answers) for result in results]
    return merged, _measured(context, merged, started)


async def run_decoded(
    context: _Context, decoder: DecodesBatches, items: list[Any], correlation_id: str
) -> tuple[list[EventResult], float]:
    """`run_events` for a batch the service decoded itself (`DecodesBatches`)."""
    started = time.perf_counter()
    results = await decoder.process_decoded(items, correlation_id)
    if len(results) != len(items):
        raise RuntimeError(
            f"{context.service.name} answered {len(results)} results for {len(items)} events"
        )
    return results, _measured(context, results, started)


def _measured(context: _Context, results: list[EventResult], started: float) -> float:
    """Count a batch's results and its time; the time in ms."""
    elapsed_ms = (time.perf_counter() - started) * 1000
    context.metrics.batch_latency.record(elapsed_ms)
    context.metrics.count_results(results)
    return elapsed_ms


def _success_body(
    service: EventService, results: list[EventResult], elapsed_ms: float, correlation_id: str
) -> dict[str, Any]:
    return {
        "success": True,
        "processed_at": utc_now_iso(),
        "processing_time_ms": round(elapsed_ms, 3),
        "correlation_id": correlation_id,
        "metadata": {
            "service": service.name,
            "version": __version__,
            "processing_steps": service.processing_steps,
        },
        "results": results,
    }


# -- handlers -------------------------------------------------------------------------


def _busy(context: _Context) -> ServiceUnavailable:
    # Bodies in memory and work waiting are bounded by this many requests at once.
    return ServiceUnavailable(
        f"too many requests in progress (limit {context.gate.limit}); try again shortly",
        retry_after=1,
    )


async def _post_batch(request: web.Request) -> web.Response:
    context = request.app[_CONTEXT]
    with context.gate.enter() as admitted:
        if not admitted:
            raise _busy(context)
        body = await read_request_body(request, context.limits)
        decoder = context.decoder
        decoded = (
            decoder.decode_batch(body, context.limits.max_batch_events)
            if decoder is not None
            else None
        )
        if decoder is not None and decoded is not None:
            correlation_id = _batch_correlation_id(decoded.correlation_id, request)
            results, elapsed_ms = await run_decoded(context, decoder, decoded.items, correlation_id)
        else:
            parsed = parse_json(body)
            raws = batch_events(parsed, context.limits)
            correlation_id = _batch_correlation_id(_given_correlation_id(parsed), request)
            results, elapsed_ms = await run_events(context, raws, correlation_id)
    return json_response(_success_body(context.service, results, elapsed_ms, correlation_id))


async def _post_single(request: web.Request) -> web.Response:
    """One envelope; a schema error is a 422 here (there is no batch to keep going)."""
    context = request.app[_CONTEXT]
    with context.gate.enter() as admitted:
        if not admitted:
            raise _busy(context)
        body = await read_json(request, context.limits)
        correlation_id = _batch_correlation_id(_given_correlation_id(body), request)
        results, elapsed_ms = await run_events(context, [body], correlation_id)
    error = results[0].get("error")
    if results[0]["status"] == "rejected" and error is not None:
        raise RequestError(422, error["code"], error["message"], error.get("details"))
    return json_response(_success_body(context.service, results, elapsed_ms, correlation_id))


def _valid_correlation_id(given: str) -> bool:
    # It goes back in the X-Correlation-ID header: no CR/LF or other control characters.
    return 0 < len(given) <= 128 and given.isprintable()


def _given_correlation_id(body: Any) -> object:
    return body.get("correlation_id") if isinstance(body, dict) else None


def _batch_correlation_id(given: object, request: web.Request) -> str:
    """The request's correlation id: the header's, else ``given`` (the body's) when it is
    text; 422 when that text is not a valid one."""
    if isinstance(given, str) and not _valid_correlation_id(given):
        raise RequestError(
            422,
            VALIDATION_ERROR,
            "correlation_id: is not 1 to 128 printable characters",
            {
                "field": "correlation_id",
                "issue": "is empty, too long or holds control characters",
                "expected": "1 to 128 printable characters",
            },
        )
    if isinstance(given, str) and CORRELATION_HEADER not in request.headers:
        request["correlation_id"] = given
    correlation_id: str = request["correlation_id"]
    return correlation_id


async def _check_health(context: _Context) -> tuple[str, dict[str, DependencyHealth]]:
    """The overall status and each dependency's state: health's and the status page's."""
    try:
        dependencies = await context.service.health()
    except Exception as err:  # a health check must answer, whatever broke
        _LOGGER.exception("health check failed")
        dependencies = {"self": DependencyHealth(False, f"{type(err).__name__}: {err}")}
    required_down = any(not dep.healthy and dep.required for dep in dependencies.values())
    optional_down = any(not dep.healthy and not dep.required for dep in dependencies.values())
    status = "unhealthy" if required_down else "degraded" if optional_down else "healthy"
    return status, dependencies


async def _health(request: web.Request) -> web.Response:
    """Open: the status, the service's name, and what discovery needs to know it by:
    its stable id, role, API version and whether a token is needed (docs/ARCHITECTURE.md,
    "Discovery"). With the token: also the version, uptime and each dependency's detail,
    which can hold file paths, URLs and upstream errors."""
    context = request.app[_CONTEXT]
    service = context.service
    status, dependencies = await _check_health(context)
    required_down = status == "unhealthy"
    body: dict[str, Any] = {
        "status": status,
        "service": service.name,
        "service_id": service.service_id,
        "role": service.role,
        "api_version": API_VERSION,
        "token_required": token_required(request.app),
    }
    if _token_is_valid(request):
        body |= {
            "version": __version__,
            "uptime_s": round(time.monotonic() - context.metrics.started, 3),
            "timestamp": utc_now_iso(),
            "dependencies": {name: dep.as_dict() for name, dep in dependencies.items()},
        }
    return json_response(body, status=503 if required_down else 200)


async def _status_page(request: web.Request) -> web.Response:
    """HTML for people (the "Visit" link of the service's device in Home Assistant).

    Always 200: the page itself works; the status it shows is health's verdict, and
    monitors read the status code of the health endpoint instead.
    """
    context = request.app[_CONTEXT]
    status, dependencies = await _check_health(context)
    page = status_page.render(
        context.service.name,
        status,
        {name: (dep.healthy, dep.required) for name, dep in dependencies.items()},
        utc_now_iso(),
    )
    return web.Response(
        text=page, content_type="text/html", charset="utf-8", headers=status_page.HEADERS
    )


async def _stats(request: web.Request) -> web.Response:
    context = request.app[_CONTEXT]
    body = {
        "service": context.service.name,
        "version": __version__,
        **context.metrics.snapshot(),
        context.service.name: context.service.stats(),
    }
    return json_response(body)


async def _metrics(request: web.Request) -> web.Response:
    registry = request.app[_CONTEXT].metrics.registry
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def _openapi(request: web.Request) -> web.Response:
    service = request.app[_CONTEXT].service
    return json_response(build_document(service.name, __version__, service.openapi_paths()))


def create_app(service: EventService, *, token: str, limits: Limits = Limits()) -> web.Application:  # noqa: B008
    """The service's aiohttp application; `service.start`/`stop` run with the app's life."""
    if not token:
        raise ValueError("a bearer token is required (HA_INGESTOR_TOKEN or --token)")
    metrics = ServiceMetrics(service.name)
    gate = RequestGate(limits.max_concurrent_requests)
    service.count_requests_with(lambda: gate.inside)
    app = web.Application(
        middlewares=[_errors_and_metrics, _auth], client_max_size=limits.max_body_bytes
    )
    app[LIMITS] = limits
    app[_CONTEXT] = _Context(
        service=service,
        decoder=service if isinstance(service, DecodesBatches) else None,
        token=token,
        limits=limits,
        metrics=metrics,
        gate=gate,
    )
    app.add_routes(
        [
            web.get("/", _status_page),
            web.post(EVENTS_PATH, _post_single),
            web.post(BATCH_PATH, _post_batch),
            web.get(HEALTH_PATH, _health),
            web.get(STATS_PATH, _stats),
            web.get("/metrics", _metrics),
            web.get(OPENAPI_PATH, _openapi),
            *service.routes(),
        ]
    )

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        await service.start()
        yield
        await service.stop()

    app.cleanup_ctx.append(lifecycle)
    return app
