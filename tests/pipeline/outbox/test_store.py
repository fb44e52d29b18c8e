"""Where the outbox keeps records: memory, the file and the tail, durability modes,
failed writes and caps (outbox/store.py).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import Any

import pytest

from custom_components.ha_ingestor.pipeline.outbox import (
    Durability,
    sqlite_file,
    store,
)
from tests.pipeline.fakes import FakeClock
from tests.pipeline.outbox.helpers import (
    LOGGER_NAME,
    OutboxFactory,
    drain_ids,
    ids_of,
    opened,
    rows_in_file,
    trace_sql,
)

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
    monkeypatch.setattr(store, "_TAIL_EVENTS", 50)
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
    count = 3 * sqlite_file._INSERT_ROWS + 5  # three full statements and a remainder
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
    monkeypatch.setattr(store, "_DISK_RETRY", 3600.0)
    outbox = await opened(make_outbox)
    real_spill = store.Store.spill
    failures: list[Exception] = []

    def flaky_spill(the_store: Any, **kwargs: Any) -> None:
        if failures:
            raise failures.pop()
        real_spill(the_store, **kwargs)

    monkeypatch.setattr(store.Store, "spill", flaky_spill)
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
    monkeypatch.setattr(store, "_DISK_RETRY", 0.01)
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
