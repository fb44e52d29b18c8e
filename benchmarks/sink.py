"""A receiver that parses every batch and acks each event: the benchmarks' target.

Runs in its own process (`python -m benchmarks.sink PORT`) so its work does not share
the sender's event loop or GIL. Prints "ready" once listening. `GET /api/v1/health`
answers how many events arrived and how many distinct event ids among them
(`distinct_ids` reads the latter): the benchmarks count what was delivered here, at the
receiver, not from the sender's own metrics. An event is counted before its batch is
answered, so once the sender has its answer the count holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from custom_components.ha_ingestor.pipeline.envelope import BATCH_PATH, HEALTH_PATH


@dataclass
class Counts:
    received: int = 0
    ids: set[str] = field(default_factory=set)


COUNTS = web.AppKey("counts", Counts)
DELAY = web.AppKey("delay", float)  # seconds before each batch is answered


async def _batch(request: web.Request) -> web.Response:
    events = orjson.loads(await request.read())["events"]
    if request.app[DELAY]:
        await asyncio.sleep(request.app[DELAY])
    counts = request.app[COUNTS]
    counts.received += len(events)
    counts.ids.update(event["event_id"] for event in events)
    results = [{"event_id": event["event_id"], "status": "stored"} for event in events]
    return web.Response(
        body=orjson.dumps({"success": True, "results": results}),
        content_type="application/json",
    )


async def _health(request: web.Request) -> web.Response:
    counts = request.app[COUNTS]
    return web.json_response({"received": counts.received, "unique": len(counts.ids)})


async def main(port: int, delay: float = 0.0) -> None:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[COUNTS] = Counts()
    app[DELAY] = delay
    app.router.add_post(BATCH_PATH, _batch)
    app.router.add_get(HEALTH_PATH, _health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    # Stop by itself when the parent closes our stdin (or after an hour at most).
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.read), timeout=3600)
    await runner.cleanup()
    counts = app[COUNTS]
    print(orjson.dumps({"received": counts.received, "unique": len(counts.ids)}).decode())


def distinct_ids(url: str) -> int:
    """How many distinct event ids the sink at ``url`` has received so far."""
    with urllib.request.urlopen(url + HEALTH_PATH, timeout=10) as answer:
        count: int = orjson.loads(answer.read())["unique"]
        return count


@contextlib.contextmanager
def running_sink(
    port: int, on_exit: Callable[[dict[str, int]], None] | None = None, delay: float = 0.0
) -> Iterator[str]:
    """Start this sink in its own process on ``port``; yields its base URL. It answers
    each batch after ``delay`` seconds (a slow target).

    ``on_exit`` gets the sink's final counts (received, unique) once it has stopped:
    everything it took, also what arrived after the last health read.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.sink", str(port), str(delay)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("the sink did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        assert process.stdin is not None
        process.stdin.close()  # the sink stops when its stdin closes
        try:
            last = process.stdout.read().strip().splitlines() if process.stdout else []
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            last = []
        if on_exit is not None and last:
            on_exit(orjson.loads(last[-1]))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.0))
