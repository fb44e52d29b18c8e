"""The durable outbox: the only buffer of the pipeline.

The event loop only appends raw items to an in-memory intake (a deque: O(1), no I/O, no
encoding) and wakes the worker thread, at most one wake-up pending at a time. One
dedicated worker thread owns everything else: it encodes the intake (validation
failures become dead letters at once), keeps the SQLite file (WAL, ``synchronous=NORMAL``
like Home Assistant's recorder, so a committed record survives a process crash), and
answers the async methods, which hand it a command and await its future.

State of a record: ready or in flight. In-flight state lives only in memory, so after a
crash or a restart every row in the file is ready again. Records are ordered by ``seq``
(FIFO); a nacked record goes back to its original position.

Where records live:

- the file (``outbox`` table): everything in ``always`` mode, and in ``on_backlog`` mode
  once a target is down, the memory buffer is full, on ``persist()`` and on close;
- memory: new records in ``on_backlog`` mode while delivery keeps up, and in ``always``
  mode only while the file refuses writes (disk full), so no event is lost to that.

Every in-memory record is newer than every record in the file (memory is always written
out as a whole), so FIFO holds across both: ready records in the file go first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import heapq
import logging
import os
import queue
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

import orjson

from .envelope import EncodedEvent, ValidationError, new_event_id

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Marks the file as ours, so a foreign SQLite database is never mistaken for an outbox.
APPLICATION_ID: Final = 0x48414F42  # "HAOB"
SCHEMA_VERSION: Final = 1

ENCODE_ERROR = "encode_error"
OUTBOX_TARGET = "outbox"

_BATCH_EVENTS = 1000  # intake items encoded per transaction
_BATCH_BYTES = 8 * 1024 * 1024  # ... or fewer when they are big
_DEAD_PAYLOAD_LIMIT = 64 * 1024  # best-effort copy of an item that could not be encoded
_IN_CHUNK = 500  # ids per "IN (...)" query
_INSERT_ROWS = 64  # rows per multi-row INSERT statement (7 values each, under any limit)
_TAIL_EVENTS = 5_000  # rows just written kept in memory too, so take() need not read them
_TAIL_BYTES = 4 * 1024 * 1024
_LOG_EVERY = 60.0  # seconds between repeated warnings of one kind
_DISK_RETRY = 1.0  # seconds before writing again after the file refused a write
_REST_BACKLOG = 100_000  # no rests while the intake holds this many (memory)

_SCHEMA = (
    """CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL,
        payload BLOB NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        enqueued_at REAL NOT NULL,
        first_failure REAL,
        last_failure REAL
    )""",
    """CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL,
        payload BLOB NOT NULL,
        reason TEXT NOT NULL,
        message TEXT NOT NULL,
        target TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        first_failure REAL NOT NULL,
        last_failure REAL NOT NULL
    )""",
)
_COLUMNS: Final = {
    "outbox": {
        "seq",
        "event_id",
        "payload",
        "attempts",
        "enqueued_at",
        "first_failure",
        "last_failure",
    },
    "dead_letters": {
        "id",
        "event_id",
        "payload",
        "reason",
        "message",
        "target",
        "attempts",
        "first_failure",
        "last_failure",
    },
}
_OUR_TABLES: Final = {*_COLUMNS, "sqlite_sequence"}

_INSERT = "INSERT INTO outbox VALUES (?, ?, ?, ?, ?, ?, ?)"
_INSERT_MANY = "INSERT INTO outbox VALUES " + ",".join(["(?, ?, ?, ?, ?, ?, ?)"] * _INSERT_ROWS)
_DELETE_RANGE = "DELETE FROM outbox WHERE seq BETWEEN ? AND ?"
_SCAN = (
    "SELECT seq, event_id, payload, attempts, enqueued_at, first_failure, last_failure"
    " FROM outbox WHERE seq > ? ORDER BY seq"
)
_DELETE = "DELETE FROM outbox WHERE seq = ?"
_INSERT_DEAD = (
    "INSERT INTO dead_letters (event_id, payload, reason, message, target, attempts,"
    " first_failure, last_failure) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_DEAD_COLUMNS = (
    "id, event_id, payload, reason, message, target, attempts, first_failure, last_failure"
)

# (seq, event_id, payload, attempts, enqueued_at, first_failure, last_failure): the
# outbox row as stored, and as kept in memory, so writing memory out is one executemany.
type _Row = tuple[int, str, bytes, int, float, float | None, float | None]
# (event_id, payload, reason, message, target, attempts, first_failure, last_failure)
type _DeadRow = tuple[str, bytes, str, str, str, int, float, float]


class Durability(StrEnum):
    """When records are written to the file."""

    ALWAYS = "always"  # every record, committed within ~commit_interval
    ON_BACKLOG = "on_backlog"  # only while delivery does not keep up, and on close


class OutboxClosedError(RuntimeError):
    """The outbox is closing or closed."""


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One pending event handed to the forwarder."""

    seq: int  # FIFO position; the SQLite rowid
    event_id: str
    payload: bytes  # the encoded envelope, sent as is
    attempts: int  # failed delivery attempts so far
    enqueued_at: float  # clock() when the worker took it in (for enqueue-to-ack latency)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event that will not be delivered without a person's decision."""

    id: int
    event_id: str
    payload: bytes
    reason: str  # machine-readable code, e.g. VALIDATION_ERROR, payload_too_large
    message: str
    target: str  # the route that refused it, or "outbox" when it could not be encoded
    attempts: int  # including the one that failed for good
    first_failure: float
    last_failure: float


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int  # waiting: in the file and in memory, including in flight
    pending_bytes: int
    in_flight: int
    dead_letters: int
    dropped: int  # dropped at the caps since open
    oldest_enqueued_at: float | None
    appended: int  # counters since open
    acked: int
    on_disk: int  # how many of pending are in the file
    dead_letters_dropped: int = 0  # oldest dead letters dropped at their cap since open


_EMPTY_STATS = OutboxStats(0, 0, 0, 0, 0, None, 0, 0, 0)


class _Unusable(Exception):
    """The file is not a usable outbox (corrupt, not a database, or foreign)."""


