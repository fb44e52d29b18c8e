"""The outbox's dead letters: events that will not be delivered without a person's
decision. Counted and capped by count and by payload bytes (the oldest dropped first),
listed, replayed (by the store) and purged. Only the worker thread touches them.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .logs import RateLimitedLog
from .records import DeadLetter, DeadRow
from .sqlite_file import DEAD_COLUMNS, INSERT_DEAD, transaction

_IN_CHUNK = 500  # ids per "IN (...)" query


def _chunks[X](items: list[X], size: int) -> Iterator[list[X]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class DeadLetters:
    """The ``dead_letters`` table's figures and the work on it."""

    def __init__(
        self,
        path: Path,
        *,
        max_count: int,
        max_bytes: int,
        on_dead_letter: Callable[[DeadLetter], None] | None,
        logger: logging.Logger,
        log_limited: RateLimitedLog,
    ) -> None:
        self.path = path
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.on_dead_letter = on_dead_letter
        self.logger = logger
        self.log_limited = log_limited
        self.count = 0
        self.bytes = 0  # of the dead letters' payloads
        self.dropped = 0  # at the caps, since open

    def load(self, conn: sqlite3.Connection) -> None:
        """Count what the file holds (at open, and after a purge)."""
        self.count, self.bytes = conn.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM dead_letters"
        ).fetchone()

    @staticmethod
    def insert(conn: sqlite3.Connection, dead: list[DeadRow]) -> list[int]:
        """Insert within the caller's transaction; their ids. Then call `added`."""
        return [conn.execute(INSERT_DEAD, values).lastrowid or 0 for values in dead]

    def added(self, conn: sqlite3.Connection, ids: list[int], dead: list[DeadRow]) -> None:
        """Dead letters just committed: count, log, cap, and tell the callback."""
        self.count += len(ids)
        self.bytes += sum(len(row[1]) for row in dead)
        self.log_limited(
            "dead",
            logging.WARNING,
            "Outbox %s: %d events moved to dead letters (last reason %s: %s)",
            self.path,
            len(ids),
            dead[-1][2],
            dead[-1][3],
        )
        self.cap(conn)
        if self.on_dead_letter is not None:
            for dead_id, values in zip(ids, dead, strict=True):
                try:
                    self.on_dead_letter(DeadLetter(dead_id, *values))
                except Exception:
                    self.logger.exception("Outbox on_dead_letter callback failed")

    def cap(self, conn: sqlite3.Connection) -> None:
        """Drop the oldest dead letters past either cap: their count, their bytes."""
        count, size, last = self.count, self.bytes, 0
        if count <= self.max_count and size <= self.max_bytes:
            return
        # Only as many rows are read as are dropped (usually a few).
        rows = conn.execute("SELECT id, length(payload) FROM dead_letters ORDER BY id")
        try:
            for dead_id, length in rows:
                if count <= self.max_count and size <= self.max_bytes:
                    break
                count, size, last = count - 1, size - length, dead_id
        finally:
            rows.close()
        with transaction(conn):
            conn.execute("DELETE FROM dead_letters WHERE id <= ?", (last,))
        dropped = self.count - count
        self.count, self.bytes = count, size
        self.dropped += dropped
        self.log_limited(
            "dead_cap",
            logging.WARNING,
            "Outbox %s: over %d dead letters or %d bytes of them, dropped the %d oldest",
            self.path,
            self.max_count,
            self.max_bytes,
            dropped,
        )

    @staticmethod
    def read(conn: sqlite3.Connection, limit: int, offset: int) -> list[DeadLetter]:
        rows = conn.execute(
            f"SELECT {DEAD_COLUMNS} FROM dead_letters ORDER BY id LIMIT ? OFFSET ?",
            (limit, offset),
        ).fetchall()
        return [DeadLetter(*row) for row in rows]

    @staticmethod
    def chunks(conn: sqlite3.Connection, ids: Iterable[int] | None) -> Iterator[list[Any]]:
        """(id, event_id, payload, attempts, first_failure, last_failure) rows, in chunks,
        by id; ``None`` = all."""
        select = (
            "SELECT id, event_id, payload, attempts, first_failure, last_failure FROM dead_letters"
        )
        if ids is None:
            after = 0
            while rows := conn.execute(
                f"{select} WHERE id > ? ORDER BY id LIMIT ?", (after, _IN_CHUNK)
            ).fetchall():
                after = rows[-1][0]
                yield rows
            return
        for chunk in _chunks(sorted(set(ids)), _IN_CHUNK):
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(f"{select} WHERE id IN ({marks}) ORDER BY id", chunk).fetchall()
            if rows:
                yield rows

    def removed(self, rows: list[Any]) -> None:
        """Rows of `chunks` just deleted from the table (replayed)."""
        self.count -= len(rows)
        self.bytes -= sum(len(row[2]) for row in rows)

    def purge(self, conn: sqlite3.Connection, ids: Iterable[int] | None) -> int:
        with transaction(conn):
            if ids is None:
                purged = conn.execute("DELETE FROM dead_letters").rowcount
            else:
                purged = conn.executemany(
                    "DELETE FROM dead_letters WHERE id = ?", [(i,) for i in set(ids)]
                ).rowcount
        self.load(conn)  # their sizes are not known here
        return purged
