"""Tests for the durable outbox (pipeline/message_queue.py), on real SQLite files."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from custom_components.ha_ingestor.pipeline import message_queue
from custom_components.ha_ingestor.pipeline.envelope import (
    PAYLOAD_TOO_LARGE,
    VALIDATION_ERROR,
    EncodedEvent,
    EventValidator,
    ValidationError,
)
from custom_components.ha_ingestor.pipeline.message_queue import (
    DeadLetter,
    Durability,
    Outbox,
    OutboxClosedError,
    OutboxRecord,
)
from tests.pipeline.fakes import FakeClock

CHILD = Path(__file__).with_name("outbox_writer_child.py")
LOGGER_NAME = "custom_components.ha_ingestor.pipeline.message_queue"


def encode(item: str) -> EncodedEvent:
    """Test items are event ids, optionally ``id:size`` for a payload of that size.

    ``bad*`` fails validation, ``boom*`` raises something unexpected.
    """
    if item.startswith("bad"):
        raise ValidationError("data", f"{item} is invalid", "something valid")
    if item.startswith("boom"):
        raise RuntimeError(f"{item} exploded")
    event_id, _, size = item.partition(":")
    payload = orjson.dumps({"id": event_id})
    if size:
        payload = payload.ljust(int(size), b" ")
    return EncodedEvent(event_id, payload)


OutboxFactory = Callable[..., Outbox[str]]


@pytest.fixture
async def make_outbox(tmp_path: Path) -> AsyncIterator[OutboxFactory]:
    """Build outboxes (default file: tmp_path/outbox.db); every one is closed after the test."""
    made: list[Outbox[str]] = []

    def factory(path: Path | None = None, **kwargs: Any) -> Outbox[str]:
        kwargs.setdefault("encode", encode)
        outbox: Outbox[str] = Outbox(path or tmp_path / "outbox.db", **kwargs)
        made.append(outbox)
        return outbox

    yield factory
    for outbox in made:
        await outbox.close()


async def opened(factory: OutboxFactory, **kwargs: Any) -> Outbox[str]:
    outbox = factory(**kwargs)
    await outbox.open()
    return outbox


async def drain_ids(outbox: Outbox[str], batch: int = 1000) -> list[str]:
    """Take and ack everything; the event ids in the order they came."""
    ids: list[str] = []
    while records := await outbox.take(batch):
        ids += [record.event_id for record in records]
        await outbox.ack(record.seq for record in records)
    return ids


def ids_of(records: list[OutboxRecord]) -> list[str]:
    return [record.event_id for record in records]


def rows_in_file(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        count: int = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    return count


async def trace_sql(outbox: Outbox[str], callback: Callable[[str], object]) -> None:
    """Have every SQL statement the worker runs passed to ``callback`` (on its thread)."""
    await outbox._call(lambda: outbox._store.db.set_trace_callback(callback))


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


# -- durability ---------------------------------------------------------------------


@pytest.mark.parametrize("durability", list(Durability))
async def test_reopen_keeps_order_and_in_flight_returns(
    make_outbox: OutboxFactory, durability: Durability, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = await opened(make_outbox, durability=durability)
    outbox.append_many(["a", "b", "c", "d", "e"])
    taken = await outbox.take(3)
    await outbox.ack([taken[1].seq])
    await outbox.nack([taken[0].seq])
    await outbox.close()
    assert rows_in_file(outbox.path) == 4  # on close, memory goes to the file in both modes

    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    reopened = await opened(make_outbox, durability=durability)
    assert "4 pending events recovered" in caplog.text
    stats = await reopened.stats()
    assert (stats.pending, stats.in_flight, stats.on_disk, stats.appended) == (4, 0, 4, 0)
    records = await reopened.take(10)
    assert [(r.event_id, r.attempts) for r in records] == [("a", 1), ("c", 0), ("d", 0), ("e", 0)]
    assert records[0].seq < records[1].seq < records[2].seq < records[3].seq
    # New records come after the recovered ones.
    reopened.append("f")
    assert ids_of(await reopened.take(10)) == ["f"]


async def test_always_commits_every_record(make_outbox: OutboxFactory) -> None:
    outbox = await opened(make_outbox)
    outbox.append_many(f"e{i}" for i in range(2500))
    assert await outbox.sync() == 2500
    assert rows_in_file(outbox.path) == 2500  # committed: visible to another connection
    assert (await outbox.stats()).on_disk == 2500


async def test_written_rows_are_taken_from_memory_not_read_back(
    make_outbox: OutboxFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What was just written is handed out from the tail kept in memory; FIFO holds when
    the tail overflows, after a nack and after caps drop rows."""
    monkeypatch.setattr(message_queue, "_TAIL_EVENTS", 50)
    scans: list[str] = []
    outbox = await opened(make_outbox, max_events=1000)
    await trace_sql(
        outbox, lambda sql: scans.append(sql) if sql.startswith("SELECT seq,") else None
    )
    outbox.append_many(f"e{i:03}" for i in range(30))
    await outbox.sync()
    first = await outbox.take(10)
    assert ids_of(first) == [f"e{i:03}" for i in range(10)]
    assert scans == []  # from the tail
    await outbox.ack(record.seq for record in first)
    await outbox.nack(record.seq for record in await outbox.take(5))  # back to the file
    outbox.append_many(f"e{i:03}" for i in range(30, 130))  # overflows the tail of 50
    await outbox.sync()
    assert ids_of(await outbox.take(200)) == [f"e{i:03}" for i in range(10, 130)]
    assert scans  # after the nack: read from the file
    assert rows_in_file(outbox.path) == 120


