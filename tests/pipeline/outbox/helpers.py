"""Helpers of the outbox tests: a test encoder and ways to look into an outbox."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from custom_components.ha_ingestor.pipeline.envelope import EncodedEvent, ValidationError
from custom_components.ha_ingestor.pipeline.outbox import Outbox, OutboxRecord

LOGGER_NAME = "custom_components.ha_ingestor.pipeline.outbox"


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
