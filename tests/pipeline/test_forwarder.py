"""EventForwarder against real receivers on 127.0.0.1 (FaultServer) and a real outbox."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from aiohttp import web

from custom_components.ha_ingestor.pipeline.circuit_breaker import BreakerConfig, BreakerState
from custom_components.ha_ingestor.pipeline.forwarder import (
    EventForwarder,
    ForwarderConfig,
    ForwarderState,
)
from custom_components.ha_ingestor.pipeline.http_client import Timeouts
from custom_components.ha_ingestor.pipeline.retry import BackoffPolicy
from tests.pipeline.fakes import FakeClock
from tests.pipeline.fault_server import REJECT_MARKER, Fault, FaultServer
from tests.pipeline.forwarding import FAST_BREAKER, Harness, event, numbers

if TYPE_CHECKING:
    from pathlib import Path

    import aiohttp


async def test_delivers_envelopes_in_order(harness: Harness, fault_server: FaultServer) -> None:
    forwarder = harness.forwarder(harness.route("storage", fault_server), batch_size=7)
    harness.outbox.append_many(event(n) for n in range(50))

    assert (await forwarder.flush(timeout=10)).done

    assert numbers(fault_server) == list(range(50))
    first = fault_server.received[0]
    assert first["source"] == "ha_ingestor"
    assert first["timestamp"] == "2026-11-26T19:00:00Z"
    assert first["data"]["entity_id"] == "sensor.s0"
    assert all(len(request.event_ids) <= 7 for request in fault_server.requests)
    # Every batch carries an idempotency key derived from its events.
    keys = [request.idempotency_key for request in fault_server.requests]
    assert all(keys)
    assert len(set(keys)) == len(keys)
    assert forwarder.metrics.get("delivered") == 50
    assert forwarder.metrics.latency.percentile(99) is not None
    assert (await harness.outbox.stats()).pending == 0


async def test_linger_lets_a_batch_fill(harness: Harness, fault_server: FaultServer) -> None:
    forwarder = harness.forwarder(harness.route("storage", fault_server), linger=0.2)
    for n in range(20):
        harness.outbox.append(event(n))
    await fault_server.wait_for_stored(20)
    assert len(fault_server.requests) == 1
    assert (await forwarder.flush(timeout=5)).done


async def test_no_linger_once_a_whole_batch_waits_even_unstored(
    harness: Harness, fault_server: FaultServer
) -> None:
    """In a burst the outbox's worker stores the appended events in short steps: its
    ready count alone would make the forwarder linger with a full batch waiting."""
    outbox = harness.outbox
    outbox.append_many(event(n) for n in range(5))
    async with asyncio.timeout(5):
        while outbox.ready_hint() < 5:
            await asyncio.sleep(0.01)
    blocking, worker_busy = threading.Event(), threading.Event()

    def block() -> None:
        blocking.set()
        worker_busy.wait()

    outbox._submit(block)  # the worker is busy: what follows stays unstored
    assert await asyncio.to_thread(blocking.wait, 5)
    outbox.append_many(event(n) for n in range(5, 35))
    assert outbox.ready_hint() == 5
    assert outbox.waiting_hint() == 35
    forwarder = harness.forwarder(harness.route("storage", fault_server), batch_size=20, linger=30)
    await asyncio.sleep(0.2)  # the forwarder decides meanwhile whether to linger
    worker_busy.set()
    await asyncio.wait_for(fault_server.wait_for_stored(20), 5)
    assert len(fault_server.requests[0].event_ids) == 20
    assert (await forwarder.flush(timeout=5)).done


async def test_a_batch_filling_during_the_linger_goes_at_once(
    harness: Harness, fault_server: FaultServer
) -> None:
    forwarder = harness.forwarder(harness.route("storage", fault_server), batch_size=20, linger=30)
    harness.outbox.append(event(0))
    await asyncio.sleep(0.3)  # lingering: one event waits
    assert not fault_server.requests
    for n in range(1, 20):
        harness.outbox.append(event(n))
    await asyncio.wait_for(fault_server.wait_for_stored(20), 5)
    assert [len(request.event_ids) for request in fault_server.requests] == [20]
    assert (await forwarder.flush(timeout=5)).done


async def test_rejected_events_become_dead_letters(
    harness: Harness, fault_server: FaultServer
) -> None:
    forwarder = harness.forwarder(harness.route("storage", fault_server))
    harness.outbox.append_many(
        event(n, **({REJECT_MARKER: True} if n in (3, 8) else {})) for n in range(10)
    )

    assert (await forwarder.flush(timeout=10)).done

    assert numbers(fault_server) == [0, 1, 2, 4, 5, 6, 7, 9]
    dead = await harness.outbox.list_dead_letters()
    assert [orjson.loads(d.payload)["data"]["attributes"]["n"] for d in dead] == [3, 8]
    assert {(d.reason, d.target) for d in dead} == {("VALIDATION_ERROR", "storage")}
    assert forwarder.metrics.get("dead_lettered") == 2


@pytest.mark.parametrize(
    "fault",
    [
        Fault.answer(500),
        Fault.answer(503, retry_after=1),
        Fault.answer(429, retry_after=1),
        Fault.answer(408),
        Fault.reset(),
        Fault.fail_after_store(503),
    ],
    ids=["500", "503-retry-after", "429", "408", "reset", "stored-then-503"],
)
async def test_retryable_answers_are_retried_in_order(
    harness: Harness, fault_server: FaultServer, fault: Fault
) -> None:
    fault_server.add_faults(fault, fault)
    forwarder = harness.forwarder(harness.route("storage", fault_server), batch_size=4)
    harness.outbox.append_many(event(n) for n in range(12))

    assert (await forwarder.flush(timeout=10)).done

    assert numbers(fault_server) == list(range(12))
    # The failed batch was resent first, with the same idempotency key.
    first_keys = [request.idempotency_key for request in fault_server.requests[:3]]
    assert first_keys[0] == first_keys[1] == first_keys[2]
    assert forwarder.metrics.get("batches_failed") == 2
    assert not await harness.outbox.list_dead_letters()


async def test_timeout_is_retried(harness: Harness, fault_server: FaultServer) -> None:
    fault_server.add_faults(Fault.slow(1.0))
    route = harness.route("storage", fault_server, timeouts=Timeouts(connect=1.0, total=0.2))
    forwarder = harness.forwarder(route)
    harness.outbox.append_many(event(n) for n in range(5))

    assert (await forwarder.flush(timeout=10)).done
    assert numbers(fault_server) == list(range(5))
    assert "storage" in (forwarder.metrics.last_error or "")


async def test_retry_after_is_honoured(harness: Harness, fault_server: FaultServer) -> None:
    fault_server.fail_next(1, 503, retry_after=1)
    forwarder = harness.forwarder(
        harness.route("storage", fault_server),
        backoff=BackoffPolicy(base=0.001, cap=0.3),  # Retry-After 1 s, clamped to 0.3 s
    )
    loop = asyncio.get_running_loop()
    start = loop.time()
    harness.outbox.append(event(0))
    await fault_server.wait_for_stored(1)
    assert loop.time() - start >= 0.25
    assert (await forwarder.flush(timeout=5)).done


async def test_auth_failure_keeps_events_until_reauth(
    harness: Harness, fault_server_factory: Any
) -> None:
    server: FaultServer = await fault_server_factory(token="right")
    route = harness.route("storage", server, token="wrong")
    forwarder = harness.forwarder(route)
    harness.outbox.append_many(event(n) for n in range(5))

    await server.wait_for_requests(1)
    await asyncio.sleep(0.1)
    assert harness.auth_failures == ["storage"]
    assert forwarder.auth_failed == {"storage"}
    assert forwarder.state is ForwarderState.WAITING
    assert len(server.requests) == 1  # no hammering with bad credentials
    assert (await harness.outbox.stats()).pending == 5

    route.client.set_token("right")
    forwarder.clear_auth_failure("storage")
    assert (await forwarder.flush(timeout=5)).done
    assert numbers(server) == list(range(5))


async def test_too_large_batches_are_split(harness: Harness, fault_server_factory: Any) -> None:
    server: FaultServer = await fault_server_factory(max_batch_events=10)
    forwarder = harness.forwarder(harness.route("storage", server), batch_size=64)
    harness.outbox.append_many(event(n) for n in range(100))

    assert (await forwarder.flush(timeout=10)).done

    assert numbers(server) == list(range(100))
    assert forwarder.metrics.get("batches_split") >= 3
    assert not await harness.outbox.list_dead_letters()


async def test_single_event_too_large_is_dead_lettered(
    harness: Harness, fault_server: FaultServer
) -> None:
    fault_server.add_faults(Fault.answer(413))
    forwarder = harness.forwarder(harness.route("storage", fault_server), batch_size=1)
    harness.outbox.append_many(event(n) for n in range(3))

    assert (await forwarder.flush(timeout=10)).done

    assert numbers(fault_server) == [1, 2]
    [dead] = await harness.outbox.list_dead_letters()
    assert dead.reason == "payload_too_large"


class PickyServer(FaultServer):
    """Answers a whole batch with 400 and no per-event results when one event is bad."""

    async def _handle_events(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if b'"poison":true' in body:
            record = self._record(request)
            return self._error(record, 400, "BAD_EVENT", "one event is malformed")
        return await super()._handle_events(request)


async def test_permanent_error_bisects_to_the_bad_event(
    harness: Harness, http_session: aiohttp.ClientSession
) -> None:
    server = PickyServer()
    await server.start()
    try:
        forwarder = harness.forwarder(harness.route("storage", server), batch_size=32)
        harness.outbox.append_many(
            event(n, **({"poison": True} if n == 21 else {})) for n in range(40)
        )

        assert (await forwarder.flush(timeout=10)).done

        assert numbers(server) == [n for n in range(40) if n != 21]
        [dead] = await harness.outbox.list_dead_letters()
        assert orjson.loads(dead.payload)["data"]["attributes"]["n"] == 21
        assert (dead.reason, dead.message, dead.target) == (
            "BAD_EVENT",
            "one event is malformed",
            "storage",
        )
        # Bisection: a handful of requests, not one per event.
        assert len(server.requests) < 20
    finally:
        await server.stop()


async def test_fallback_while_primary_breaker_is_open(
    harness: Harness, fault_server_factory: Any
) -> None:
    enrichment: FaultServer = await fault_server_factory(name="enrichment")
    storage: FaultServer = await fault_server_factory(name="storage")
    primary = harness.route("enrichment", enrichment)
    forwarder = harness.forwarder(primary, harness.route("storage", storage), batch_size=5)

    await enrichment.refuse()
    harness.outbox.append_many(event(n) for n in range(20))
    assert (await forwarder.flush(timeout=10)).done

    assert numbers(storage) == list(range(20))
    assert forwarder.metrics.get("delivered_storage") == 20
    [breaker] = primary.client.breakers.values()
    assert breaker.state is BreakerState.OPEN

    # The primary comes back: once its breaker lets a probe through, traffic returns.
    await enrichment.restore()
    await asyncio.sleep(FAST_BREAKER.open_interval * 2)
    harness.outbox.append_many(event(n) for n in range(20, 30))
    assert (await forwarder.flush(timeout=10)).done
    assert numbers(enrichment) == list(range(20, 30))


async def test_no_fallback_when_not_allowed(harness: Harness, fault_server_factory: Any) -> None:
    enrichment: FaultServer = await fault_server_factory()
    storage: FaultServer = await fault_server_factory()
    forwarder = harness.forwarder(
        harness.route("enrichment", enrichment),
        harness.route("storage", storage),
        use_fallback=False,
    )
    await enrichment.refuse()
    harness.outbox.append_many(event(n) for n in range(5))

    assert not (await forwarder.flush(timeout=0.5)).done
    assert storage.requests == []
    assert (await harness.outbox.stats()).pending == 5

    await enrichment.restore()
    assert (await forwarder.flush(timeout=5)).done
    assert numbers(enrichment) == list(range(5))


async def test_pause_resume_and_flush(harness: Harness, fault_server: FaultServer) -> None:
    forwarder = harness.forwarder(harness.route("storage", fault_server))
    forwarder.pause()
    assert forwarder.paused
    assert forwarder.state is ForwarderState.PAUSED
    harness.outbox.append_many(event(n) for n in range(5))
    await asyncio.sleep(0.1)
    assert fault_server.requests == []
    with pytest.raises(RuntimeError, match="paused"):
        await forwarder.flush()

    forwarder.resume()
    assert (await forwarder.flush(timeout=5)).done
    assert numbers(fault_server) == list(range(5))
    assert forwarder.snapshot()["state"] == "delivering"


async def test_flush_skips_a_long_backoff(harness: Harness, fault_server: FaultServer) -> None:
    fault_server.fail_next(1, 500)
    forwarder = harness.forwarder(
        harness.route("storage", fault_server),
        backoff=BackoffPolicy(base=30.0, cap=60.0),
        sleep_rng=lambda: 1.0,  # the backoff's ceiling: a jittered draw can be near zero
    )
    harness.outbox.append(event(0))
    await fault_server.wait_for_requests(1)
    await asyncio.sleep(0.05)
    assert forwarder.state is ForwarderState.BACKING_OFF
    assert forwarder.snapshot()["retry_at"] is not None
    assert (await forwarder.flush(timeout=5)).done
    assert numbers(fault_server) == [0]


async def test_backoff_grows_to_the_cap_and_starts_over_after_a_success(
    harness: Harness, fault_server: FaultServer
) -> None:
    """Each failed batch in a row doubles the wait up to the cap; an accepted one resets it.

    With `sleep_rng` at 1.0 the jittered delay is its ceiling (base * 2**failures, capped),
    and with a clock that stands still `retry_at - clock()` is exactly that delay. Each
    wait is cut short with `wake()`, which keeps the backoff's growth.
    """
    clock = FakeClock()
    # 500s count for the breaker: one that never opens keeps the forwarder's own backoff.
    route = harness.route(
        "storage", fault_server, breaker_config=BreakerConfig(failure_threshold=100, min_calls=1000)
    )
    forwarder = EventForwarder(
        harness.outbox,
        route,
        config=ForwarderConfig(linger=0.0, backoff=BackoffPolicy(base=10.0, cap=80.0)),
        sleep_rng=lambda: 1.0,
        clock=clock,
    )
    harness.forwarders.append(forwarder)  # stopped at the end of the test
    forwarder.start()

    async def next_wait() -> tuple[float, int]:
        """The wait the forwarder is in, once it is in one, and the failures it counts."""
        async with asyncio.timeout(5):
            while (retry_at := forwarder.snapshot()["retry_at"]) is None:
                await asyncio.sleep(0.005)
        return retry_at - clock(), forwarder.snapshot()["consecutive_failures"]

    fault_server.fail_next(6, 500)
    harness.outbox.append(event(0))
    waits = []
    for _ in range(6):
        waits.append(await next_wait())
        forwarder.wake()
    assert waits == [(10.0, 1), (20.0, 2), (40.0, 3), (80.0, 4), (80.0, 5), (80.0, 6)]

    assert (await forwarder.flush(timeout=5)).done  # the seventh try is accepted
    assert forwarder.snapshot()["consecutive_failures"] == 0
    assert forwarder.state is ForwarderState.DELIVERING

    fault_server.fail_next(1, 500)
    harness.outbox.append(event(1))
    assert await next_wait() == (10.0, 1)  # back at the first step
    assert (await forwarder.flush(timeout=5)).done
    assert numbers(fault_server) == [0, 1]
    assert len(fault_server.requests) == 9


async def test_stop_releases_the_batch_in_flight(
    tmp_path: Path, harness: Harness, fault_server: FaultServer
) -> None:
    fault_server.add_faults(Fault.slow(5.0))
    route = harness.route("storage", fault_server)
    forwarder = EventForwarder(
        harness.outbox, route, config=ForwarderConfig(linger=0.0, stop_timeout=0.1)
    )
    forwarder.start()
    harness.outbox.append_many(event(n) for n in range(3))
    await fault_server.wait_for_requests(1)

    await forwarder.stop()
    await forwarder.stop()  # idempotent

    assert forwarder.state is ForwarderState.STOPPED
    stats = await harness.outbox.stats()
    assert (stats.pending, stats.in_flight) == (3, 0)
    # Not sent to completion, so no attempt was counted.
    records = await harness.outbox.take(10)
    assert [record.attempts for record in records] == [0, 0, 0]


async def _one_batch_out(
    harness: Harness, fault_server: FaultServer, answer_after: float, events: int, **config: Any
) -> EventForwarder:
    """A started forwarder whose first batch waits ``answer_after`` for its answer, with
    ``events`` appended: the next batch is read ahead meanwhile."""
    fault_server.add_faults(Fault.slow(answer_after))
    forwarder = harness.forwarder(harness.route("storage", fault_server), **config)
    harness.outbox.append_many(event(n) for n in range(events))
    await fault_server.wait_for_requests(1)
    await asyncio.sleep(0.1)
    return forwarder


async def test_the_next_batch_is_read_while_one_is_out_and_sent_after_it(
    harness: Harness, fault_server: FaultServer
) -> None:
    forwarder = await _one_batch_out(harness, fault_server, 0.5, 20, batch_size=5)
    # One batch out, the next read ahead (in flight in the outbox, not sent).
    assert (await harness.outbox.stats()).in_flight == 10
    assert len(fault_server.requests) == 1

    assert (await forwarder.flush(timeout=10)).done
    assert numbers(fault_server) == list(range(20))
    assert [len(request.event_ids) for request in fault_server.requests] == [5] * 4
    # One request at a time: each began after the one before was answered.
    answered = [request.at for request in fault_server.requests]
    assert answered[1] - answered[0] >= 0.45


async def test_a_batch_read_ahead_goes_back_when_the_one_out_fails(
    harness: Harness, fault_server: FaultServer
) -> None:
    """Retried first, then the one read ahead: FIFO, and no attempt counted for it."""
    fault_server.add_faults(Fault.slow(0.3), Fault.answer(500))
    forwarder = harness.forwarder(harness.route("storage", fault_server), batch_size=3)
    harness.outbox.append_many(event(n) for n in range(9))

    assert (await forwarder.flush(timeout=10)).done
    assert numbers(fault_server) == list(range(9))
    first, failed, resent, *_ = fault_server.requests
    assert resent.event_ids == failed.event_ids  # not the batch read ahead
    assert len(fault_server.requests) == 4


async def test_stop_puts_back_the_batch_read_ahead(
    harness: Harness, fault_server: FaultServer
) -> None:
    forwarder = await _one_batch_out(harness, fault_server, 5.0, 6, batch_size=2, stop_timeout=0.3)
    assert (await harness.outbox.stats()).in_flight == 4

    await forwarder.stop()

    stats = await harness.outbox.stats()
    assert (stats.pending, stats.in_flight) == (6, 0)
    records = await harness.outbox.take(10)
    assert [record.attempts for record in records] == [0] * 6


async def test_a_pause_puts_back_the_batch_read_ahead(
    harness: Harness, fault_server: FaultServer
) -> None:
    forwarder = await _one_batch_out(harness, fault_server, 0.5, 6, batch_size=2)
    forwarder.pause()
    await fault_server.wait_for_stored(2)
    async with asyncio.timeout(5):
        while (await harness.outbox.stats()).in_flight:
            await asyncio.sleep(0.02)
    assert (await harness.outbox.stats()).pending == 4
    forwarder.resume()
    assert (await forwarder.flush(timeout=5)).done
    assert numbers(fault_server) == list(range(6))


async def test_unconfirmed_events_are_resent(
    harness: Harness, fault_server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A 200 whose results leave some events out: those are sent again."""
    partial = orjson.dumps({"success": True, "results": []})
    fault_server.add_faults(Fault.answer(200, body=partial))
    caplog.set_level(logging.DEBUG)
    forwarder = harness.forwarder(harness.route("storage", fault_server))
    harness.outbox.append_many(event(n) for n in range(3))

    assert (await forwarder.flush(timeout=5)).done
    assert numbers(fault_server) == [0, 1, 2]


