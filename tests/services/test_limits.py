"""The bounds of the HTTP surface (limits.py, connections.py) through real sockets."""

from __future__ import annotations

import asyncio
import logging
import tracemalloc
import zlib
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest

from ha_ingestor_services.connections import ServiceRunner
from ha_ingestor_services.limits import Limits
from ha_ingestor_services.web import create_app

from .conftest import AUTH, TOKEN, Serve
from .test_web import RecordingService, assert_error, envelope

BATCH = "/api/v1/events/batch"
JSON_AUTH = {**AUTH, "Content-Type": "application/json"}


async def start(serve: Serve, service: RecordingService, **limits: Any) -> tuple[str, int]:
    url = await serve(create_app(service, token=TOKEN, limits=Limits(**limits)))
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server closes the connection (EOF or reset) within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(1024):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def raw_request(host: str, port: int, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head + b"\r\n" + body)
        await writer.drain()
        answer = await reader.read()  # every request here says Connection: close
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


# -- connections ------------------------------------------------------------------------


async def test_idle_and_slow_header_connections_are_closed_after_the_bound(
    serve: Serve,
) -> None:
    host, port = await start(serve, RecordingService(), request_timeout_s=0.5)
    idle = await asyncio.open_connection(host, port)
    slow = await asyncio.open_connection(host, port)
    slow[1].write(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")  # never the blank line
    for _ in range(3):  # ... and one more header line now and then
        await asyncio.sleep(0.1)
        slow[1].write(b"X-Slow: 1\r\n")
    assert await closed_within(idle[0], 1.5)
    assert await closed_within(slow[0], 1.5)
    for _, writer in (idle, slow):
        writer.close()


async def test_idle_keep_alive_is_closed_after_the_bound(serve: Serve) -> None:
    host, port = await start(serve, RecordingService(), keepalive_timeout_s=0.5)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    writer.write(b"GET /api/v1/health HTTP/1.1\r\n")  # the next head, never finished
    assert await closed_within(reader, 2.5)  # aiohttp's timer has a coarse clock
    writer.close()


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One whole response (its status line and body) off a kept-alive connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head.partition(b"\r\n")[0] + b" " + await reader.readexactly(length)


async def test_a_complete_request_in_time_is_served(serve: Serve) -> None:
    host, port = await start(serve, RecordingService(), request_timeout_s=0.5)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
    await asyncio.sleep(0.8)  # past the first request's bound: keep-alive rules now
    writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_connections_past_the_cap_are_not_kept(serve: Serve) -> None:
    host, port = await start(serve, RecordingService(), max_connections=5)
    kept = [await asyncio.open_connection(host, port) for _ in range(5)]
    for reader, writer in kept:  # an answer: the server has surely counted it
        writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
    extra = [await asyncio.open_connection(host, port) for _ in range(5)]
    for reader, _ in extra:
        assert await closed_within(reader, 1.0)
    for reader, _ in kept:
        assert not await closed_within(reader, 0.05)
    for _, writer in kept + extra:
        writer.close()
    await asyncio.sleep(0.05)
    # Once the kept ones are gone, a new connection is served again.
    status, _ = await raw_request(
        host, port, b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    )
    assert status == 200


def test_the_runner_applies_the_apps_limits() -> None:
    app = create_app(RecordingService(), token=TOKEN, limits=Limits(max_connections=7))
    assert ServiceRunner(app).guard.limits.max_connections == 7


# -- bodies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/json", 200),
        ("application/json; charset=utf-8", 200),
        ("application/vnd.ha-ingestor+json", 200),
        ("text/plain", 415),
        ("application/x-www-form-urlencoded", 415),
        ("application/octet-stream", 415),
        (None, 415),
    ],
)
async def test_a_body_must_be_sent_as_json(
    serve: Serve, content_type: str | None, status: int
) -> None:
    service = RecordingService()
    host, port = await start(serve, service)
    body = orjson.dumps({"events": [envelope()]})
    header = b"" if content_type is None else f"Content-Type: {content_type}\r\n".encode()
    for path in (BATCH, "/api/v1/events"):
        sent = body if path == BATCH else orjson.dumps(envelope())
        answer_status, answer = await raw_request(
            host,
            port,
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Length: {len(sent)}\r\nConnection: close\r\n".encode()
            + header,
            sent,
        )
        assert answer_status == status, answer
        if status == 415:
            assert_error(orjson.loads(answer), "UNSUPPORTED_MEDIA_TYPE")
    assert len(service.received) == (2 if status == 200 else 0)


def _bomb(unpacked_mib: int) -> bytes:
    """A gzip body of a JSON start and then zeros: ~1 MiB that unpacks to ``unpacked_mib``."""
    packer = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [packer.compress(b'{"events": ["')]
    zeros = b"0" * (1024 * 1024)
    parts += [packer.compress(zeros) for _ in range(unpacked_mib)]
    parts.append(packer.flush())
    return b"".join(parts)


async def test_a_gzip_bomb_is_refused_in_bounded_memory(
    serve: Serve, client: aiohttp.ClientSession
) -> None:
    service = RecordingService()
    host, port = await start(serve, service, max_body_bytes=16 * 1024 * 1024)
    bomb = _bomb(1024)  # 1 GiB unpacked
    assert len(bomb) < 1.1 * 1024 * 1024
    tracemalloc.start()  # the server runs in this process: its peak allocation counts
    async with client.post(
        f"http://{host}:{port}{BATCH}",
        data=bomb,
        headers={**JSON_AUTH, "Content-Encoding": "gzip"},
    ) as answer:
        assert answer.status == 413
        assert_error(await answer.json(), "PAYLOAD_TOO_LARGE")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # A little more than the 16 MiB limit at the peak (unbounded: hundreds of MiB).
    assert peak < 40 * 1024 * 1024, peak / 1024 / 1024
    assert service.received == []


