"""A fault-injecting reverse proxy in front of the services, in its own process.

``python -m tests.e2e.fault_proxy LISTEN_PORT=UPSTREAM_URL ...`` listens on 127.0.0.1 on
each port, passes every request on to that port's upstream unchanged and prints
"ready". One switch, shared by every port, faults the event requests (the events paths
of `tests.pipeline.fault_server`; health and stats always pass) for a while. Commands
come one per line on stdin, each answered with one line on stdout:

- ``fault KIND SECONDS [ARG]``: every event request for SECONDS gets KIND:
  ``503`` (answered 503 with ``Retry-After: ARG``), ``500``, ``reset`` (the connection
  is dropped before the request reaches the service), ``delay`` (passed on after ARG
  seconds) or ``lost_answer`` (passed on, the service stores the batch and answers, then
  the connection is dropped instead of returning the answer); answers ``ok``;
- ``stats``: a JSON line, ``{"passed": n, "delivered": n, "<kind>": n, ...}``
  (requests per fate: ``passed`` counts every request passed on, health checks too;
  ``delivered`` only event requests the service answered with a 2xx).

Whether delivery is back after a fault is `delivery_back`: a batch was accepted. Health
checks pass all along (they are never faulted), so a request that merely passed says
nothing about the integration's delivery: after a fault of error answers it may still be
backing off for many seconds, and a fault begun then meets that backoff, not requests.

The proxy stops when its stdin closes, so it never outlives the test that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp
import orjson
from aiohttp import web

from tests.pipeline.fault_server import EVENT_PATHS, FaultKind

HOST = "127.0.0.1"
KINDS = ("503", "500", "reset", "delay", "lost_answer")
DELIVERED = "delivered"
# Not passed on: the connection's own, and what aiohttp recomputes for the body it sends.
_HOP_HEADERS = frozenset(
    ("host", "content-length", "transfer-encoding", "connection", "keep-alive")
)


@dataclass
class Switch:
    """The fault in force (until ``until``, monotonic) and what happened to requests."""

    kind: str = ""
    arg: float = 0.0
    until: float = 0.0
    counts: Counter[str] = field(default_factory=Counter)

    def current(self) -> str:
        return self.kind if time.monotonic() < self.until else ""

    def set(self, kind: str, seconds: float, arg: float = 0.0) -> None:
        """``kind`` for the next ``seconds`` (0 ends the fault in force)."""
        self.kind, self.arg, self.until = kind, arg, time.monotonic() + seconds


def delivery_back(before: Mapping[str, int], now: Mapping[str, int]) -> bool:
    """Whether a batch was accepted between two ``stats``: the integration's delivery
    is back (its failure count, and so its backoff, starts over)."""
    return now.get(DELIVERED, 0) > before.get(DELIVERED, 0)


SWITCH = web.AppKey("switch", Switch)
UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)


def _error(status: int, retry_after: float | None = None) -> web.Response:
    """An error answer in the services' shape (a client reads its code and Retry-After)."""
    headers = {"Retry-After": str(round(retry_after))} if retry_after is not None else None
    body = {"success": False, "error": {"code": f"HTTP_{status}", "message": "injected"}}
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


async def _forward(request: web.Request, body: bytes) -> web.Response:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
    async with request.app[SESSION].request(
        request.method,
        request.app[UPSTREAM] + request.path_qs,
        data=body,
        headers=headers,
        allow_redirects=False,
    ) as upstream:
        payload = await upstream.read()
        passed = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}
        return web.Response(status=upstream.status, body=payload, headers=passed)


def _drop(request: web.Request) -> web.Response:
    """Drop the client's connection; aiohttp discards the answer returned after it."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)


async def _proxy(request: web.Request) -> web.StreamResponse:
    switch = request.app[SWITCH]
    kind = switch.current() if request.path in EVENT_PATHS else ""
    if kind == FaultKind.RESET:
        await request.content.read(16)  # the request has begun, then the line goes dead
        switch.counts[kind] += 1
        return _drop(request)
    body = await request.read()
    if kind in ("503", "500"):
        switch.counts[kind] += 1
        return _error(int(kind), switch.arg if kind == "503" else None)
    if kind == FaultKind.DELAY:
        switch.counts[kind] += 1
        await asyncio.sleep(switch.arg)
    try:
        answer = await _forward(request, body)
    except aiohttp.ClientError:
        # The service is down (a kill in the test): the client sees what it would see.
        switch.counts["upstream_down"] += 1
        return _drop(request)
    if kind == "lost_answer":
        switch.counts[kind] += 1
        return _drop(request)
    switch.counts["passed"] += 1
    if request.path in EVENT_PATHS and 200 <= answer.status < 300:
        switch.counts[DELIVERED] += 1
    return answer


def _command(switch: Switch, line: str) -> str:
    words = line.split()
    if words[:1] == ["stats"]:
        return orjson.dumps(dict(switch.counts)).decode()
    if words[:1] == ["fault"] and len(words) >= 3 and words[1] in KINDS:
        switch.set(words[1], float(words[2]), float(words[3]) if len(words) > 3 else 0.0)
        return "ok"
    return f"error: {line!r}"


def proxy_app(switch: Switch, upstream: str, session: aiohttp.ClientSession) -> web.Application:
    """The proxy of one port: every request on to ``upstream``, event requests faulted
    as ``switch`` says. ``session`` must not decompress (bodies pass as they are)."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[SWITCH], app[UPSTREAM], app[SESSION] = switch, upstream.rstrip("/"), session
    app.router.add_route("*", "/{tail:.*}", _proxy)
    return app


async def main(mappings: list[str]) -> None:
    switch = Switch()
    runners: list[web.AppRunner] = []
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for mapping in mappings:
            port, upstream = mapping.split("=", 1)
            runner = web.AppRunner(proxy_app(switch, upstream, session), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, HOST, int(port)).start()
            runners.append(runner)
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        try:
            while line := await loop.run_in_executor(None, sys.stdin.readline):
                print(_command(switch, line), flush=True)
        finally:
            for runner in runners:
                with contextlib.suppress(Exception):
                    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