async def test_the_event_left_out_of_the_results_is_resent_not_acked(
    harness: Harness, fault_server: FaultServer
) -> None:
    """A 200 with a result for every event but the last: the last is sent again.

    The results confirm a prefix of the batch, in order, so only their count tells that
    the last event is missing; acked, it would be lost (this receiver stored nothing).
    """
    harness.outbox.append_many(event(n) for n in range(4))
    await harness.outbox.sync()
    records = await harness.outbox.take(10)  # the event ids the answer has to name
    await harness.outbox.release(record.seq for record in records)
    ids = [record.event_id for record in records]
    assert len(ids) == 4
    all_but_last = [{"event_id": event_id, "status": "stored"} for event_id in ids[:-1]]
    fault_server.add_faults(
        Fault.answer(200, body=orjson.dumps({"success": True, "results": all_but_last}))
    )
    forwarder = harness.forwarder(harness.route("storage", fault_server))

    assert (await forwarder.flush(timeout=5)).done

    # The batch, then the last event alone, which the receiver stores this time.
    assert [request.event_ids for request in fault_server.requests] == [ids, ids[-1:]]
    assert fault_server.stored_ids == ids[-1:]
    assert forwarder.metrics.get("delivered_storage") == 4
    assert forwarder.metrics.get("batches_failed") == 1
    stats = await harness.outbox.stats()
    assert (stats.pending, stats.in_flight) == (0, 0)
    assert not await harness.outbox.list_dead_letters()


