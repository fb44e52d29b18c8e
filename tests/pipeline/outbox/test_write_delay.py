"""When memory is written to the file: after ``write_delay``, so what is acked before then
is never written, and what is not is written in groups (outbox/store.py).

Timing here only ever asserts "not written yet" before a record is due (a slow machine
writes later, never earlier) and "written" by polling with a generous bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

from custom_components.ha_ingestor.pipeline.outbox import Durability, Outbox
from tests.pipeline.outbox.helpers import (
    OutboxFactory,
    drain_ids,
    ids_of,
    opened,
    rows_in_file,
    trace_sql,
)


async def _on_disk_when(outbox: Outbox[str], count: int, within: float = 5.0) -> float:
    """Poll until ``count`` records are in the file; returns when (time.monotonic())."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if (await outbox.stats()).on_disk == count:
            return time.monotonic()
        await asyncio.sleep(0.01)
    raise AssertionError(f"not {count} records in the file within {within} s")


async def _statements(outbox: Outbox[str]) -> list[str]:
    seen: list[str] = []
    await trace_sql(outbox, seen.append)
    return seen


async def test_acked_before_the_delay_is_never_written(make_outbox: OutboxFactory) -> None:
    outbox = await opened(make_outbox, write_delay=0.5)
    statements = await _statements(outbox)
    for round_ in range(3):
        outbox.append_many(f"e{round_}-{i}" for i in range(50))
        records = await outbox.take(1000)
        assert len(records) == 50
        await outbox.ack(record.seq for record in records)
    await asyncio.sleep(0.8)  # past the delay of every record
    stats = await outbox.stats()
    assert (stats.pending, stats.on_disk, stats.acked) == (0, 0, 150)
    assert not [sql for sql in statements if sql.startswith(("INSERT", "DELETE", "BEGIN"))]
    assert rows_in_file(outbox.path) == 0


async def test_not_acked_is_written_once_due_in_flight_too(make_outbox: OutboxFactory) -> None:
    outbox = await opened(make_outbox, write_delay=0.3)
    appended = time.monotonic()
    outbox.append_many(["a", "b", "c"])
    (a,) = await outbox.take(1)  # in flight, never answered
    await asyncio.sleep(0.1)
    assert (await outbox.stats()).on_disk == 0  # not due yet
    written = await _on_disk_when(outbox, 3)
    assert written - appended >= 0.3
    assert rows_in_file(outbox.path) == 3
    await outbox.ack([a.seq])  # acked after it was written: deleted from the file
    assert rows_in_file(outbox.path) == 2
    assert ids_of(await outbox.take(10)) == ["b", "c"]


async def test_the_due_time_follows_the_oldest_record_not_acked(
    make_outbox: OutboxFactory,
) -> None:
    outbox = await opened(make_outbox, write_delay=0.4)
    outbox.append("a")
    (a,) = await outbox.take(1)
    await asyncio.sleep(0.3)
    b_appended = time.monotonic()
    outbox.append("b")
    await outbox.ack([a.seq])  # a leaves before it is due: b is now the oldest
    await asyncio.sleep(0.2)  # a would be due by now, b is not
    assert (await outbox.stats()).on_disk == 0
    written = await _on_disk_when(outbox, 1)
    assert written - b_appended >= 0.4
    assert ids_of(await outbox.take(10)) == ["b"]


async def test_a_returned_record_keeps_its_due_time(make_outbox: OutboxFactory) -> None:
    outbox = await opened(make_outbox, write_delay=0.3)
    appended = time.monotonic()
    outbox.append_many(["a", "b"])
    records = await outbox.take(2)
    await outbox.nack([records[0].seq])  # a is back in memory, b still in flight
    written = await _on_disk_when(outbox, 2)
    assert 0.3 <= written - appended < 3.0
    assert [(r.event_id, r.attempts) for r in await outbox.take(10)] == [("a", 1)]


async def test_writes_come_in_groups_while_a_target_is_down(make_outbox: OutboxFactory) -> None:
    outbox = await opened(make_outbox, write_delay=0.25)
    outbox.set_backlog(True)
    statements = await _statements(outbox)
    started = time.monotonic()
    for index in range(100):  # one event every 10 ms for a second
        outbox.append(f"e{index:03}")
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - started
    await outbox.sync()
    transactions = sum(1 for sql in statements if sql == "BEGIN")
    # One per delay at most (and the sync's), not one per event.
    assert transactions <= elapsed / 0.25 + 2
    assert rows_in_file(outbox.path) == 100


async def test_sync_writes_at_once_and_the_memory_limit_too(make_outbox: OutboxFactory) -> None:
    outbox = await opened(make_outbox, write_delay=3600.0, memory_limit_events=10)
    outbox.append_many(["a", "b"])
    assert (await outbox.stats()).on_disk == 0
    await outbox.sync()  # always: stored means in the file
    assert rows_in_file(outbox.path) == 2
    outbox.append_many(f"m{i}" for i in range(11))  # over the memory limit: at once
    assert (await outbox.stats()).on_disk == 13


async def test_on_backlog_keeps_memory_past_the_delay(make_outbox: OutboxFactory) -> None:
    outbox = await opened(make_outbox, durability=Durability.ON_BACKLOG, write_delay=0.05)
    outbox.append_many(["a", "b"])
    await outbox.sync()
    await asyncio.sleep(0.2)
    assert (await outbox.stats()).on_disk == 0  # delivery keeps up: nothing to write
    outbox.set_backlog(True)  # a target went down: memory to the file at once
    await _on_disk_when(outbox, 2)
    outbox.append("c")  # then in groups, after the delay
    await _on_disk_when(outbox, 3)
    assert rows_in_file(outbox.path) == 3


@pytest.mark.parametrize("durability", list(Durability))
async def test_close_writes_memory_before_it_is_due(
    make_outbox: OutboxFactory, durability: Durability
) -> None:
    outbox = await opened(make_outbox, durability=durability, write_delay=3600.0)
    outbox.append_many(["a", "b"])
    await outbox.take(1)
    await outbox.close()
    assert rows_in_file(outbox.path) == 2


def _stored_payloads(path: Path) -> list[bytes]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [row[0] for row in conn.execute("SELECT payload FROM outbox ORDER BY seq")]


async def test_what_waited_is_packed_a_burst_over_the_memory_limit_is_not(
    make_outbox: OutboxFactory,
) -> None:
    outbox = await opened(make_outbox, write_delay=0.1, memory_limit_events=10)
    outbox.append_many(f"burst{i}:300" for i in range(11))  # over the limit: at once
    assert (await outbox.stats()).on_disk == 11
    assert all(stored[:1] == b"{" for stored in _stored_payloads(outbox.path))
    await drain_ids(outbox)
    outbox.append_many(["waited:300", "too:300"])
    await _on_disk_when(outbox, 2)  # after the delay: packed
    stored = _stored_payloads(outbox.path)
    assert [len(payload) < 300 for payload in stored] == [True, True]
    records = await outbox.take(10)
    assert [(r.event_id, len(r.payload)) for r in records] == [("waited", 300), ("too", 300)]