@pytest.mark.parametrize(
    ("encoding", "body", "status"),
    [
        ("gzip", b"not gzip at all", 400),
        ("gzip", _bomb(0)[:10], 400),  # cut short
        ("gzip", _bomb(0) + b"trailing", 400),
        ("br", b"{}", 415),
    ],
)
async def test_bad_compressed_bodies_are_4xx(
    serve: Serve, client: aiohttp.ClientSession, encoding: str, body: bytes, status: int
) -> None:
    host, port = await start(serve, RecordingService())
    async with client.post(
        f"http://{host}:{port}{BATCH}",
        data=body,
        headers={**JSON_AUTH, "Content-Encoding": encoding},
    ) as answer:
        assert answer.status == status


async def test_deflate_and_gzip_bodies_are_read(
    serve: Serve, client: aiohttp.ClientSession
) -> None:
    service = RecordingService()
    host, port = await start(serve, service)
    raw = orjson.dumps({"events": [envelope("z")]})
    for encoding, wbits in (("gzip", 16 + zlib.MAX_WBITS), ("deflate", zlib.MAX_WBITS)):
        packer = zlib.compressobj(6, zlib.DEFLATED, wbits)
        async with client.post(
            f"http://{host}:{port}{BATCH}",
            data=packer.compress(raw) + packer.flush(),
            headers={**JSON_AUTH, "Content-Encoding": encoding},
        ) as answer:
            assert answer.status == 200, encoding
    assert len(service.received) == 2


async def test_a_body_that_does_not_arrive_in_time_is_408(serve: Serve) -> None:
    host, port = await start(serve, RecordingService(), body_timeout_s=0.3)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"POST {BATCH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
    )
    assert (await reader.readline()).startswith(b"HTTP/1.1 408")
    # aiohttp reads the rest of a body it answered early for up to 10 s (lingering):
    # send it, so the connection's handler is done before the server stops.
    writer.write(b" " * 99)
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.close()


# -- concurrency ------------------------------------------------------------------------


class SlowService(RecordingService):
    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.waiting = 0

    async def process(self, envelopes: list[dict[str, Any]], correlation_id: str) -> Any:
        self.waiting += 1
        await self.release.wait()
        return await super().process(envelopes, correlation_id)


async def test_requests_past_the_concurrency_cap_are_503_with_retry_after(
    serve: Serve, client: aiohttp.ClientSession
) -> None:
    service = SlowService()
    host, port = await start(serve, service, max_concurrent_requests=3)
    url = f"http://{host}:{port}{BATCH}"

    async def post(event_id: str) -> tuple[int, str | None]:
        body = orjson.dumps({"events": [envelope(event_id)]})
        async with client.post(url, data=body, headers=JSON_AUTH) as answer:
            return answer.status, answer.headers.get("Retry-After")

    inside = [asyncio.create_task(post(f"in-{n}")) for n in range(3)]
    while service.waiting < 3:
        await asyncio.sleep(0.01)
    assert await post("one-more") == (503, "1")
    service.release.set()
    assert [status for status, _ in await asyncio.gather(*inside)] == [200] * 3
    assert (await post("after"))[0] == 200


# -- no 500 from any input --------------------------------------------------------------


async def test_control_characters_in_the_body_correlation_id_are_422(
    serve: Serve, client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    service = RecordingService()
    host, port = await start(serve, service)
    for bad in ("a\r\nX-Injected: 1", "tab\there", "x" * 129, ""):
        body = orjson.dumps({"events": [envelope()], "correlation_id": bad})
        async with client.post(
            f"http://{host}:{port}{BATCH}", data=body, headers=JSON_AUTH
        ) as answer:
            assert answer.status == 422, bad
            assert "X-Injected" not in answer.headers
            assert (await answer.json())["error"]["details"]["field"] == "correlation_id"
    assert service.received == []
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_a_request_aiohttp_cannot_parse_is_400_without_a_traceback(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = await start(serve, RecordingService())
    status, _ = await raw_request(
        host,
        port,
        b"GET /api/v1/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\x01en\r\n",
    )
    assert status == 400
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert not [record for record in caplog.records if record.exc_info]


@pytest.mark.parametrize(
    "value",
    [b"Bearer \xff\xfe\x80", b"\xc3\x28", b"Bearer \xe2\x82", b"Bearer "],
)
async def test_junk_in_the_authorization_header_is_401(
    serve: Serve, value: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = await start(serve, RecordingService())
    for path in (b"/api/v1/stats", b"/api/v1/health"):
        status, answer = await raw_request(
            host,
            port,
            b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nAuthorization: " + value + b"\r\n"
            b"Connection: close\r\n",
        )
        if path == b"/api/v1/health":
            assert status == 200
            # The open answer: no details, whatever the header held.
            assert set(orjson.loads(answer)) == {
                "status",
                "service",
                "service_id",
                "role",
                "api_version",
                "token_required",
            }
        else:
            assert status == 401
            assert_error(orjson.loads(answer), "UNAUTHORIZED")
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