async def test_ten_thousand_events_through_mixed_faults(
    harness: Harness, fault_server: FaultServer
) -> None:
    """About 30% of requests fail in mixed ways; each event is stored once, in order."""
    fault_server.set_random_faults(
        0.3,
        Fault.answer(500),
        Fault.answer(503, retry_after=1),
        Fault.answer(429, retry_after=1),
        Fault.answer(408),
        Fault.reset(),
        Fault.fail_after_store(503),
        Fault.slow(0.5),
        seed=1234,
    )
    route = harness.route(
        "storage",
        fault_server,
        timeouts=Timeouts(connect=1.0, total=0.25),
        breaker_config=BreakerConfig(failure_threshold=50, min_calls=1000, open_interval=0.05),
    )
    forwarder = harness.forwarder(route, batch_size=250)
    total = 10_000
    harness.outbox.append_many(event(n) for n in range(total))

    assert (await forwarder.flush(timeout=120)).done

    assert numbers(fault_server) == list(range(total))
    assert len(fault_server.stored_ids) == len(set(fault_server.stored_ids)) == total
    failed = forwarder.metrics.get("batches_failed")
    assert failed >= 5  # the faults really happened
    # Duplicates reached the receiver (stored, then 503) and were absorbed by its dedupe.
    assert len(fault_server.received) > total
    assert not await harness.outbox.list_dead_letters()


