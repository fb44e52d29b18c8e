"""Bounded connections: `ServiceRunner` serves an app made by `web.create_app`.

aiohttp alone keeps a connection that never sends a complete request open for as long
as the client likes, and takes any number of them. The runner adds, from the app's
`Limits`:

- at most ``max_connections`` open connections: one more is closed as soon as it is
  accepted;
- a new connection that has not sent a complete request head within
  ``request_timeout_s`` is closed (idle, or sending its headers slowly);
- after a response, aiohttp's own keep-alive timer (``keepalive_timeout_s``) closes a
  connection whose next request head is not complete in time;
- request bodies are left compressed for `limits.read_body`, which unpacks them in
  bounded steps (aiohttp's own decompression is unbounded in the older releases);
- a request aiohttp cannot parse (bad header bytes, ...) is still its 400, but logged
  as one debug line: aiohttp logs it as an ERROR with a traceback, and no input from the
  network may put a traceback in the log.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from .limits import DECOMPRESS_HERE, Limits

LIMITS = web.AppKey("ha_ingestor_limits", Limits)  # set by web.create_app

_SERVER_LOGGER = logging.getLogger("ha_ingestor_services.http")


class _ClientErrorsAreNotErrors(logging.Filter):
    """aiohttp's "Error handling request" for a request it could not parse: debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.msg = f"{record.msg}: {type(exc).__name__} {exc.code}"
            record.exc_info = record.exc_text = None
        return _SERVER_LOGGER.isEnabledFor(record.levelno)


_SERVER_LOGGER.addFilter(_ClientErrorsAreNotErrors())


class ConnectionGuard:
    """Counts a server's connections and closes those past the cap or the deadline."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.open = 0
        self.refused = 0
        self.timed_out = 0
        self._waiting: dict[RequestHandler, asyncio.TimerHandle] = {}

    def opened(self, handler: RequestHandler) -> None:
        self.open += 1
        if self.open > self.limits.max_connections:
            self.refused += 1
            handler.force_close()
            return
        loop = asyncio.get_running_loop()
        self._waiting[handler] = loop.call_later(
            self.limits.request_timeout_s, self._deadline, handler
        )

    def request_started(self, handler: RequestHandler) -> None:
        timer = self._waiting.pop(handler, None)
        if timer is not None:
            timer.cancel()

    def closed(self, handler: RequestHandler) -> None:
        self.open -= 1
        self.request_started(handler)

    def _deadline(self, handler: RequestHandler) -> None:
        if self._waiting.pop(handler, None) is not None:
            self.timed_out += 1
            handler.force_close()


class ServiceRunner(web.AppRunner):
    """`web.AppRunner` with the connection bounds of the app's `Limits`."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        limits = app.get(LIMITS, Limits())
        kwargs.setdefault("keepalive_timeout", limits.keepalive_timeout_s)
        kwargs.setdefault("logger", _SERVER_LOGGER)
        kwargs["auto_decompress"] = False
        app[DECOMPRESS_HERE] = True
        super().__init__(app, **kwargs)
        self.guard = ConnectionGuard(limits)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        guard = self.guard
        # aiohttp's server is told of each connection (connection_made/lost) and builds
        # each request (request_factory) once its head is complete: the guard hears both.
        made, lost, make_request = (
            server.connection_made,
            server.connection_lost,
            server.request_factory,
        )

        def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
            made(handler, transport)
            guard.opened(handler)

        def connection_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
            guard.closed(handler)
            lost(handler, exc)

        def request_factory(*args: Any, **kwargs: Any) -> web.BaseRequest:
            guard.request_started(args[2])  # (message, payload, protocol, writer, task)
            return make_request(*args, **kwargs)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]
        server.request_factory = request_factory
        return server