async def test_rows_dropped_at_the_cap_are_not_handed_out(make_outbox: OutboxFactory) -> None:
    outbox = await opened(make_outbox, max_events=20)
    outbox.append_many(f"e{i:02}" for i in range(15))
    await outbox.sync()  # in the file, and in the tail
    outbox.append_many(f"e{i:02}" for i in range(15, 25))  # the 5 oldest go
    await outbox.sync()
    assert ids_of(await outbox.take(100)) == [f"e{i:02}" for i in range(5, 25)]


async def test_a_record_settled_while_in_memory_is_not_handed_out_again(
    make_outbox: OutboxFactory,
) -> None:
    outbox = await opened(make_outbox, durability=Durability.ON_BACKLOG)
    outbox.append_many(["a", "b", "c"])
    taken = await outbox.take(2)
    outbox.set_backlog(True)  # a, b (in flight) and c to the file
    await outbox.sync()
    await outbox.ack(record.seq for record in taken)
    assert ids_of(await outbox.take(10)) == ["c"]
    assert await outbox.take(10) == []


async def test_many_rows_per_statement_and_acks_by_range(
    make_outbox: OutboxFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements: list[str] = []
    outbox = await opened(make_outbox)
    await trace_sql(outbox, statements.append)
    count = 3 * message_queue._INSERT_ROWS + 5  # three full statements and a remainder
    outbox.append_many(f"e{i:04}" for i in range(count))
    await outbox.sync()
    inserts = [sql for sql in statements if sql.startswith("INSERT INTO outbox")]
    assert len(inserts) == 3 + 5
    records = await outbox.take(count)
    statements.clear()
    # Everything but two records in the middle: two runs, two range deletes.
    middle = len(records) // 2
    await outbox.ack(r.seq for r in records[:middle] + records[middle + 2 :])
    deletes = [sql for sql in statements if sql.startswith("DELETE FROM outbox")]
    assert len(deletes) == 2
    assert rows_in_file(outbox.path) == 2
    await outbox.nack(r.seq for r in records[middle : middle + 2])
    assert await drain_ids(outbox) == [f"e{i:04}" for i in (middle, middle + 1)]
    assert rows_in_file(outbox.path) == 0


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
        monkeypatch.setattr(message_queue, "_REST_BACKLOG", options.pop("rest_backlog"))
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


async def test_on_backlog_stays_in_memory_while_delivery_keeps_up(
    make_outbox: OutboxFactory,
) -> None:
    clock = FakeClock()
    outbox = await opened(make_outbox, durability=Durability.ON_BACKLOG, clock=clock)
    for round_ in range(5):
        clock.now = 1000.0 + round_
        outbox.append_many(f"e{round_}-{i}" for i in range(100))
        records = await outbox.take(1000)
        assert len(records) == 100
        # Nacked records go back to their own positions, before anything newer.
        await outbox.nack(r.seq for r in records[10:20])
        await outbox.nack(r.seq for r in records[:5])
        outbox.append(f"new{round_}")
        again = await outbox.take(1000)
        assert ids_of(again) == [*ids_of(records[:5]), *ids_of(records[10:20]), f"new{round_}"]
        assert [r.attempts for r in again] == [1] * 15 + [0]
        stats = await outbox.stats()
        assert (stats.pending, stats.on_disk, stats.oldest_enqueued_at) == (101, 0, clock.now)
        await outbox.ack(r.seq for r in records[5:10] + records[20:] + again)
        stats = await outbox.stats()
        assert (stats.pending, stats.on_disk, stats.pending_bytes) == (0, 0, 0)
    assert rows_in_file(outbox.path) == 0
    assert (await outbox.stats()).acked == 505


async def test_on_backlog_spills_when_backlogged(make_outbox: OutboxFactory) -> None:
    outbox = await opened(make_outbox, durability=Durability.ON_BACKLOG)
    outbox.append_many(["a", "b", "c"])
    (first,) = await outbox.take(1)
    assert (await outbox.stats()).on_disk == 0

    outbox.set_backlog(True)  # a target went down: everything, in flight too, to the file
    outbox.append("d")
    stats = await outbox.stats()
    assert (stats.pending, stats.on_disk, stats.in_flight) == (4, 4, 1)
    assert rows_in_file(outbox.path) == 4

    outbox.set_backlog(False)
    outbox.append("e")  # the file is not empty yet, so e goes there too (FIFO)
    assert (await outbox.stats()).on_disk == 5
    await outbox.nack([first.seq])
    assert await drain_ids(outbox) == ["a", "b", "c", "d", "e"]
    outbox.append("f")  # delivery caught up: memory again
    stats = await outbox.stats()
    assert (stats.pending, stats.on_disk) == (1, 0)


async def test_on_backlog_spills_past_memory_limit(make_outbox: OutboxFactory) -> None:
    outbox = await opened(make_outbox, durability=Durability.ON_BACKLOG, memory_limit_events=10)
    outbox.append_many(f"e{i:02}" for i in range(10))
    assert (await outbox.stats()).on_disk == 0
    outbox.append("e10")
    stats = await outbox.stats()
    assert (stats.pending, stats.on_disk) == (11, 11)
    outbox.append("e11")
    assert (await outbox.stats()).on_disk == 12
    assert await drain_ids(outbox) == [f"e{i:02}" for i in range(12)]


async def test_on_backlog_fifo_across_memory_and_file(make_outbox: OutboxFactory) -> None:
    outbox = await opened(make_outbox, durability=Durability.ON_BACKLOG)
    outbox.append_many(["a", "b", "c"])
    (a,) = await outbox.take(1)
    await outbox.persist()  # a (in flight), b, c to the file
    assert rows_in_file(outbox.path) == 3
    outbox.append("d")  # the file is not empty: d follows
    (b,) = await outbox.take(1)
    await outbox.nack([a.seq, b.seq])
    assert ids_of(await outbox.take(10)) == ["a", "b", "c", "d"]
    await outbox.close()

    reopened = await opened(make_outbox, durability=Durability.ON_BACKLOG)
    records = await reopened.take(2)  # a, b from the file
    reopened.append("e")  # goes to the file: c and d are still there
    await reopened.ack(r.seq for r in records)
    assert ids_of(await reopened.take(1)) == ["c"]
    await reopened.persist()
    assert ids_of(await reopened.take(10)) == ["d", "e"]


async def test_on_backlog_close_writes_memory(make_outbox: OutboxFactory) -> None:
    outbox = await opened(make_outbox, durability=Durability.ON_BACKLOG)
    outbox.append_many(["a", "b", "c"])
    records = await outbox.take(2)
    await outbox.nack([records[1].seq])
    assert rows_in_file(outbox.path) == 0
    outbox.append("d")  # not yet drained when close begins
    await outbox.close()
    assert rows_in_file(outbox.path) == 4

    reopened = await opened(make_outbox)
    assert [(r.event_id, r.attempts) for r in await reopened.take(10)] == [
        ("a", 0),
        ("b", 1),
        ("c", 0),
        ("d", 0),
    ]


async def test_write_failure_keeps_records_in_memory(
    make_outbox: OutboxFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(message_queue, "_DISK_RETRY", 3600.0)
    outbox = await opened(make_outbox)
    real_spill = message_queue._Store.spill
    failures: list[Exception] = []

    def flaky_spill(store: Any) -> None:
        if failures:
            raise failures.pop()
        real_spill(store)

    monkeypatch.setattr(message_queue._Store, "spill", flaky_spill)
    failures.append(sqlite3.OperationalError("database or disk is full"))
    outbox.append_many(["a", "b"])
    stats = await outbox.stats()
    assert (stats.pending, stats.on_disk) == (2, 0)
    assert "disk is full" in caplog.text
    assert ids_of(await outbox.take(1)) == ["a"]  # delivery goes on from memory
    outbox.append("c")  # joins memory (FIFO) until the retry is due
    stats = await outbox.stats()
    assert (stats.pending, stats.on_disk) == (3, 0)
    await outbox.persist()
    stats = await outbox.stats()
    assert (stats.pending, stats.on_disk, stats.in_flight) == (3, 3, 1)
    assert ids_of(await outbox.take(10)) == ["b", "c"]

    # Without further appends, the worker tries again by itself.
    monkeypatch.setattr(message_queue, "_DISK_RETRY", 0.01)
    failures.append(sqlite3.OperationalError("database or disk is full"))
    outbox.append("d")
    for _ in range(500):
        stats = await outbox.stats()
        if stats.on_disk == 4:
            break
        await asyncio.sleep(0.01)
    assert (stats.pending, stats.on_disk) == (4, 4)


# -- caps ---------------------------------------------------------------------------


@pytest.mark.parametrize("durability", list(Durability))
async def test_cap_by_count_drops_oldest_ready(
    make_outbox: OutboxFactory, durability: Durability, caplog: pytest.LogCaptureFixture
) -> None:
    drops: list[int] = []
    outbox = await opened(make_outbox, durability=durability, max_events=5, on_drop=drops.append)
    outbox.append_many(f"e{i}" for i in range(8))
    stats = await outbox.stats()
    assert (stats.pending, stats.dropped) == (5, 3)
    assert drops == [3]
    assert "dropped the 3 oldest events" in caplog.text

    in_flight = await outbox.take(2)
    assert ids_of(in_flight) == ["e3", "e4"]
    outbox.append_many(["x1", "x2", "x3", "x4"])
    stats = await outbox.stats()
    assert (stats.pending, stats.in_flight, stats.dropped) == (5, 2, 7)
    await outbox.nack(r.seq for r in in_flight)  # in flight was never dropped
    assert await drain_ids(outbox) == ["e3", "e4", "x2", "x3", "x4"]
    assert sum(drops) == 7


async def test_cap_by_bytes(make_outbox: OutboxFactory) -> None:
    drops: list[int] = []
    outbox = await opened(make_outbox, max_bytes=1000, on_drop=drops.append)
    outbox.append_many(["a:300", "b:300", "c:300"])
    assert (await outbox.stats()).dropped == 0
    outbox.append_many(["d:300", "e:600"])
    stats = await outbox.stats()
    assert (stats.pending, stats.pending_bytes, stats.dropped) == (2, 900, 3)
    assert drops == [3]
    assert await drain_ids(outbox) == ["d", "e"]


async def test_cap_lowered_at_open(make_outbox: OutboxFactory) -> None:
    outbox = await opened(make_outbox)
    outbox.append_many(["a", "b", "c", "d"])
    await outbox.close()
    reopened = await opened(make_outbox, max_events=2)
    stats = await reopened.stats()
    assert (stats.pending, stats.dropped) == (2, 2)
    assert await drain_ids(reopened) == ["c", "d"]


async def test_callback_errors_do_not_stop_the_worker(
    make_outbox: OutboxFactory, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_: object) -> None:
        raise ValueError("callback bug")

    outbox = await opened(make_outbox, max_events=1, on_drop=broken, on_dead_letter=broken)
    outbox.append_many(["a", "b", "bad"])
    assert (await outbox.stats()).dead_letters == 1
    assert "on_drop callback failed" in caplog.text
    assert "on_dead_letter callback failed" in caplog.text
    assert await drain_ids(outbox) == ["b"]


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


# -- files that are not a usable outbox -----------------------------------------------


def _write_random(path: Path) -> bytes:
    data = os.urandom(8192)
    path.write_bytes(data)
    return data


def _write_truncated(path: Path) -> bytes:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x BLOB)")
        conn.executemany("INSERT INTO t VALUES (?)", [(os.urandom(2000),) for _ in range(200)])
    conn.close()
    data = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(data)
    return data


def _write_foreign(path: Path) -> bytes:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.execute("INSERT INTO users VALUES ('alice')")
    conn.close()
    return path.read_bytes()


def _write_truncated_outbox(path: Path) -> bytes:
    conn = sqlite3.connect(path)
    conn.executescript(";".join(message_queue._SCHEMA))
    conn.execute(f"PRAGMA application_id={message_queue.APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version={message_queue.SCHEMA_VERSION}")
    conn.executemany(
        "INSERT INTO outbox (event_id, payload, enqueued_at) VALUES (?, ?, 0)",
        [(str(i), os.urandom(3000)) for i in range(300)],
    )
    conn.commit()
    conn.close()
    data = path.read_bytes()[: path.stat().st_size * 2 // 3]
    path.write_bytes(data)
    return data


@pytest.mark.parametrize(
    "spoil", [_write_random, _write_truncated, _write_foreign, _write_truncated_outbox]
)
async def test_unusable_file_is_moved_aside(
    make_outbox: OutboxFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    spoil: Callable[[Path], bytes],
) -> None:
    path = tmp_path / "deep" / "outbox.db"
    path.parent.mkdir()
    original = spoil(path)
    outbox = await opened(make_outbox, path=path)

    (aside,) = path.parent.glob("outbox.db.corrupt-*")
    assert aside.read_bytes() == original  # kept as it was, for a person to look at
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert str(path) in errors[0].getMessage()
    assert str(aside) in errors[0].getMessage()

    outbox.append_many(["a", "b"])
    assert await drain_ids(outbox) == ["a", "b"]


async def test_outbox_file_survives_reopen_untouched(
    make_outbox: OutboxFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = await opened(make_outbox)
    outbox.append("a")
    await outbox.close()
    reopened = await opened(make_outbox)
    assert ids_of(await reopened.take(1)) == ["a"]
    assert list(tmp_path.glob("*.corrupt-*")) == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_open_failure_leaves_the_file_and_close_is_safe(
    make_outbox: OutboxFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "a_directory"
    path.mkdir()
    outbox = make_outbox(path=path)
    outbox.append("early")
    with pytest.raises(sqlite3.OperationalError):
        await outbox.open()
    assert path.is_dir()
    assert list(tmp_path.glob("*.corrupt-*")) == []
    assert "could not be opened; 1 events appended before are lost" in caplog.text
    await outbox.close()
    with pytest.raises(OutboxClosedError):
        outbox.append("a")

    # A close racing a failing open neither hangs nor hides the error.
    racing = make_outbox(path=path)
    opening, closing = await asyncio.gather(racing.open(), racing.close(), return_exceptions=True)
    assert isinstance(opening, sqlite3.OperationalError)
    assert closing is None
    assert racing.closed


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


# -- crash ------------------------------------------------------------------------------


async def test_sigkill_loses_nothing_committed(tmp_path: Path, make_outbox: OutboxFactory) -> None:
    path = tmp_path / "killed.db"
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        lines = [child.stdout.readline() for _ in range(8)]
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        _, stderr = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL, stderr
    committed, acked = (int(field) for field in lines[-1].split())
    assert committed == 8 * 200 - 1

    outbox = await opened(make_outbox, path=path)
    records: list[OutboxRecord] = []
    while batch := await outbox.take(5000):
        records += batch
    numbers = [int(record.event_id) for record in records]
    # Everything reported committed is there, in order, without gaps or duplicates;
    # acks reported before the kill stayed acked.
    assert numbers == list(range(numbers[0], numbers[-1] + 1))
    assert numbers[0] > acked
    assert numbers[-1] >= committed
    assert [r.seq for r in records] == sorted({r.seq for r in records})


# -- model-based ------------------------------------------------------------------------


class OutboxMachine(RuleBasedStateMachine):
    """The outbox against a list: order, attempts, in flight and dead letters."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.folder = tempfile.mkdtemp(prefix="outbox-machine-")
        self.path = Path(self.folder) / "outbox.db"
        self.durability = Durability.ALWAYS
        self.outbox: Outbox[str] | None = None
        self.counter = 0
        # The model: pending records in FIFO order as [event_id, attempts, seq or None].
        self.pending: list[list[Any]] = []
        self.in_flight: dict[int, str] = {}  # seq -> event_id
        self.dead: list[tuple[str, int]] = []  # (event_id, attempts), oldest first

    def run[X](self, coro: Coroutine[Any, Any, X]) -> X:
        return self.loop.run_until_complete(coro)

    def _open(self) -> None:
        self.outbox = Outbox(self.path, encode, durability=self.durability, memory_limit_events=7)
        self.run(self.outbox.open())

    @property
    def box(self) -> Outbox[str]:
        assert self.outbox is not None
        return self.outbox

    @initialize(durability=st.sampled_from(list(Durability)))
    def start(self, durability: Durability) -> None:
        self.durability = durability
        self._open()

    @rule(count=st.integers(1, 5))
    def append(self, count: int) -> None:
        for _ in range(count):
            event_id = f"e{self.counter}"
            self.counter += 1
            self.box.append(event_id)
            self.pending.append([event_id, 0, None])

    @rule(count=st.integers(1, 4))
    def take(self, count: int) -> None:
        records = self.run(self.box.take(count))
        ready = [entry for entry in self.pending if entry[0] not in self.in_flight.values()]
        expected = ready[:count]
        assert [(r.event_id, r.attempts) for r in records] == [(e[0], e[1]) for e in expected]
        for record in records:
            self.in_flight[record.seq] = record.event_id

    def _entry(self, event_id: str) -> list[Any]:
        return next(entry for entry in self.pending if entry[0] == event_id)

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        seqs = data.draw(st.lists(st.sampled_from(sorted(self.in_flight)), unique=True))
        self.run(self.box.ack(seqs))
        for seq in seqs:
            self.pending.remove(self._entry(self.in_flight.pop(seq)))

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def nack(self, data: st.DataObject) -> None:
        seqs = data.draw(st.lists(st.sampled_from(sorted(self.in_flight)), unique=True))
        self.run(self.box.nack(seqs))
        for seq in seqs:
            self._entry(self.in_flight.pop(seq))[1] += 1

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def dead_letter(self, data: st.DataObject) -> None:
        seqs = data.draw(st.lists(st.sampled_from(sorted(self.in_flight)), unique=True))
        self.run(self.box.dead_letter(seqs, "R", "m", "t"))
        for seq in dict.fromkeys(seqs):
            entry = self._entry(self.in_flight.pop(seq))
            self.pending.remove(entry)
            self.dead.append((entry[0], entry[1] + 1))

    @precondition(lambda self: self.dead)
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        letters = self.run(self.box.list_dead_letters(limit=1000))
        assert [(d.event_id, d.attempts) for d in letters] == self.dead
        chosen = data.draw(st.none() | st.lists(st.sampled_from(letters), unique=True))
        if chosen is None:
            assert self.run(self.box.replay_dead_letters()) == len(letters)
            replayed = letters
        else:
            ids = [d.id for d in chosen]
            assert self.run(self.box.replay_dead_letters(ids)) == len(chosen)
            replayed = sorted(chosen, key=lambda d: d.id)
        for letter in replayed:
            self.dead.remove((letter.event_id, letter.attempts))
            self.pending.append([letter.event_id, letter.attempts, None])

    @precondition(lambda self: self.in_flight)
    @rule()
    def ack_all(self) -> None:
        # Emptying the file lets on_backlog go back to memory.
        self.run(self.box.ack(list(self.in_flight)))
        for event_id in self.in_flight.values():
            self.pending.remove(self._entry(event_id))
        self.in_flight.clear()

    # The rules below push records to the file; a 1-in-4 draw keeps them rarer, so
    # on_backlog spends most steps in memory.

    @rule(backlogged=st.booleans(), draw=st.integers(0, 3))
    def set_backlog(self, backlogged: bool, draw: int) -> None:
        if draw == 0 or not backlogged:
            self.box.set_backlog(backlogged)

    @rule(draw=st.integers(0, 3))
    def persist(self, draw: int) -> None:
        if draw == 0:
            self.run(self.box.persist())

    @rule(draw=st.integers(0, 3))
    def reopen(self, draw: int) -> None:
        if draw == 0:
            self.run(self.box.close())
            self.in_flight.clear()  # in flight returns to ready
            self._open()

    @invariant()
    def counts_match(self) -> None:
        if self.outbox is None:
            return
        stats = self.run(self.box.stats())
        assert stats.pending == len(self.pending)
        assert stats.in_flight == len(self.in_flight)
        assert stats.dead_letters == len(self.dead)
        assert self.box.ready_hint() == len(self.pending) - len(self.in_flight)
        if self.durability is Durability.ALWAYS:
            assert stats.on_disk == stats.pending

    def teardown(self) -> None:
        try:
            if self.outbox is not None:
                self.run(self.outbox.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.folder, ignore_errors=True)


@pytest.mark.parametrize("small", [False, True], ids=["default", "small_statements_and_tail"])
def test_outbox_against_a_model(small: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if small:
        # Multi-row inserts with a remainder, and a tail of written rows that overflows.
        monkeypatch.setattr(message_queue, "_INSERT_ROWS", 2)
        monkeypatch.setattr(
            message_queue,
            "_INSERT_MANY",
            "INSERT INTO outbox VALUES " + ",".join(["(?,?,?,?,?,?,?)"] * 2),
        )
        monkeypatch.setattr(message_queue, "_TAIL_EVENTS", 3)
    run_state_machine_as_test(
        OutboxMachine,
        settings=settings(max_examples=40, stateful_step_count=30, deadline=None),
    )
