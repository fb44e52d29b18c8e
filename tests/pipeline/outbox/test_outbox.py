"""The outbox as its users see it: FIFO, settling records, readiness, the worker
thread's rests and give-way, invalid items, opening and closing (outbox/worker.py).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from custom_components.ha_ingestor.pipeline.envelope import (
    PAYLOAD_TOO_LARGE,
    VALIDATION_ERROR,
    EncodedEvent,
    EventValidator,
)
from custom_components.ha_ingestor.pipeline.outbox import (
    DeadLetter,
    Outbox,
    OutboxClosedError,
    worker,
)
from tests.pipeline.fakes import FakeClock
from tests.pipeline.outbox.helpers import (
    OutboxFactory,
    drain_ids,
    encode,
    ids_of,
    opened,
    rows_in_file,
)

# -- basics ---------------------------------------------------------------------------


async def test_append_take_ack_fifo(make_outbox: OutboxFactory) -> None:
    clock = FakeClock()
    outbox = await opened(make_outbox, clock=clock)
    outbox.append_many(["a", "b", "c"])
    outbox.append("d")
    assert await outbox.sync() == 4

    records = await outbox.take(10)
    assert ids_of(records) == ["a", "b", "c", "d"]
    assert [r.seq for r in records] == sorted(r.seq for r in records)
    assert records[0].payload == b'{"id":"a"}'
    assert {(r.attempts, r.enqueued_at) for r in records} == {(0, 1000.0)}
    assert await outbox.take(10) == []  # all in flight

    stats = await outbox.stats()
    assert (stats.pending, stats.in_flight, stats.appended, stats.on_disk) == (4, 4, 4, 4)
    assert stats.pending_bytes == sum(len(r.payload) for r in records)
    assert stats.oldest_enqueued_at == 1000.0

    await outbox.ack([records[0].seq, records[1].seq])
    await outbox.ack([records[0].seq, 999_999])  # not in flight: ignored
    stats = await outbox.stats()
    assert (stats.pending, stats.in_flight, stats.acked) == (2, 2, 2)
    await outbox.ack(r.seq for r in records[2:])
    stats = await outbox.stats()
    assert (stats.pending, stats.pending_bytes, stats.oldest_enqueued_at) == (0, 0, None)
    assert outbox.stats_nowait() == stats
    assert rows_in_file(outbox.path) == 0


async def test_take_respects_max_events_and_max_bytes(make_outbox: OutboxFactory) -> None:
    outbox = await opened(make_outbox)
    outbox.append_many(["a:100", "b:100", "c:100", "d:500", "e:100"])
    assert ids_of(await outbox.take(2)) == ["a", "b"]
    assert ids_of(await outbox.take(10, max_bytes=250)) == ["c"]  # d would pass 250
    assert ids_of(await outbox.take(10, max_bytes=250)) == ["d"]  # alone, though too big
    assert ids_of(await outbox.take(10, max_bytes=250)) == ["e"]
    with pytest.raises(ValueError, match="max_events"):
        await outbox.take(0)


async def test_nack_keeps_position_and_persists_attempts(make_outbox: OutboxFactory) -> None:
    clock = FakeClock()
    outbox = await opened(make_outbox, clock=clock)
    outbox.append_many(["a", "b", "c", "d", "e"])
    first = await outbox.take(2)
    second = await outbox.take(2)
    clock.now = 1010.0
    await outbox.nack(r.seq for r in first)
    retried = await outbox.take(10)
    # The retried batch goes before anything newer; c and d are still in flight.
    assert ids_of(retried) == ["a", "b", "e"]
    assert [r.attempts for r in retried] == [1, 1, 0]
    assert [r.seq for r in retried[:2]] == [r.seq for r in first]

    clock.now = 1020.0
    await outbox.nack([r.seq for r in second] + [r.seq for r in retried])
    assert [(r.event_id, r.attempts) for r in await outbox.take(10)] == [
        ("a", 2),
        ("b", 2),
        ("c", 1),
        ("d", 1),
        ("e", 1),
    ]
    await outbox.close()

    reopened = await opened(make_outbox, clock=clock)
    records = await reopened.take(10)
    assert [(r.event_id, r.attempts) for r in records] == [
        ("a", 2),
        ("b", 2),
        ("c", 1),
        ("d", 1),
        ("e", 1),
    ]
    clock.now = 1030.0
    await reopened.dead_letter([records[0].seq], "HTTP_400", "bad", "enrichment")
    (dead,) = await reopened.list_dead_letters()
    assert (dead.attempts, dead.first_failure, dead.last_failure) == (3, 1010.0, 1030.0)


async def test_release_puts_back_without_counting(make_outbox: OutboxFactory) -> None:
    outbox = await opened(make_outbox)
    outbox.append_many(["a", "b"])
    records = await outbox.take(10)
    await outbox.release(r.seq for r in records)
    assert [(r.event_id, r.attempts) for r in await outbox.take(10)] == [("a", 0), ("b", 0)]


async def test_dead_letter_keeps_everything(make_outbox: OutboxFactory) -> None:
    clock = FakeClock()
    seen: list[DeadLetter] = []
    outbox = await opened(make_outbox, clock=clock, on_dead_letter=seen.append)
    outbox.append_many(["a", "b", "c"])
    records = await outbox.take(3)
    clock.now = 1001.0
    await outbox.nack([records[0].seq])
    (again,) = await outbox.take(1)
    clock.now = 1002.0
    await outbox.nack([again.seq])
    (again,) = await outbox.take(1)
    clock.now = 1003.0
    await outbox.dead_letter([again.seq, records[1].seq], "VALIDATION_ERROR", "no", "storage")
    await outbox.dead_letter([records[1].seq], "x", "y", "z")  # no longer in flight: ignored

    dead = await outbox.list_dead_letters()
    assert dead == seen
    assert [(d.event_id, d.reason, d.message, d.target) for d in dead] == [
        ("a", "VALIDATION_ERROR", "no", "storage"),
        ("b", "VALIDATION_ERROR", "no", "storage"),
    ]
    assert (dead[0].attempts, dead[0].first_failure, dead[0].last_failure) == (3, 1001.0, 1003.0)
    assert (dead[1].attempts, dead[1].first_failure, dead[1].last_failure) == (1, 1003.0, 1003.0)
    assert dead[0].payload == b'{"id":"a"}'
    stats = await outbox.stats()
    assert (stats.pending, stats.in_flight, stats.dead_letters) == (1, 1, 2)
    assert ids_of(await outbox.take(5)) == []  # c is still in flight


async def test_list_replay_and_purge_dead_letters(make_outbox: OutboxFactory) -> None:
    outbox = await opened(make_outbox)
    outbox.append_many(["a", "b", "c", "d", "e"])
    records = await outbox.take(4)
    await outbox.dead_letter((r.seq for r in records), "R", "m", "t")
    dead = await outbox.list_dead_letters()
    assert [d.event_id for d in dead] == ["a", "b", "c", "d"]
    assert [d.event_id for d in await outbox.list_dead_letters(limit=2, offset=1)] == ["b", "c"]

    # Replayed records go to the end, behind e.
    assert await outbox.replay_dead_letters([dead[2].id, dead[0].id, 123_456]) == 2
    assert [d.event_id for d in await outbox.list_dead_letters()] == ["b", "d"]
    assert await drain_ids(outbox) == ["e", "a", "c"]

    assert await outbox.purge_dead_letters([dead[1].id]) == 1
    assert await outbox.replay_dead_letters() == 1
    assert await outbox.replay_dead_letters() == 0
    assert await drain_ids(outbox) == ["d"]

    outbox.append_many(["f", "g"])
    await outbox.dead_letter((r.seq for r in await outbox.take(2)), "R", "m", "t")
    assert (await outbox.stats()).dead_letters == 2
    assert await outbox.purge_dead_letters() == 2
    assert await outbox.list_dead_letters() == []
    assert (await outbox.stats()).dead_letters == 0


async def test_replay_keeps_attempts(make_outbox: OutboxFactory) -> None:
    outbox = await opened(make_outbox)
    outbox.append("a")
    (record,) = await outbox.take(1)
    await outbox.nack([record.seq])
    (record,) = await outbox.take(1)
    await outbox.dead_letter([record.seq], "R", "m", "t")
    await outbox.replay_dead_letters()
    (record,) = await outbox.take(1)
    assert (record.event_id, record.attempts) == ("a", 2)


async def test_dead_letters_capped(make_outbox: OutboxFactory) -> None:
    outbox = await opened(make_outbox, max_dead_letters=3)
    outbox.append_many(["bad1", "bad2", "bad3", "bad4", "bad5", "ok"])
    stats = await outbox.stats()
    assert (stats.pending, stats.dead_letters, stats.dead_letters_dropped) == (1, 3, 2)
    assert [d.message for d in await outbox.list_dead_letters()] == [
        "data: bad3 is invalid (expected something valid)",
        "data: bad4 is invalid (expected something valid)",
        "data: bad5 is invalid (expected something valid)",
    ]


# -- readiness --------------------------------------------------------------------------


async def test_wait_ready_and_ready_hint(make_outbox: OutboxFactory) -> None:
    outbox = await opened(make_outbox)
    assert outbox.ready_hint() == 0
    waiter = asyncio.ensure_future(outbox.wait_ready())
    await asyncio.sleep(0)
    assert not waiter.done()
    outbox.append_many(["a", "b"])
    await asyncio.wait_for(waiter, 5)
    assert outbox.ready_hint() == 2
    await outbox.wait_ready()  # at once
    records = await outbox.take(2)
    assert outbox.ready_hint() == 0
    await outbox.nack([records[1].seq])
    assert outbox.ready_hint() == 1
    await asyncio.wait_for(outbox.wait_ready(), 5)

    # A cancelled waiter leaves nothing behind, and close wakes the rest.
    await outbox.take(1)
    cancelled = asyncio.ensure_future(outbox.wait_ready())
    waiter = asyncio.ensure_future(outbox.wait_ready())
    await asyncio.sleep(0)
    cancelled.cancel()
    await outbox.close()
    with pytest.raises(OutboxClosedError):
        await waiter
    with pytest.raises(asyncio.CancelledError):
        await cancelled


async def test_cancelled_take_and_ack(make_outbox: OutboxFactory) -> None:
    gate = threading.Event()

    def gated(item: str) -> EncodedEvent:
        if item == "gate":
            gate.wait(10)  # holds the worker thread until the test lets it go
        return encode(item)

    outbox = await opened(make_outbox, encode=gated)
    outbox.append_many(["a", "b"])
    records = await outbox.take(2)
    outbox.append("gate")
    await asyncio.sleep(0)
    # Queued behind the blocked worker: the take is skipped, the ack still happens.
    take = asyncio.ensure_future(outbox.take(10))
    ack = asyncio.ensure_future(outbox.ack([records[0].seq]))
    await asyncio.sleep(0)
    take.cancel()
    ack.cancel()
    await asyncio.wait([take, ack])
    gate.set()
    stats = await outbox.stats()
    assert (stats.pending, stats.in_flight, stats.acked) == (2, 1, 1)
    assert ids_of(await outbox.take(10)) == ["gate"]
    for task in (take, ack):
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_take_cancelled_after_it_ran_puts_records_back(make_outbox: OutboxFactory) -> None:
    in_gate, release, signal = threading.Event(), threading.Event(), threading.Event()

    def signalling(item: str) -> EncodedEvent:
        if item == "gate":
            in_gate.set()
            release.wait(10)
        if item == "signal":
            signal.set()
        return encode(item)

    outbox = await opened(make_outbox, encode=signalling)
    outbox.append_many(["a", "b"])
    await outbox.sync()
    # The worker is held while the take is queued: otherwise a fast take can finish
    # within one turn of the loop, before it could be cancelled.
    outbox.append("gate")
    assert in_gate.wait(10)
    take = asyncio.ensure_future(outbox.take(10))
    await asyncio.sleep(0)  # the take is queued
    outbox.append("signal")  # encoded by the worker before or after the take ran
    release.set()
    assert signal.wait(10)  # blocks the loop: the take's result cannot be delivered yet
    take.cancel()
    with pytest.raises(asyncio.CancelledError):
        await take
    # Whether the take ran or was skipped, nothing is stuck in flight.
    assert ids_of(await outbox.take(10)) == ["a", "b", "gate", "signal"]


# -- the worker thread ---------------------------------------------------------------


def _arrives_while_encoding(outbox_box: list[Outbox[str]]) -> Callable[[str], EncodedEvent]:
    """An encoder that is slow for "a" and appends "late" meanwhile, as a busy loop would."""

    def encode_with_arrival(item: str) -> EncodedEvent:
        if item == "a":
            time.sleep(0.005)
            outbox_box[0]._intake.append("late")
        return encode(item)

    return encode_with_arrival


@pytest.mark.parametrize(
    ("options", "rests"),
    [
        ({}, True),
        ({"busy_rest": 0}, False),  # never rests
        ({"max_rest_lag": 0}, False),  # the backlog is always too old to rest
        ({"rest_backlog": 1}, False),  # ... or always too big
    ],
)
async def test_worker_rests_while_the_loop_keeps_appending(
    make_outbox: OutboxFactory,
    monkeypatch: pytest.MonkeyPatch,
    options: dict[str, float],
    rests: bool,
) -> None:
    options = dict(options)
    if "rest_backlog" in options:
        monkeypatch.setattr(worker, "_REST_BACKLOG", options.pop("rest_backlog"))
    box: list[Outbox[str]] = []
    options = {"busy_rest": 1000.0, "commit_interval": 2.0, **options}
    outbox = await opened(make_outbox, encode=_arrives_while_encoding(box), **options)
    box.append(outbox)
    outbox.append("a")
    loop = asyncio.get_running_loop()
    start = loop.time()
    while outbox.stats_nowait().appended < 1:
        await asyncio.sleep(0.01)
    # "late" arrived while "a" was stored: it waits out the rest (2 s), or not at all.
    while outbox.stats_nowait().appended < 2 and loop.time() - start < 1.0:
        await asyncio.sleep(0.01)
    assert (outbox.stats_nowait().appended == 1) is rests
    assert outbox.stats_nowait().pending == 2  # waiting in memory counts as pending
    if rests:
        # A command is answered at once, rest or not (and the intake is stored first).
        assert ids_of(await asyncio.wait_for(outbox.take(10), timeout=1.0)) == ["a", "late"]
    assert await outbox.sync() == 2


async def test_ack_soon_settles_before_any_later_command(make_outbox: OutboxFactory) -> None:
    outbox = await opened(make_outbox)
    outbox.append_many(["a", "b", "c"])
    records = await outbox.take(2)
    acking = outbox.ack_soon(record.seq for record in records)
    # Not awaited yet, but the worker runs it first: a take right after sees them gone.
    assert ids_of(await outbox.take(10)) == ["c"]
    await acking
    stats = await outbox.stats()
    assert (stats.pending, stats.acked) == (1, 2)


# -- invalid items ----------------------------------------------------------------------


def raw_event(entity: str, attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "event_type": "state_changed",
        "time_fired": datetime(2026, 1, 1, tzinfo=UTC),
        "data": {
            "entity_id": entity,
            "new_state": {"state": "1", "attributes": attributes or {}},
            "old_state": None,
        },
    }


async def test_invalid_items_become_dead_letters(make_outbox: OutboxFactory) -> None:
    validator = EventValidator(max_event_bytes=64 * 1024)
    outbox: Outbox[Any] = await opened(make_outbox, encode=validator.encode)
    outbox.append(raw_event("sensor.first"))
    outbox.append(raw_event("sensor.huge", {"blob": "x" * (10 * 1024 * 1024)}))
    outbox.append({"event_type": "state_changed", "data": {}})  # no time_fired
    outbox.append(raw_event("sensor.last"))

    stats = await outbox.stats()
    assert (stats.pending, stats.dead_letters, stats.appended) == (2, 2, 2)
    huge, broken = await outbox.list_dead_letters()
    assert (huge.reason, huge.target, huge.attempts) == (PAYLOAD_TOO_LARGE, "outbox", 1)
    assert "over the limit of 65536" in huge.message
    assert 0 < len(huge.payload) <= 64 * 1024  # a truncated best-effort copy
    assert broken.reason == VALIDATION_ERROR
    assert broken.message.startswith("time_fired: is required")
    assert orjson.loads(broken.payload) == {"event_type": "state_changed", "data": {}}

    records = await outbox.take(10)
    entities = [orjson.loads(r.payload)["data"]["entity_id"] for r in records]
    assert entities == ["sensor.first", "sensor.last"]


async def test_unexpected_encode_error_becomes_dead_letter(
    make_outbox: OutboxFactory, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = await opened(make_outbox)
    outbox.append_many(["a", "boom1", "b"])
    assert ids_of(await outbox.take(10)) == ["a", "b"]
    (dead,) = await outbox.list_dead_letters()
    assert (dead.reason, dead.message) == ("encode_error", "RuntimeError: boom1 exploded")
    assert dead.payload == b'"boom1"'
    assert "encoding an event failed" in caplog.text
    assert "boom1 exploded" in caplog.text  # with its traceback
    outbox.append("c")  # the worker lives on
    assert ids_of(await outbox.take(10)) == ["c"]


# -- lifecycle ------------------------------------------------------------------------


async def test_close_is_safe_and_idempotent(make_outbox: OutboxFactory) -> None:
    never_opened = make_outbox()
    assert never_opened.stats_nowait().pending == 0
    await never_opened.close()
    await never_opened.close()

    outbox = make_outbox()
    outbox.append_many(f"e{i}" for i in range(3000))  # before open: kept in the intake
    assert outbox.stats_nowait().pending == 3000
    await outbox.open()
    outbox.append("last")
    await asyncio.gather(outbox.close(), outbox.close())
    assert outbox.closed
    await outbox.close()
    with pytest.raises(OutboxClosedError):
        outbox.append("late")
    with pytest.raises(OutboxClosedError):
        outbox.append_many(["late"])
    with pytest.raises(OutboxClosedError):
        await outbox.take(1)
    assert (await outbox.stats()).pending == 3001  # the last snapshot
    with pytest.raises(RuntimeError):
        await outbox.open()

    reopened = await opened(make_outbox)
    assert await drain_ids(reopened) == [*(f"e{i}" for i in range(3000)), "last"]


async def test_close_while_opening(make_outbox: OutboxFactory) -> None:
    outbox = make_outbox()
    outbox.append("a")
    await asyncio.gather(outbox.open(), outbox.close())
    assert outbox.closed
    reopened = await opened(make_outbox)
    assert await drain_ids(reopened) == ["a"]


async def test_close_without_open_says_what_it_drops(
    make_outbox: OutboxFactory, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = make_outbox()
    outbox.append_many(["a", "b"])
    await outbox.close()
    assert "closed without being opened; 2 events appended before are lost" in caplog.text
