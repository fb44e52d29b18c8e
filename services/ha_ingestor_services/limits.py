"""The bounds of the services' HTTP surface: body size and type, time, concurrency.

`Limits` holds them all; `read_body` reads a request body within them: a JSON
Content-Type (else 415), at most ``max_body_bytes`` before and after decompression
(else 413), a gzip or deflate body unpacked here in bounded steps, so a small body that
unpacks to gigabytes costs at most one step of memory past the limit, and the whole
body within ``body_timeout_s`` (else 408). `RequestGate` caps the POST requests in
progress (503 with Retry-After past it). The connection bounds are applied by
`connections.ServiceRunner`.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from aiohttp import web

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_BATCH_EVENTS = 5000

# Bytes read from the socket, and at most unpacked, in one step.
STEP_BYTES = 64 * 1024

# Set by connections.ServiceRunner, which turns aiohttp's own decompression off: without
# it (a plain AppRunner) the body arrives already unpacked by aiohttp.
DECOMPRESS_HERE = web.AppKey("ha_ingestor_decompress_here", bool)

# zlib's window bits: gzip wrapper, or zlib wrapper (HTTP's "deflate").
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # also after decompression
    max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS
    max_concurrent_requests: int = 64  # POSTs in progress; past it 503 with Retry-After
    max_connections: int = 256  # open connections; one more is closed at once
    # A new connection must have sent a complete request head within this time.
    request_timeout_s: float = 10.0
    # Idle between requests (also: the next request's head must be in by then). Longer
    # than aiohttp's client keep-alive (15 s), so clients close first and never reuse a
    # connection the server is closing.
    keepalive_timeout_s: float = 30.0
    body_timeout_s: float = 60.0  # the whole body, once the head is in


class BodyError(Exception):
    """A body outside the limits; web.py answers it in the standard error format."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def is_json(content_type: str) -> bool:
    """``application/json`` or a structured ``application/<x>+json`` (RFC 6839)."""
    main, _, sub = content_type.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


def _too_large(limit: int) -> BodyError:
    return BodyError(413, "PAYLOAD_TOO_LARGE", f"request body is over the limit of {limit} bytes")


async def read_body(request: web.Request, limits: Limits) -> bytes:
    """The request's body, unpacked, within the limits (raises `BodyError`)."""
    if not is_json(request.content_type):
        raise BodyError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            f"Content-Type {request.content_type!r} is not JSON; send application/json",
        )
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if not request.app.get(DECOMPRESS_HERE, False):
        encoding = "identity"  # aiohttp has unpacked it already
    elif encoding not in _WBITS and encoding != "identity":
        raise BodyError(
            415, "UNSUPPORTED_MEDIA_TYPE", f"Content-Encoding {encoding!r}: use gzip or none"
        )
    try:
        async with asyncio.timeout(limits.body_timeout_s):
            if encoding == "identity":
                return await _read_plain(request, limits.max_body_bytes)
            return await _read_packed(request, limits.max_body_bytes, _WBITS[encoding])
    except TimeoutError:
        raise BodyError(
            408, "REQUEST_TIMEOUT", f"the body did not arrive within {limits.body_timeout_s} s"
        ) from None


async def _read_plain(request: web.Request, limit: int) -> bytes:
    body = bytearray()
    async for chunk in request.content.iter_chunked(STEP_BYTES):
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


async def _read_packed(request: web.Request, limit: int, wbits: int) -> bytes:
    decompressor = zlib.decompressobj(wbits)
    body = bytearray()
    received = 0
    try:
        async for chunk in request.content.iter_chunked(STEP_BYTES):
            received += len(chunk)
            if received > limit or decompressor.eof:
                raise _too_large(limit) if received > limit else _trailing()
            data = chunk
            while data:
                # At most one step of output per call: a bomb stops at the limit.
                body += decompressor.decompress(data, STEP_BYTES)
                if len(body) > limit:
                    raise _too_large(limit)
                data = decompressor.unconsumed_tail
        body += decompressor.flush()
    except zlib.error as err:
        raise BodyError(400, "BAD_REQUEST", f"the compressed body is not valid: {err}") from None
    if not decompressor.eof:
        raise BodyError(400, "BAD_REQUEST", "the compressed body is cut short")
    if decompressor.unused_data:
        raise _trailing()
    if len(body) > limit:
        raise _too_large(limit)
    return bytes(body)


def _trailing() -> BodyError:
    return BodyError(400, "BAD_REQUEST", "data after the end of the compressed body")


class RequestGate:
    """At most ``limit`` requests inside at once; one more is refused, not queued."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inside = 0
        self.refused = 0

    @contextmanager
    def enter(self) -> Iterator[bool]:
        """Yields whether the request may go on."""
        if self.inside >= self.limit:
            self.refused += 1
            yield False
            return
        self.inside += 1
        try:
            yield True
        finally:
            self.inside -= 1