class RewritingServer(FaultServer):
    """Stores like FaultServer, then answers the first batch with its results rewritten."""

    def __init__(self, rewrite: Any) -> None:
        super().__init__()
        self.rewrite = rewrite

    async def _handle_events(self, request: web.Request) -> web.StreamResponse:
        answer = await super()._handle_events(request)
        assert isinstance(answer, web.Response)
        assert isinstance(answer.body, bytes)
        body = orjson.loads(answer.body)
        if len(self.requests) == 1:
            body["results"] = self.rewrite(body["results"])
        return web.json_response(body, dumps=lambda value: orjson.dumps(value).decode())


def _odd_status_for_the_first(results: list[dict[str, Any]]) -> list[Any]:
    return [{**results[0], "status": ["stored"]}, *results[1:]]  # unhashable: unconfirmed


@pytest.mark.parametrize(
    ("rewrite", "sends"),
    [
        (lambda results: results, 1),  # one result per event, in order: all acked at once
        (lambda results: results[::-1], 1),  # another order: read by event id
        (lambda results: [{**r, "status": "duplicate"} for r in results], 1),
        (lambda results: [*results, {"event_id": "other", "status": "stored"}, 7], 1),
        (_odd_status_for_the_first, 2),  # the first is sent again, the others acked
        (lambda results: results[1:], 2),
    ],
)
async def test_per_event_results_in_any_shape(harness: Harness, rewrite: Any, sends: int) -> None:
    server = RewritingServer(rewrite)
    await server.start()
    try:
        forwarder = harness.forwarder(harness.route("storage", server))
        harness.outbox.append_many(event(n) for n in range(5))
        await harness.outbox.sync()

        assert (await forwarder.flush(timeout=10)).done

        assert sorted(set(numbers(server))) == [0, 1, 2, 3, 4]
        assert len(server.requests) == sends
        assert forwarder.metrics.get("delivered_storage") == 5
        assert (await harness.outbox.stats()).pending == 0
    finally:
        await server.stop()


async def test_a_failed_ack_is_reported_at_stop(
    harness: Harness, fault_server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The ack is handed over without waiting; a failure still surfaces (here: at stop)."""

    def broken_ack(seqs: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    harness.outbox._store.ack = broken_ack  # type: ignore[method-assign]
    forwarder = harness.forwarder(harness.route("storage", fault_server))
    harness.outbox.append_many(event(n) for n in range(3))
    while len(fault_server.stored_ids) < 3:
        await asyncio.sleep(0.01)
    await forwarder.stop()
    assert "Acknowledging the last batch failed: disk I/O error" in caplog.text
    # Not acked: still in flight, so ready again when the outbox opens next time.
    assert (await harness.outbox.stats()).in_flight == 3
