"""SQLite backend: one file, WAL, one writer thread and one reader thread.

Durability: a flush answers only after its transaction committed. With
``synchronous=FULL`` (the default) SQLite syncs the WAL on every commit, so a committed
flush survives a power cut; with ``NORMAL`` it survives a kill or crash of the service
(the WAL is in the OS's hands) but an OS crash may lose the last commits. Group commit
makes FULL cheap: one sync per flush, not per event.

Idempotency: ``(time_ns, event_id)`` is UNIQUE and inserts say ``ON CONFLICT DO
NOTHING``. A resent event always has the same stored time (its own time plus digits
from its id, see records.py), so this key catches every resend, as InfluxDB's "same
series, same time" does. Unlike a unique index on ``event_id`` alone (random UUIDs:
every insert lands on another page of the index, which measured here 3x the CPU per
event at 300,000 rows, growing with the table), this one grows at its end and also
serves the time-range queries.

Per-event answers cost nothing in the usual case: a multi-row INSERT's row count equal
to its row number means all stored. Otherwise the rows it did insert are read back by
rowid (new rows get consecutive rowids after the largest) and the rest are duplicates.

All writes (flushes, retention, the health probe) run on one thread in order; queries
run on a second connection on their own thread (WAL lets readers work during a write).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar

from ha_ingestor_services.contract import DependencyHealth, StartupError
from ha_ingestor_services.identity import canonical_id, new_id
from ha_ingestor_services.storage.records import Record, StoredEvent, stored_event

from .base import DUPLICATE, STORED, BackendUnavailable, EventQuery, Outcome

SCHEMA_VERSION = 1
_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    entity_id TEXT,
    domain TEXT,
    device_class TEXT,
    unit TEXT,
    source TEXT,
    instance_id TEXT,
    state TEXT,
    value REAL,
    old_state TEXT,
    attributes TEXT NOT NULL,
    event_data TEXT,
    context_id TEXT,
    weather_temp_c REAL,
    weather_humidity REAL,
    weather_condition TEXT,
    weather_pressure_hpa REAL,
    processing_time_ms REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_time ON events (time_ns, event_id);
CREATE INDEX IF NOT EXISTS events_by_entity_time ON events (entity_id, time_ns);
CREATE TABLE IF NOT EXISTS health_probe (id INTEGER PRIMARY KEY, at_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# The storage service's id lives with its data, so it moves with the file (identity.py).
# The table is new in schema version 1's files too: older files get it on open.
_SERVICE_ID_KEY = "service_id"

_COLUMNS = Record._fields
_ROW = f"({', '.join('?' for _ in _COLUMNS)})"
# Rows per INSERT come in these sizes only, so a handful of
# statements are compiled once and cached; 500 rows stay within SQLite's 32,766 bound
# parameters.
_CHUNK_SIZES = (500, 100, 25, 5, 1)


def _chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    """``items`` cut into pieces of the sizes in `_CHUNK_SIZES`, largest first."""
    start = 0
    for size in _CHUNK_SIZES:
        while len(items) - start >= size:
            yield items[start : start + size]
            start += size


_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM events"
_NEW_ROWS = "SELECT time_ns, event_id FROM events WHERE id >= ?"
# Retention deletes in slices so flushes get the writer thread in between.
_EXPIRE_SLICE = 5000


@functools.cache
def _insert_sql(rows: int) -> str:
    return (
        f"INSERT INTO events ({', '.join(_COLUMNS)}) VALUES {', '.join([_ROW] * rows)} "
        "ON CONFLICT (time_ns, event_id) DO NOTHING"
    )


class SQLiteBackend:
    name = "sqlite"

    def __init__(self, path: str, *, synchronous: str = "full", timeout_s: float = 10.0) -> None:
        self.path = path
        self._synchronous = synchronous.upper()
        self._probe_numbers = itertools.count(time.time_ns())
        self._timeout_s = timeout_s
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="storage-sqlite-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="storage-sqlite-reader")
        self._write_conn: sqlite3.Connection | None = None
        self._read_conn: sqlite3.Connection | None = None
        self._expired = 0
        self._last_error: str | None = None
        self._closed = False
        self.service_id: str | None = None

    # -- running work on the threads ----------------------------------------------------

    async def _on(self, executor: ThreadPoolExecutor, work: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(executor, work)

    def _wconn(self) -> sqlite3.Connection:
        if self._write_conn is None:
            raise BackendUnavailable("the SQLite database is closed")
        return self._write_conn

    def _rconn(self) -> sqlite3.Connection:
        if self._read_conn is None:
            raise BackendUnavailable("the SQLite database is closed")
        return self._read_conn

    def _connect(self) -> sqlite3.Connection:
        _create_private(self.path)
        # Autocommit mode: transactions are spelled out with BEGIN/COMMIT.
        conn = sqlite3.connect(self.path, timeout=self._timeout_s, isolation_level=None)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":  # e.g. a file system without shared memory
                raise StartupError(f"SQLite file {self.path} cannot use WAL (journal mode {mode})")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
        except BaseException:  # e.g. not a database: the connection must not leak
            conn.close()
            raise
        return conn

    # -- life -----------------------------------------------------------------------------

    async def open(self) -> None:
        folder = Path(self.path).expanduser().resolve().parent
        if not folder.is_dir():
            raise StartupError(f"SQLite file {self.path}: folder {folder} does not exist")
        try:
            await self._on(self._writer, self._open_writer)
            await self._on(self._reader, self._open_reader)
        except sqlite3.Error as err:
            await self.close()
            raise StartupError(f"SQLite file {self.path} cannot be opened: {err}") from None
        except BaseException:  # a newer schema, no WAL: no connection or thread left behind
            await self.close()
            raise

    def _open_writer(self) -> None:
        conn = self._connect()
        try:
            conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}")
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            version = row[0] if row else None
            if version is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif version > SCHEMA_VERSION:
                conn.execute("ROLLBACK")
                raise StartupError(
                    f"SQLite file {self.path} has schema version {version}, newer than this "
                    f"service's {SCHEMA_VERSION}; upgrade ha-ingestor-services"
                )
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (_SERVICE_ID_KEY, new_id()),
            )
            (kept,) = conn.execute(
                "SELECT value FROM meta WHERE key = ?", (_SERVICE_ID_KEY,)
            ).fetchone()
            conn.execute("COMMIT")
            try:
                self.service_id = canonical_id(kept)
            except ValueError:
                raise StartupError(
                    f"SQLite file {self.path}: its meta table holds no valid service id "
                    f"({kept!r}); fix it or give --service-id"
                ) from None
        except BaseException:
            conn.close()
            raise
        self._write_conn = conn

    def _open_reader(self) -> None:
        conn = self._connect()
        conn.execute("PRAGMA query_only=1")
        self._read_conn = conn

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def close_writer() -> None:
            if self._write_conn is not None:
                self._write_conn.close()
                self._write_conn = None

        def close_reader() -> None:
            if self._read_conn is not None:
                self._read_conn.close()
                self._read_conn = None

        await self._on(self._writer, close_writer)
        await self._on(self._reader, close_reader)
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)

    # -- writes ---------------------------------------------------------------------------

    async def write(self, records: Sequence[Record]) -> list[Outcome]:
        try:
            outcomes = await self._on(self._writer, lambda: self._write(records))
        except sqlite3.Error as err:
            # Locked by another process, disk full, read-only file, I/O error: all pass.
            self._last_error = f"{type(err).__name__}: {err}"
            raise BackendUnavailable(f"SQLite cannot write: {err}") from None
        self._last_error = None
        return outcomes

    def _write(self, records: Sequence[Record]) -> list[Outcome]:
        """One transaction of a few multi-row INSERTs.

        Few statements matter more than they seem: sqlite3 releases the GIL for every step,
        and getting it back from a busy event loop can take a switch interval (5 ms).
        """
        conn = self._wconn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            outcomes: list[Outcome] = []
            for chunk in _chunks(records):
                outcomes += self._insert(conn, chunk)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return outcomes

    @staticmethod
    def _insert(conn: sqlite3.Connection, chunk: Sequence[Record]) -> list[Outcome]:
        cursor = conn.execute(_insert_sql(len(chunk)), list(chain.from_iterable(chunk)))
        inserted = cursor.rowcount
        if inserted == len(chunk):
            return [STORED] * inserted
        if inserted == 0:
            return [DUPLICATE] * len(chunk)
        # Some were there already: the new rows are the last `inserted` rowids.
        first_rowid = (cursor.lastrowid or 0) - inserted + 1
        new = set(conn.execute(_NEW_ROWS, (first_rowid,)).fetchall())
        outcomes: list[Outcome] = []
        for record in chunk:
            key = (record.time_ns, record.event_id)
            if key in new:
                new.discard(key)  # a second copy in this chunk is a duplicate
                outcomes.append(STORED)
            else:
                outcomes.append(DUPLICATE)
        return outcomes

    async def expire(self, before_ns: int) -> int:
        total = 0
        while True:
            try:
                deleted = await self._on(self._writer, lambda: self._expire_slice(before_ns))
            except sqlite3.Error as err:
                raise BackendUnavailable(f"SQLite cannot delete old events: {err}") from None
            total += deleted
            if deleted < _EXPIRE_SLICE:
                break
        self._expired += total
        return total

    def _expire_slice(self, before_ns: int) -> int:
        conn = self._wconn()
        cursor = conn.execute(
            "DELETE FROM events WHERE id IN "
            "(SELECT id FROM events WHERE time_ns < ? ORDER BY time_ns LIMIT ?)",
            (before_ns, _EXPIRE_SLICE),
        )
        return cursor.rowcount

    # -- reads ----------------------------------------------------------------------------

    async def query(self, query: EventQuery) -> list[StoredEvent]:
        try:
            rows = await self._on(self._reader, lambda: self._query(query))
        except sqlite3.Error as err:
            raise BackendUnavailable(f"SQLite cannot read: {err}") from None
        return [stored_event(dict(zip(_COLUMNS, row, strict=True)), row[1]) for row in rows]

    def _query(self, query: EventQuery) -> list[tuple[Any, ...]]:
        where = ["time_ns >= ?", "time_ns <= ?"]
        params: list[Any] = [query.start_ns, query.end_ns]
        if query.entity_id is not None:
            where.append("entity_id = ?")
            params.append(query.entity_id)
        if query.event_type is not None:
            where.append("event_type = ?")
            params.append(query.event_type)
        sql = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY time_ns DESC LIMIT ?"
        params.append(query.limit)
        return self._rconn().execute(sql, params).fetchall()

    # -- health ---------------------------------------------------------------------------

    async def probe(self) -> DependencyHealth:
        """Write a row, read it back on the other connection.

        Probes may overlap (several health checks at once): a later probe's number read
        back proves the write path just as well, so only an older number is a failure.
        """
        stamp = next(self._probe_numbers)
        try:
            await asyncio.wait_for(self._on(self._writer, lambda: self._probe_write(stamp)), 5)
            seen = await asyncio.wait_for(self._on(self._reader, self._probe_read), 5)
        except (sqlite3.Error, BackendUnavailable) as err:
            return DependencyHealth(False, f"SQLite {self.path}: {err}")
        except TimeoutError:
            return DependencyHealth(False, f"SQLite {self.path}: the probe took over 5 s")
        if seen is None or seen < stamp:
            return DependencyHealth(False, f"SQLite {self.path}: the probe row did not read back")
        return DependencyHealth(True, f"SQLite {self.path} (WAL, synchronous={self._synchronous})")

    def _probe_write(self, stamp: int) -> None:
        conn = self._wconn()
        conn.execute(
            "INSERT INTO health_probe (id, at_ns) VALUES (1, ?) "
            "ON CONFLICT (id) DO UPDATE SET at_ns = excluded.at_ns",
            (stamp,),
        )

    def _probe_read(self) -> int | None:
        row = self._rconn().execute("SELECT at_ns FROM health_probe WHERE id = 1").fetchone()
        return int(row[0]) if row else None

    def stats(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "file_bytes": _size(self.path),
            "wal_bytes": _size(f"{self.path}-wal"),
            "synchronous": self._synchronous,
            "expired_events": self._expired,
            "last_error": self._last_error,
        }


def _create_private(path: str) -> None:
    """Create the database file readable by its owner only (0600), if it is missing.

    The events may hold anything Home Assistant knows; SQLite would create the file
    0644 under the usual umask. Its -wal and -shm files take the database file's mode
    (SQLite's unix VFS), so they are 0600 too. An existing file keeps its mode.
    """
    # Any other failure (a read-only folder) is SQLite's to report, in its own words.
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None