class _RateLimitedLog:
    """Log one kind of problem at most once per interval, with a count of the rest."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(
        self, key: str, level: int, msg: str, *args: object, exc_info: BaseException | None = None
    ) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < _LOG_EVERY:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        self._logger.log(level, msg, *args, exc_info=exc_info)


def _chunks[X](items: list[X], size: int) -> Iterator[list[X]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _insert_rows(conn: sqlite3.Connection, rows: list[_Row]) -> None:
    """Insert rows, many per statement: one SQLite step (and one release of the GIL) per
    _INSERT_ROWS rows instead of one per row."""
    full = len(rows) - len(rows) % _INSERT_ROWS
    for start in range(0, full, _INSERT_ROWS):
        conn.execute(
            _INSERT_MANY, [value for row in rows[start : start + _INSERT_ROWS] for value in row]
        )
    if full < len(rows):
        conn.executemany(_INSERT, rows[full:])


def _runs(seqs: list[int]) -> Iterator[tuple[int, int]]:
    """Sorted seqs as (first, last) runs of consecutive numbers."""
    first = last = seqs[0]
    for seq in seqs[1:]:
        if seq != last + 1:
            yield first, last
            first = seq
        last = seq
    yield first, last


def _is_corruption(err: sqlite3.DatabaseError) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    if code is None:  # no code: judge by the message SQLite gives for these two cases
        text = str(err)
        return "not a database" in text or "malformed" in text
    return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _make_private(path: Path) -> None:
    """The outbox file readable by its owner only (0600), whatever the umask: it holds
    the events. Created so before SQLite opens it (SQLite gives the -wal and -shm files
    the main file's mode); files of an older version are narrowed. A file system that
    refuses chmod (some network shares) does not stop the outbox.
    """
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            os.chmod(f"{path}{suffix}", 0o600)


class _Store:
    """Every piece of outbox state. Only the worker thread touches it."""

    def __init__(
        self,
        path: Path,
        *,
        durability: Durability,
        max_events: int,
        max_bytes: int,
        memory_limit_events: int,
        max_dead_letters: int,
        max_dead_bytes: int,
        on_drop: Callable[[int], None] | None,
        on_dead_letter: Callable[[DeadLetter], None] | None,
        clock: Callable[[], float],
        logger: logging.Logger,
    ) -> None:
        self.path = path
        self.durability = durability
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.memory_limit_events = memory_limit_events
        self.max_dead_letters = max_dead_letters
        self.max_dead_bytes = max_dead_bytes
        self.on_drop = on_drop
        self.on_dead_letter = on_dead_letter
        self.clock = clock
        self.logger = logger
        self.log_limited = _RateLimitedLog(logger)
        self.conn: sqlite3.Connection | None = None
        self.backlogged = False  # set from the loop thread; a bool store is atomic
        self.next_seq = 1
        # The file. Every ready row has seq > cursor (nack moves it back).
        self.disk_count = 0
        self.disk_bytes = 0
        self.cursor = 0
        self.disk_inflight: dict[int, _Row] = {}
        # Rows written to the file lately, oldest first: while valid (tail_from is not
        # None) it holds every row in the file with seq > tail_from, so once the cursor
        # has reached tail_from, take() reads them from here instead of the file.
        self.tail: deque[_Row] = deque()
        self.tail_bytes = 0
        self.tail_from: int | None = None
        self.oldest_disk: float | None = None
        self.oldest_dirty = True
        self.disk_retry_at = 0.0
        # Memory, all newer than the file: nacked rows (a heap by seq, all older than
        # mem_ready), never-taken rows in order, and rows in flight.
        self.mem_returned: list[_Row] = []
        self.mem_ready: deque[_Row] = deque()
        self.mem_inflight: dict[int, _Row] = {}
        self.mem_bytes = 0
        self.dead_count = 0
        self.dead_bytes = 0  # of the dead letters' payloads
        # Counters since open.
        self.appended = 0
        self.acked = 0
        self.dropped = 0
        self.dead_dropped = 0

    @property
    def db(self) -> sqlite3.Connection:
        if self.conn is None:
            raise OutboxClosedError("the outbox file is not open")
        return self.conn

    # -- opening ---------------------------------------------------------------------

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = self._connect()
        except _Unusable as err:
            self._move_aside(str(err))
            conn = self._connect()
        self.conn = conn
        count, total, max_seq = conn.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0), coalesce(max(seq), 0) FROM outbox"
        ).fetchone()
        self.disk_count, self.disk_bytes = count, total
        self.next_seq = max_seq + 1
        self._count_dead()
        self.logger.info(
            "Outbox %s opened: %d pending events recovered, %d dead letters",
            self.path,
            count,
            self.dead_count,
        )
        self.enforce_caps()  # the caps may have been lowered since the last run
        self._cap_dead()

    def _connect(self) -> sqlite3.Connection:
        _make_private(self.path)
        # Autocommit mode: transactions are explicit (BEGIN ... COMMIT), one per batch.
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            # Only reads until the file is known to be ours: a foreign file stays as it was.
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise _Unusable("quick_check failed: " + "; ".join(map(str, problems[:3])))
            new = self._check_schema(conn)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                self.logger.warning("Outbox %s: journal mode is %s, not WAL", self.path, mode)
            conn.execute("PRAGMA synchronous=NORMAL")
            # Let the WAL shrink back after a big backlog has been checkpointed.
            conn.execute("PRAGMA journal_size_limit=67108864")
            if new:
                conn.execute("BEGIN")
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                conn.execute("COMMIT")
        except _Unusable:
            conn.close()
            raise
        except sqlite3.DatabaseError as err:
            conn.close()
            if _is_corruption(err):
                raise _Unusable(str(err)) from err
            raise  # locked, unreadable, ...: not a reason to move a file aside
        return conn

    @staticmethod
    def _check_schema(conn: sqlite3.Connection) -> bool:
        """True for a new (empty) file; raises `_Unusable` unless the file is ours."""
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if app_id == 0 and not tables:
            return True
        if app_id != APPLICATION_ID:
            raise _Unusable(f"foreign database (application_id {app_id}, tables {sorted(tables)})")
        if version != SCHEMA_VERSION:
            raise _Unusable(f"schema version {version}, expected {SCHEMA_VERSION}")
        if not tables <= _OUR_TABLES:
            raise _Unusable(f"unexpected tables {sorted(tables - _OUR_TABLES)}")
        for table, columns in _COLUMNS.items():
            found = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            if found != columns:
                raise _Unusable(f"table {table} has columns {sorted(found)}")
        return False

    def _move_aside(self, why: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                os.replace(source, f"{target}{suffix}")
        self.logger.error(
            "Outbox file %s is unusable (%s); moved it aside to %s and started a new, empty outbox",
            self.path,
            why,
            target,
        )

    def spill_at_close(self) -> None:
        try:
            self.spill()
        except sqlite3.Error as err:
            self.logger.error(
                "Outbox %s: could not write %d in-memory events at close, they are lost: %s",
                self.path,
                self.mem_count,
                err,
            )

    def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            conn.close()

    # -- bookkeeping ------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self.db
        conn.execute("BEGIN")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @property
    def mem_count(self) -> int:
        return len(self.mem_returned) + len(self.mem_ready) + len(self.mem_inflight)

    @property
    def pending(self) -> int:
        return self.disk_count + self.mem_count

    @property
    def ready(self) -> int:
        return (
            self.disk_count - len(self.disk_inflight) + len(self.mem_returned) + len(self.mem_ready)
        )

    def stats(self) -> OutboxStats:
        return OutboxStats(
            pending=self.pending,
            pending_bytes=self.disk_bytes + self.mem_bytes,
            in_flight=len(self.disk_inflight) + len(self.mem_inflight),
            dead_letters=self.dead_count,
            dropped=self.dropped,
            oldest_enqueued_at=self._oldest(),
            appended=self.appended,
            acked=self.acked,
            on_disk=self.disk_count,
            dead_letters_dropped=self.dead_dropped,
        )

    def _oldest(self) -> float | None:
        if self.disk_count:  # the file holds the oldest records
            if self.oldest_dirty:
                row = self.db.execute(
                    "SELECT enqueued_at FROM outbox ORDER BY seq LIMIT 1"
                ).fetchone()
                self.oldest_disk = None if row is None else row[0]
                self.oldest_dirty = False
            return self.oldest_disk
        heads: list[_Row] = []
        if self.mem_returned:
            heads.append(self.mem_returned[0])
        if self.mem_ready:
            heads.append(self.mem_ready[0])
        if self.mem_inflight:
            heads.append(self.mem_inflight[min(self.mem_inflight)])
        return min(heads)[4] if heads else None

    # -- adding ------------------------------------------------------------------------

    def add(self, rows: list[_Row], nbytes: int) -> None:
        """New records: the newest of all, so they join the memory tail, then maybe the file."""
        self.mem_ready.extend(rows)
        self.mem_bytes += nbytes
        self.appended += len(rows)
        self.enforce_caps()  # before writing, so records dropped at once cost no I/O
        if self._should_spill():
            try:
                self.spill()
            except sqlite3.Error as err:
                # Keep them in memory (delivery goes on from there) and try again soon.
                self.disk_retry_at = time.monotonic() + _DISK_RETRY
                self.log_limited(
                    "write",
                    logging.ERROR,
                    "Outbox %s: cannot write to the file (%s); keeping %d events in memory",
                    self.path,
                    err,
                    self.mem_count,
                )

    def retry_write(self) -> None:
        """Write memory out once the file accepts writes again (``always`` mode, disk full)."""
        if not self.disk_retry_at or time.monotonic() < self.disk_retry_at:
            return
        self.disk_retry_at = 0.0
        if self._should_spill():
            try:
                self.spill()
            except sqlite3.Error:
                self.disk_retry_at = time.monotonic() + _DISK_RETRY

    def _should_spill(self) -> bool:
        if not self.mem_count or time.monotonic() < self.disk_retry_at:
            return False
        return (
            self.durability is Durability.ALWAYS
            or self.backlogged
            or self.disk_count > 0  # keep memory newer than the file
            or self.mem_count > self.memory_limit_events
        )

    def _memory_rows(self) -> list[_Row]:
        return [*self.mem_returned, *self.mem_ready, *self.mem_inflight.values()]

    def _memory_written(self) -> None:
        """Memory was just committed to the file: account for it there."""
        self.disk_count += self.mem_count
        self.disk_bytes += self.mem_bytes
        self.disk_inflight.update(self.mem_inflight)
        self.mem_returned.clear()
        self.mem_ready.clear()
        self.mem_inflight.clear()
        self.mem_bytes = 0
        self.oldest_dirty = True
        self.disk_retry_at = 0.0

    def spill(self) -> None:
        """Write every in-memory record to the file, in one transaction."""
        if not self.mem_count:
            return
        rows = self._memory_rows()
        # Ready ones only (oldest first; returned rows are older than never-taken ones):
        # rows in flight leave the file when settled, or send everything back to reading
        # the file when nacked.
        ready = [*sorted(self.mem_returned), *self.mem_ready]
        with self._transaction() as conn:
            _insert_rows(conn, rows)
        self._memory_written()
        if ready:
            self._extend_tail(ready)

    def _extend_tail(self, rows: list[_Row]) -> None:
        """Ready rows just written (sorted, newer than any other ready row in the file)."""
        tail = self.tail
        if self.tail_from is None:
            self.tail_from = rows[0][0] - 1
        tail.extend(rows)
        self.tail_bytes += sum(len(row[2]) for row in rows)
        while len(tail) > _TAIL_EVENTS or self.tail_bytes > _TAIL_BYTES:
            row = tail.popleft()
            self.tail_bytes -= len(row[2])
            self.tail_from = row[0]  # still: every file row after this one is in the tail

    def _forget_tail(self) -> None:
        """The file changed in a way the tail does not follow: read from the file again."""
        self.tail.clear()
        self.tail_bytes = 0
        self.tail_from = None

    def enforce_caps(self) -> None:
        """Drop the oldest ready records while over a cap; in-flight ones stay."""
        over_events = self.pending - self.max_events
        over_bytes = self.disk_bytes + self.mem_bytes - self.max_bytes
        if over_events <= 0 and over_bytes <= 0:
            return
        dropped = 0
        if self.disk_count > len(self.disk_inflight):
            victims: list[tuple[int]] = []
            freed = 0
            last = self.cursor
            cursor = self.db.execute(
                "SELECT seq, length(payload) FROM outbox WHERE seq > ? ORDER BY seq",
                (self.cursor,),
            )
            try:
                for seq, size in cursor:
                    if seq in self.disk_inflight:
                        continue
                    victims.append((seq,))
                    freed += size
                    last = seq
                    if over_events - len(victims) <= 0 and over_bytes - freed <= 0:
                        break
            finally:
                cursor.close()
            try:
                with self._transaction() as conn:
                    conn.executemany(_DELETE, victims)
            except sqlite3.Error as err:
                self.log_limited(
                    "drop", logging.ERROR, "Outbox %s: cannot drop events: %s", self.path, err
                )
            else:
                self._forget_tail()
                self.disk_count -= len(victims)
                self.disk_bytes -= freed
                self.cursor = last
                self.oldest_dirty = True
                dropped += len(victims)
                over_events -= len(victims)
                over_bytes -= freed
        while (over_events > 0 or over_bytes > 0) and (self.mem_returned or self.mem_ready):
            row = (
                heapq.heappop(self.mem_returned) if self.mem_returned else self.mem_ready.popleft()
            )
            size = len(row[2])
            self.mem_bytes -= size
            over_events -= 1
            over_bytes -= size
            dropped += 1
        if not dropped:
            return
        self.dropped += dropped
        self.log_limited(
            "cap",
            logging.WARNING,
            "Outbox %s is full (%d events, %d bytes; caps %d events, %d bytes): dropped the"
            " %d oldest events (%d since open)",
            self.path,
            self.pending,
            self.disk_bytes + self.mem_bytes,
            self.max_events,
            self.max_bytes,
            dropped,
            self.dropped,
        )
        if self.on_drop is not None:
            try:
                self.on_drop(dropped)
            except Exception:
                self.logger.exception("Outbox on_drop callback failed")

    # -- the forwarder's side --------------------------------------------------------

    def take(self, max_events: int, max_bytes: int | None) -> list[OutboxRecord]:
        taken: list[OutboxRecord] = []
        budget = sys.maxsize if max_bytes is None else max_bytes
        total = 0
        if self.disk_count > len(self.disk_inflight):
            if self.tail_from is not None and self.cursor >= self.tail_from:
                total = self._take_tail(taken, max_events, budget)
            else:
                total = self._take_file(taken, max_events, budget)
            if total < 0:  # full
                return taken
        while self.mem_returned or self.mem_ready:
            row = self.mem_returned[0] if self.mem_returned else self.mem_ready[0]
            size = len(row[2])
            if taken and total + size > budget:
                break
            if self.mem_returned:
                heapq.heappop(self.mem_returned)
            else:
                self.mem_ready.popleft()
            self.mem_inflight[row[0]] = row
            taken.append(OutboxRecord(row[0], row[1], row[2], row[3], row[4]))
            total += size
            if len(taken) >= max_events:
                break
        return taken

    def _take_file(self, taken: list[OutboxRecord], max_events: int, budget: int) -> int:
        """Ready rows from the file into ``taken``; their total size, or -1 when full."""
        total = 0
        cursor = self.db.execute(_SCAN, (self.cursor,))  # read lazily, never the whole file
        try:
            for row in cursor:
                seq = row[0]
                if seq in self.disk_inflight:
                    continue
                size = len(row[2])
                if taken and total + size > budget:
                    return -1
                self.disk_inflight[seq] = row
                # Everything up to here is now in flight (or gone).
                self.cursor = seq
                taken.append(OutboxRecord(seq, row[1], row[2], row[3], row[4]))
                total += size
                if len(taken) >= max_events:
                    return -1
        finally:
            cursor.close()
        return total

    def _take_tail(self, taken: list[OutboxRecord], max_events: int, budget: int) -> int:
        """`_take_file` without reading: every ready row of the file is in the tail."""
        total = 0
        tail = self.tail
        inflight = self.disk_inflight
        while tail:
            row = tail[0]
            seq = row[0]
            if seq > self.cursor and seq not in inflight:
                size = len(row[2])
                if taken and total + size > budget:
                    return -1
                inflight[seq] = row
                taken.append(OutboxRecord(seq, row[1], row[2], row[3], row[4]))
                total += size
            # Taken now, or taken before: the tail moves on, and so does the cursor.
            tail.popleft()
            self.tail_bytes -= len(row[2])
            self.tail_from = seq
            self.cursor = max(self.cursor, seq)
            if len(taken) >= max_events:
                return -1
        return total

    def ack(self, seqs: Iterable[int]) -> None:
        unique = list(dict.fromkeys(seqs))
        disk = [seq for seq in unique if seq in self.disk_inflight]
        if disk:
            disk.sort()
            with self._transaction() as conn:
                # Acked rows are in flight, so a run of consecutive seqs holds no others.
                conn.executemany(_DELETE_RANGE, _runs(disk))
            for seq in disk:
                row = self.disk_inflight.pop(seq)
                self.disk_count -= 1
                self.disk_bytes -= len(row[2])
            self.oldest_dirty = True
        acked = len(disk)
        for seq in unique:
            mem_row = self.mem_inflight.pop(seq, None)
            if mem_row is not None:
                self.mem_bytes -= len(mem_row[2])
                acked += 1
        self.acked += acked

    def nack(self, seqs: Iterable[int], *, count_attempt: bool) -> None:
        unique = list(dict.fromkeys(seqs))
        now = self.clock()
        disk = [seq for seq in unique if seq in self.disk_inflight]
        if disk and count_attempt:
            with self._transaction() as conn:
                conn.executemany(
                    "UPDATE outbox SET attempts = attempts + 1,"
                    " first_failure = coalesce(first_failure, ?), last_failure = ?"
                    " WHERE seq = ?",
                    [(now, now, seq) for seq in disk],
                )
        for seq in disk:
            del self.disk_inflight[seq]
        if disk:
            self.cursor = min(self.cursor, min(disk) - 1)
            self._forget_tail()
        for seq in unique:
            row = self.mem_inflight.pop(seq, None)
            if row is None:
                continue
            if count_attempt:
                _, event_id, payload, attempts, enqueued_at, first, _ = row
                first = now if first is None else first
                row = (seq, event_id, payload, attempts + 1, enqueued_at, first, now)
            heapq.heappush(self.mem_returned, row)

    def dead_letter(self, seqs: Iterable[int], reason: str, message: str, target: str) -> None:
        now = self.clock()
        disk: list[int] = []
        memory: list[int] = []
        dead: list[_DeadRow] = []
        for seq in dict.fromkeys(seqs):
            row = self.disk_inflight.get(seq)
            if row is not None:
                disk.append(seq)
            else:
                row = self.mem_inflight.get(seq)
                if row is None:
                    continue  # not in flight: nothing to move
                memory.append(seq)
            _, event_id, payload, attempts, _, first, _ = row
            first = now if first is None else first
            dead.append((event_id, payload, reason, message, target, attempts + 1, first, now))
        if not dead:
            return
        with self._transaction() as conn:
            ids = [conn.execute(_INSERT_DEAD, values).lastrowid or 0 for values in dead]
            conn.executemany(_DELETE, [(seq,) for seq in disk])
        for seq in disk:
            row = self.disk_inflight.pop(seq)
            self.disk_count -= 1
            self.disk_bytes -= len(row[2])
        if disk:
            self.oldest_dirty = True
        for seq in memory:
            self.mem_bytes -= len(self.mem_inflight.pop(seq)[2])
        self._dead_added(ids, dead)

    def store_dead(self, dead: list[_DeadRow]) -> None:
        """Dead letters that never were records (the item could not be encoded)."""
        with self._transaction() as conn:
            ids = [conn.execute(_INSERT_DEAD, values).lastrowid or 0 for values in dead]
        self._dead_added(ids, dead)

    def _dead_added(self, ids: list[int], dead: list[_DeadRow]) -> None:
        self.dead_count += len(ids)
        self.dead_bytes += sum(len(row[1]) for row in dead)
        self.log_limited(
            "dead",
            logging.WARNING,
            "Outbox %s: %d events moved to dead letters (last reason %s: %s)",
            self.path,
            len(ids),
            dead[-1][2],
            dead[-1][3],
        )
        self._cap_dead()
        if self.on_dead_letter is not None:
            for dead_id, values in zip(ids, dead, strict=True):
                try:
                    self.on_dead_letter(DeadLetter(dead_id, *values))
                except Exception:
                    self.logger.exception("Outbox on_dead_letter callback failed")

    def _count_dead(self) -> None:
        self.dead_count, self.dead_bytes = self.db.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM dead_letters"
        ).fetchone()

    def _cap_dead(self) -> None:
        """Drop the oldest dead letters past either cap: their count, their bytes."""
        count, size, last = self.dead_count, self.dead_bytes, 0
        if count <= self.max_dead_letters and size <= self.max_dead_bytes:
            return
        # Only as many rows are read as are dropped (usually a few).
        rows = self.db.execute("SELECT id, length(payload) FROM dead_letters ORDER BY id")
        try:
            for dead_id, length in rows:
                if count <= self.max_dead_letters and size <= self.max_dead_bytes:
                    break
                count, size, last = count - 1, size - length, dead_id
        finally:
            rows.close()
        with self._transaction() as conn:
            conn.execute("DELETE FROM dead_letters WHERE id <= ?", (last,))
        dropped = self.dead_count - count
        self.dead_count, self.dead_bytes = count, size
        self.dead_dropped += dropped
        self.log_limited(
            "dead_cap",
            logging.WARNING,
            "Outbox %s: over %d dead letters or %d bytes of them, dropped the %d oldest",
            self.path,
            self.max_dead_letters,
            self.max_dead_bytes,
            dropped,
        )

    # -- dead letters ------------------------------------------------------------------

    def list_dead(self, limit: int, offset: int) -> list[DeadLetter]:
        rows = self.db.execute(
            f"SELECT {_DEAD_COLUMNS} FROM dead_letters ORDER BY id LIMIT ? OFFSET ?",
            (limit, offset),
        ).fetchall()
        return [DeadLetter(*row) for row in rows]

    def _dead_chunks(self, ids: Iterable[int] | None) -> Iterator[list[Any]]:
        select = (
            "SELECT id, event_id, payload, attempts, first_failure, last_failure FROM dead_letters"
        )
        if ids is None:
            after = 0
            while rows := self.db.execute(
                f"{select} WHERE id > ? ORDER BY id LIMIT ?", (after, _IN_CHUNK)
            ).fetchall():
                after = rows[-1][0]
                yield rows
            return
        for chunk in _chunks(sorted(set(ids)), _IN_CHUNK):
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(f"{select} WHERE id IN ({marks}) ORDER BY id", chunk).fetchall()
            if rows:
                yield rows

    def replay(self, ids: Iterable[int] | None) -> int:
        """Dead letters back to the end of the outbox, written to the file at once."""
        replayed = 0
        for rows in self._dead_chunks(ids):
            now = self.clock()
            seq = self.next_seq
            new: list[_Row] = [
                (seq + index, event_id, payload, attempts, now, first, last)
                for index, (_, event_id, payload, attempts, first, last) in enumerate(rows)
            ]
            memory = self._memory_rows()
            with self._transaction() as conn:
                conn.executemany(_INSERT, memory)  # first, so memory stays the newest
                conn.executemany(_INSERT, new)
                conn.executemany("DELETE FROM dead_letters WHERE id = ?", [(r[0],) for r in rows])
            self._forget_tail()
            if memory:
                self._memory_written()
            self.next_seq = seq + len(new)
            self.disk_count += len(new)
            self.disk_bytes += sum(len(row[2]) for row in new)
            self.dead_count -= len(rows)
            self.dead_bytes -= sum(len(row[2]) for row in rows)
            self.oldest_dirty = True
            replayed += len(rows)
        if replayed:
            self.enforce_caps()
        return replayed

    def purge(self, ids: Iterable[int] | None) -> int:
        with self._transaction() as conn:
            if ids is None:
                purged = conn.execute("DELETE FROM dead_letters").rowcount
            else:
                purged = conn.executemany(
                    "DELETE FROM dead_letters WHERE id = ?", [(i,) for i in set(ids)]
                ).rowcount
        self._count_dead()  # their sizes are not known here
        return purged


# (work, its future, whether to skip it when cancelled before it ran). Only a take is
# skipped: an ack, nack or dead letter the caller stopped waiting for still happens.
_Command = tuple[Callable[[], Any], "concurrent.futures.Future[Any]", bool]


class _State(Enum):
    NEW = "new"
    OPENING = "opening"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Outbox(Generic[T]):
    """Durable FIFO outbox with dead letters; one worker thread owns the SQLite file.

    ``append``/``append_many`` are for the event loop and never block. Every other
    coroutine is one round trip to the worker thread. Callbacks (``on_drop``,
    ``on_dead_letter``) run on the worker thread: keep them short and thread-safe.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        encode: Callable[[T], EncodedEvent],
        *,
        durability: Durability = Durability.ALWAYS,
        max_events: int = 1_000_000,
        max_bytes: int = 512 * 1024 * 1024,
        memory_limit_events: int = 10_000,
        commit_interval: float = 0.1,
        busy_rest: float = 10.0,
        max_rest_lag: float = 5.0,
        max_dead_letters: int = 100_000,
        max_dead_bytes: int = 64 * 1024 * 1024,
        on_drop: Callable[[int], None] | None = None,
        on_dead_letter: Callable[[DeadLetter], None] | None = None,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
    ) -> None:
        if (
            min(max_events, max_bytes) < 1
            or min(memory_limit_events, max_dead_letters, max_dead_bytes) < 0
        ):
            raise ValueError("outbox caps must be positive")
        self.path = Path(path)
        self._encode = encode
        self._clock = clock
        self._logger = logger or _LOGGER
        self._log_limited = _RateLimitedLog(self._logger)
        self._commit_interval = commit_interval
        # While the event loop keeps appending (a burst), the worker rests this many times
        # as long as its last transaction took (at most commit_interval), so the loop has
        # the interpreter to itself most of the time; 0 = never rest. Only while the
        # backlog is younger than max_rest_lag (5 s: Home Assistant's recorder commits
        # every 5 s) and under _REST_BACKLOG events: then it works flat out until the
        # intake is empty.
        self._busy_rest = busy_rest
        self._max_rest_lag = max_rest_lag  # no more rests once the backlog is this old
        self._resume_at = 0.0
        self._backlog_since: float | None = None  # when the intake was last seen empty
        self._store = _Store(
            self.path,
            durability=Durability(durability),
            max_events=max_events,
            max_bytes=max_bytes,
            memory_limit_events=memory_limit_events,
            max_dead_letters=max_dead_letters,
            max_dead_bytes=max_dead_bytes,
            on_drop=on_drop,
            on_dead_letter=on_dead_letter,
            clock=clock,
            logger=self._logger,
        )
        self._intake: deque[T] = deque()
        self._commands: queue.SimpleQueue[_Command | None] = queue.SimpleQueue()
        # Commands put and done (appends' wake-ups not counted): one writer each.
        self._submitted = 0
        self._taken = 0
        self._wake_pending = False
        self._state = _State.NEW
        self._accepting = True  # append allowed (False from the start of close)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False  # the worker thread leaves its loop
        self._close_future: concurrent.futures.Future[None] | None = None
        # Takes whose caller was cancelled while the worker ran them (see take()).
        self._settle_lock = threading.Lock()
        self._abandoned: set[concurrent.futures.Future[Any]] = set()
        # Readiness, shared with the loop: the worker writes the hint, then sets the
        # event when the loop announced a waiter (checked in this order on both sides).
        self._ready_event = asyncio.Event()
        self._want_ready = False
        self._ready_hint = 0
        self._snapshot = _EMPTY_STATS

    @property
    def durability(self) -> Durability:
        return self._store.durability

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Start the worker thread and open (or create, or recover) the file."""
        if self._state is not _State.NEW:
            raise RuntimeError("an outbox can be opened once")
        self._loop = asyncio.get_running_loop()
        self._state = _State.OPENING
        self._thread = threading.Thread(
            target=self._run, name=f"ha_ingestor_outbox[{self.path.name}]", daemon=True
        )
        self._thread.start()
        try:
            await self._call(self._open_in_worker)
        except BaseException:
            self._accepting = False
            try:
                await self._wait_closed()
            finally:
                self._state = _State.CLOSED
                self._discard_intake("the outbox could not be opened")
            raise
        if self._state is _State.OPENING:
            self._state = _State.OPEN

    async def close(self) -> None:
        """Drain the intake, write memory to the file, close it and join the thread.

        Idempotent, and safe when ``open()`` was never called or failed.
        """
        if self._state is _State.CLOSED:
            return
        self._accepting = False
        self._ready_event.set()  # waiters wake and see the outbox closing
        if self._state is _State.NEW:
            self._state = _State.CLOSED
            self._discard_intake("the outbox was closed without being opened")
            return
        self._state = _State.CLOSING
        try:
            await self._wait_closed()
        finally:
            if self._close_future is not None and self._close_future.done():
                self._state = _State.CLOSED

    @property
    def closed(self) -> bool:
        return self._state in (_State.CLOSING, _State.CLOSED)

    # -- the event loop's side -------------------------------------------------------

    def append(self, item: T) -> None:
        """Hand one item over (event loop only): O(1), no I/O, no encoding."""
        if not self._accepting:
            raise OutboxClosedError("the outbox is closed")
        self._intake.append(item)
        if not self._wake_pending:
            self._wake_pending = True
            self._commands.put(None)

    def append_many(self, items: Iterable[T]) -> None:
        if not self._accepting:
            raise OutboxClosedError("the outbox is closed")
        self._intake.extend(items)
        if not self._wake_pending:
            self._wake_pending = True
            self._commands.put(None)

    def set_backlog(self, backlogged: bool) -> None:
        """on_backlog: while True (a target is down) records go to the file."""
        self._store.backlogged = backlogged
        if backlogged and self._state in (_State.OPENING, _State.OPEN):
            self._submit(self._persist_quietly)

    def ready_hint(self) -> int:
        """Ready records as of the worker's last batch: cheap and approximate."""
        return self._ready_hint

    async def wait_ready(self) -> None:
        """Return when at least one record is ready to take (at once if so)."""
        while True:
            if not self._accepting:
                raise OutboxClosedError("the outbox is closed")
            if self._ready_hint > 0:
                return
            self._ready_event.clear()
            self._want_ready = True
            if self._ready_hint > 0:  # the worker may have updated it meanwhile
                return
            await self._ready_event.wait()

    def stats_nowait(self) -> OutboxStats:
        """The worker's last snapshot, plus what waits in the intake; from any thread."""
        waiting = len(self._intake)
        snapshot = self._snapshot
        if waiting:
            return replace(snapshot, pending=snapshot.pending + waiting)
        return snapshot

    # -- round trips to the worker -----------------------------------------------------

    async def take(self, max_events: int, max_bytes: int | None = None) -> list[OutboxRecord]:
        """The oldest ready records, FIFO, now in flight; at least one if any is ready.

        ``max_bytes`` bounds the sum of payloads, except that a single record larger than
        it is still taken alone. A cancelled take never leaves records stuck in flight:
        they are back (without counting an attempt) before any later command runs.
        """
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        future = self._submit(lambda: self._store.take(max_events, max_bytes), skippable=True)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            with self._settle_lock:
                if not future.done():
                    self._abandoned.add(future)  # the worker puts them back itself
                    raise
            if not future.cancelled() and future.exception() is None:
                seqs = [record.seq for record in future.result()]
                if seqs:
                    with contextlib.suppress(OutboxClosedError):  # ready again at reopen
                        self._submit(lambda: self._store.nack(seqs, count_attempt=False))
            raise

    async def ack(self, seqs: Iterable[int]) -> None:
        """Delivered: delete. Seqs that are not in flight are ignored."""
        seqs = list(seqs)
        await self._call(lambda: self._store.ack(seqs))

    def ack_soon(self, seqs: Iterable[int]) -> asyncio.Future[None]:
        """`ack`, handed to the worker now; await the answer when convenient.

        The worker runs commands in order, so any command given after this one (the next
        take, stats, ...) already sees these records gone.
        """
        seqs = list(seqs)
        return asyncio.wrap_future(self._submit(lambda: self._store.ack(seqs)))

    async def nack(self, seqs: Iterable[int]) -> None:
        """Failed: count the attempt and put them back at their original position."""
        seqs = list(seqs)
        await self._call(lambda: self._store.nack(seqs, count_attempt=True))

    async def release(self, seqs: Iterable[int]) -> None:
        """Back to ready at their position without counting an attempt (not sent)."""
        seqs = list(seqs)
        await self._call(lambda: self._store.nack(seqs, count_attempt=False))

    async def dead_letter(
        self, seqs: Iterable[int], reason: str, message: str, target: str
    ) -> None:
        """Move in-flight records to the dead letters (attempts count this failure)."""
        seqs = list(seqs)
        await self._call(lambda: self._store.dead_letter(seqs, reason, message, target))

    async def list_dead_letters(self, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        """Oldest first."""
        return await self._call(lambda: self._store.list_dead(limit, offset))

    async def replay_dead_letters(self, ids: Iterable[int] | None = None) -> int:
        """Back into the outbox, at the end; ``None`` = all. Returns how many."""
        chosen = None if ids is None else list(ids)
        return await self._call(lambda: self._store.replay(chosen))

    async def purge_dead_letters(self, ids: Iterable[int] | None = None) -> int:
        """Delete dead letters; ``None`` = all. Returns how many."""
        chosen = None if ids is None else list(ids)
        return await self._call(lambda: self._store.purge(chosen))

    async def persist(self) -> None:
        """Write every in-memory record to the file now."""
        await self._call(self._store.spill)

    async def sync(self) -> int:
        """Return once everything appended before the call is stored (committed to the
        file in ``always`` mode); returns the number of pending records."""
        return await self._call(self._drained_pending)

    def _drained_pending(self) -> int:
        self._drain()
        return self._store.pending

    async def stats(self) -> OutboxStats:
        """Exact figures (one round trip); the last snapshot when not open."""
        if self._state not in (_State.OPENING, _State.OPEN):
            return self.stats_nowait()
        return await self._call(self._store.stats)

    def _submit(
        self, fn: Callable[[], R], *, skippable: bool = False
    ) -> concurrent.futures.Future[R]:
        if self._state not in (_State.OPENING, _State.OPEN):
            if self._state is _State.NEW:
                raise RuntimeError("the outbox is not open")
            raise OutboxClosedError("the outbox is closed")
        future: concurrent.futures.Future[R] = concurrent.futures.Future()
        self._submitted += 1  # only the loop thread submits; the worker only reads it
        self._commands.put((fn, future, skippable))
        return future

    async def _call(self, fn: Callable[[], R]) -> R:
        return await asyncio.wrap_future(self._submit(fn))

    # -- the worker thread -------------------------------------------------------------

    def _run(self) -> None:
        get = self._commands.get
        store = self._store
        while not self._stopped:
            try:
                if self._intake:  # left over by a drain that gave way or rests
                    rest = self._resume_at - time.monotonic()
                    command = get(timeout=rest) if rest > 0 else self._commands.get_nowait()
                elif store.disk_retry_at:  # after a refused write, try again by ourselves
                    command = get(timeout=_DISK_RETRY)
                else:
                    command = get()
            except queue.Empty:
                command = None
            if command is None and self._intake and time.monotonic() < self._resume_at:
                # An append's wake-up while resting: rest on. The wake stays pending, so
                # appends meanwhile send no more of them.
                continue
            self._wake_pending = False  # before draining: a later append sends a new wake
            try:
                # Give way to waiting commands between transactions, so a take or an ack
                # is not held up behind a long stream of arrivals.
                self._drain(give_way=True)
                store.retry_write()
            except Exception:  # never let the thread die: every caller would hang
                self._logger.exception("Outbox %s: unexpected error", self.path)
            if command is None:
                self._publish()
            else:
                self._execute(*command)
                self._taken += 1  # after: the drain above cut its batch short for it
        # Nothing may wait forever on a command the thread will never run.
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            if command is not None and command[1].set_running_or_notify_cancel():
                command[1].set_exception(OutboxClosedError("the outbox is closed"))

    def _execute(
        self, fn: Callable[[], Any], future: concurrent.futures.Future[Any], skippable: bool
    ) -> None:
        running = future.set_running_or_notify_cancel()
        if not running and skippable:
            with self._settle_lock:
                self._abandoned.discard(future)
            return
        error: Exception | None = None
        result: Any = None
        try:
            result = fn()
        except Exception as err:
            error = err
        # Publish first, so the hint and the snapshot already show what the caller sees.
        self._publish()
        if not running:
            if error is not None:
                self._logger.error("Outbox %s: %s", self.path, error)
            return
        with self._settle_lock:
            if future in self._abandoned:  # a take whose caller was cancelled meanwhile
                self._abandoned.discard(future)
                if error is None:
                    self._store.nack([record.seq for record in result], count_attempt=False)
                    self._publish()
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

    def _open_in_worker(self) -> None:
        self._store.open()
        self._drain()  # items appended before open

    def _close_in_worker(self) -> None:
        try:
            if self._store.conn is not None:
                self._drain()
                self._store.spill_at_close()
                self._publish()
        finally:
            self._stopped = True
            self._ready_hint = 0
            self._store.close()

    def _persist_quietly(self) -> None:
        try:
            self._store.spill()
        except sqlite3.Error as err:
            self._store.log_limited(
                "write", logging.ERROR, "Outbox %s: cannot write to the file (%s)", self.path, err
            )

    async def _wait_closed(self) -> None:
        """Have the worker close the file (once) and wait for its thread to end."""
        if self._close_future is None:
            self._close_future = concurrent.futures.Future()
            self._submitted += 1
            self._commands.put((self._close_in_worker, self._close_future, False))
        future = self._close_future
        try:
            # Shielded: a cancelled close must not cancel the worker's last command.
            await asyncio.shield(asyncio.wrap_future(future))
        finally:
            if future.done():
                self._join()

    def _discard_intake(self, why: str) -> None:
        if self._intake:
            self._logger.warning(
                "Outbox %s: %s; %d events appended before are lost",
                self.path,
                why,
                len(self._intake),
            )
            self._intake.clear()

    def _join(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            # The worker has finished its last command; this returns at once.
            thread.join(timeout=10)

    def _drain(self, *, give_way: bool = False) -> None:
        """Encode the intake and store it: one transaction per batch (group commit).

        With ``give_way``, stop after a batch when a command is waiting, or when new
        items arrived while the batch was stored (the loop is busy: rest a little, see
        ``busy_rest``); the caller comes back for the rest.
        """
        store = self._store
        if store.conn is None:
            return  # not open yet: the open command drains when done
        intake = self._intake
        encode = self._encode
        popleft = intake.popleft
        while intake:
            started = time.monotonic()
            if self._backlog_since is None:
                self._backlog_since = started
            deadline = started + self._commit_interval
            before = len(intake)
            now = self._clock()
            seq = store.next_seq
            rows: list[_Row] = []
            nbytes = 0
            failed: list[_DeadRow] = []
            for index in range(min(len(intake), _BATCH_EVENTS)):
                item = popleft()
                try:
                    encoded = encode(item)
                except ValidationError as err:
                    failed.append(self._dead_item(item, err.code, err.message, now))
                    continue
                except Exception as err:
                    self._log_limited(
                        "encode",
                        logging.ERROR,
                        "Outbox %s: encoding an event failed; it is now a dead letter",
                        self.path,
                        exc_info=err,
                    )
                    message = f"{type(err).__name__}: {err}"
                    failed.append(self._dead_item(item, ENCODE_ERROR, message, now))
                    continue
                payload = encoded.payload
                rows.append((seq, encoded.event_id, payload, 0, now, None, None))
                seq += 1
                nbytes += len(payload)
                if nbytes >= _BATCH_BYTES:
                    break
                if index & 127 == 127 and (
                    time.monotonic() > deadline or (give_way and self._submitted != self._taken)
                ):
                    break  # commit now: the deadline, or a command waits (take, ack)
            left = before - len(rows) - len(failed)  # if nothing had arrived meanwhile
            store.next_seq = seq
            try:
                if rows:
                    store.add(rows, nbytes)
                if failed:
                    store.store_dead(failed)
            except Exception:
                self._logger.exception("Outbox %s: storing a batch failed", self.path)
            if give_way and self._give_way(started, arrived=len(intake) > left):
                return
        self._backlog_since = None

    def _give_way(self, started: float, *, arrived: bool) -> bool:
        """After a batch: rest while the loop is busy, or stop for a waiting command.

        Resting first: the queue also holds appends' wake-ups, and a real command ends
        the rest anyway (see `_run`).
        """
        since = self._backlog_since
        # Not once the backlog is old or big: then work flat out (since is never None).
        if (
            self._busy_rest
            and arrived
            and since is not None
            and started - since < self._max_rest_lag
            and len(self._intake) < _REST_BACKLOG
        ):
            took = time.monotonic() - started
            self._resume_at = started + took + min(took * self._busy_rest, self._commit_interval)
            return True
        return self._submitted != self._taken

    def _dead_item(self, item: object, reason: str, message: str, now: float) -> _DeadRow:
        try:
            payload = orjson.dumps(item, default=str, option=orjson.OPT_NON_STR_KEYS)
        except Exception:  # anything at all: this is only a best-effort copy
            payload = b""
        return (
            new_event_id(),
            payload[:_DEAD_PAYLOAD_LIMIT],
            reason,
            message,
            OUTBOX_TARGET,
            1,
            now,
            now,
        )

    def _publish(self) -> None:
        """Once per batch of work: snapshot for the sensors and readiness for the loop."""
        store = self._store
        if self._stopped or store.conn is None:
            return
        try:
            self._snapshot = store.stats()
        except Exception:  # stats are not worth stopping the thread for
            self._logger.exception("Outbox %s: reading stats failed", self.path)
        ready = store.ready
        self._ready_hint = ready
        if ready > 0 and self._want_ready and self._loop is not None:
            self._want_ready = False
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self._loop.call_soon_threadsafe(self._ready_event.set)
