"""A measuring proxy in front of influxd: the same instrument for every writer.

``python -m benchmarks.influx_tap PORT INFLUXD_URL`` listens on 127.0.0.1:PORT, prints
"ready", and passes every request on to influxd unchanged. For each ``/write`` that
influxd accepts it reads the line protocol: each point's own timestamp (the state
change's time, in the request's ``precision``) against the moment the point arrived
here gives its latency. ``GET /tap/points?db=NAME&since=T`` answers the points of that
database that arrived since wall time ``T``: ``[[arrived, latency_s], ...]``;
``GET /tap/count?db=NAME`` only how many arrived in all (cheap enough to poll).
``POST /tap/outage?seconds=S`` makes the tap refuse connections for S seconds, as if
influxd were down (its listener closes, and a connection kept alive is reset). The tap stops
when its stdin closes.
"""

from __future__ import annotations

import asyncio
import gzip
import sys
import time
from collections import defaultdict

import aiohttp
import orjson
from aiohttp import web

_SCALE = {"n": 1e-9, "ns": 1e-9, "u": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
ARRIVALS = web.AppKey("arrivals", defaultdict)
UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)
OUTAGE = web.AppKey("outage", asyncio.Event)
OUTAGE_S = web.AppKey("outage_s", list)  # [seconds asked for, monotonic end]


def point_times(body: bytes, precision: str) -> list[float]:
    """The timestamps (seconds) of the points of a line protocol body that carry one."""
    scale = _SCALE.get(precision or "n", 1e-9)
    times: list[float] = []
    for raw in body.splitlines():
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        _, _, last = line.rpartition(b" ")
        if last.isdigit():  # a string field ends with a quote, never a digit-only token
            times.append(int(last) * scale)
    return times


async def _proxy(request: web.Request) -> web.StreamResponse:
    if time.monotonic() < request.app[OUTAGE_S][1]:
        # Away: a connection kept alive from before is reset, as a stopped influxd would.
        if request.transport is not None:
            request.transport.abort()
        raise web.HTTPServiceUnavailable
    body = await request.read()
    session = request.app[SESSION]
    headers = {
        k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
    }
    async with session.request(
        request.method,
        request.app[UPSTREAM] + request.path_qs,
        data=body,
        headers=headers,
        allow_redirects=False,
    ) as upstream:
        payload = await upstream.read()
        status = upstream.status
        passed = {
            k: v
            for k, v in upstream.headers.items()
            if k.lower()
            not in ("content-length", "transfer-encoding", "content-encoding", "connection")
        }
    if request.path == "/write" and status == 204:
        arrived = time.time()
        database = request.query.get("db", "")
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        times = point_times(body, request.query.get("precision", "n"))
        request.app[ARRIVALS][database].extend((arrived, arrived - t) for t in times)
    return web.Response(status=status, body=payload, headers=passed)


async def _points(request: web.Request) -> web.Response:
    since = float(request.query.get("since", "0"))
    rows = [row for row in request.app[ARRIVALS][request.query.get("db", "")] if row[0] >= since]
    return web.Response(body=orjson.dumps(rows), content_type="application/json")


async def _count(request: web.Request) -> web.Response:
    return web.json_response({"count": len(request.app[ARRIVALS][request.query.get("db", "")])})


async def _outage(request: web.Request) -> web.Response:
    request.app[OUTAGE].set()
    seconds = float(request.query.get("seconds", "20"))
    request.app[OUTAGE_S][:] = [seconds, time.monotonic() + 0.2 + seconds]
    return web.json_response({"ok": True})


async def main(port: int, upstream: str) -> None:
    app = web.Application(client_max_size=256 * 1024 * 1024)
    app[ARRIVALS] = defaultdict(list)
    app[UPSTREAM] = upstream.rstrip("/")
    app[OUTAGE] = asyncio.Event()
    app[OUTAGE_S] = [0.0, 0.0]
    app.router.add_get("/tap/points", _points)
    app.router.add_get("/tap/count", _count)
    app.router.add_post("/tap/outage", _outage)
    app.router.add_route("*", "/{tail:.*}", _proxy)
    async with aiohttp.ClientSession() as session:
        app[SESSION] = session
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        stdin_closed = loop.run_in_executor(None, sys.stdin.read)
        while not stdin_closed.done():
            outage = asyncio.ensure_future(app[OUTAGE].wait())
            await asyncio.wait({outage, stdin_closed}, return_when=asyncio.FIRST_COMPLETED)
            if not outage.done():
                outage.cancel()
                break
            app[OUTAGE].clear()
            await asyncio.sleep(0.2)  # the control request gets its answer first
            await site.stop()
            await asyncio.sleep(app[OUTAGE_S][0])
            site = web.TCPSite(runner, "127.0.0.1", port)
            await site.start()
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
