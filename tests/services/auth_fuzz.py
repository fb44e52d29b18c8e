"""Fuzzing the Authorization header of either service (both fuzz tests use it).

Any bytes (not UTF-8, control characters, other schemes, near-miss tokens) are sent as
the header's value through a raw socket, since HTTP clients refuse to send most of
them. Never a 5xx, never an ERROR or a traceback in the log, and never a way in.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import TOKEN

_token = TOKEN.encode()
# CR and LF end the header line: they are framing, not part of a value.
_byte = st.binary(max_size=40).map(lambda value: value.replace(b"\r", b"").replace(b"\n", b""))
VALUES = st.one_of(
    _byte,
    _byte.map(lambda value: b"Bearer " + value),
    _byte.map(lambda value: b"Bearer " + _token + value),
    _byte.map(lambda value: b"Bearer " + value + _token),
    st.sampled_from([b"Bearer", b"bearer  ", b"Basic " + _token, _token, b"Bearer \xff" + _token]),
    st.text(max_size=30).map(
        lambda text: b"Bearer " + text.encode("utf-8", "surrogatepass").replace(b"\r\n", b"")
    ),
)
PATHS = ["/api/v1/stats", "/api/v1/health", "/api/v1/events/batch", "/metrics", "/"]


def draw_values(count: int) -> list[bytes]:
    drawn: list[bytes] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(VALUES)
    def collect(value: bytes) -> None:
        drawn.append(value.replace(b"\r", b"").replace(b"\n", b""))

    collect()
    return drawn


async def _send(host: str, port: int, path: str, authorization: bytes) -> int:
    body = b'{"events": []}' if path.endswith("batch") else b""
    method = b"POST" if body else b"GET"
    head = (
        method + b" " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n"
        b"Authorization: " + authorization + b"\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head + body)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
    return int(answer.split(b" ", 2)[1])


async def fuzz_authorization(url: str, caplog: pytest.LogCaptureFixture, count: int) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port
    assert host is not None
    assert port is not None
    seen: dict[int, int] = {}
    for value in draw_values(count):
        for path in PATHS:
            status = await _send(host, port, path, value)
            seen[status] = seen.get(status, 0) + 1
            assert status < 500, (path, value, status)
            if path in ("/api/v1/stats", "/metrics") and status == 200:
                # Only the exact token gets in (hmac.compare_digest on the stripped value).
                assert value.split(b" ", 1)[1].strip() == _token, value
    errors: list[Any] = [
        record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info
    ]
    assert not errors, errors[:3]
    assert {400, 401, 403} <= set(seen), seen  # the cases reach every answer
