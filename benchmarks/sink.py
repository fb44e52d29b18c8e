"""A receiver that parses every batch and acks each event: the forward benchmark's target.

Runs in its own process (`python -m benchmarks.sink PORT`) so its work does not share
the forwarder's event loop or GIL. Prints "ready" once listening.
"""

from __future__ import annotations

import asyncio
import sys

import orjson
from aiohttp import web

RECEIVED = web.AppKey("received", list[int])


async def _batch(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    events = body["events"]
    request.app[RECEIVED][0] += len(events)
    results = [{"event_id": event["event_id"], "status": "stored"} for event in events]
    return web.Response(
        body=orjson.dumps({"success": True, "results": results}),
        content_type="application/json",
    )


async def _count(request: web.Request) -> web.Response:
    return web.json_response({"received": request.app[RECEIVED][0]})


async def main(port: int) -> None:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[RECEIVED] = [0]  # a mutable cell: the app's own state is frozen once started
    app.router.add_post("/api/v1/events/batch", _batch)
    app.router.add_get("/api/v1/health", _count)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    # Stop by itself when the parent closes our stdin (or after an hour at most).
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.read), timeout=3600)
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
