"""The outbox's SQLite file: its schema and statements, and opening it safely.

Opening checks that the file is ours (application id, schema version, tables and
columns) and intact (``quick_check``); a file that is not a usable outbox (corrupt, not
a database, or foreign) is moved aside with an error log naming both, and a new one is
started. The file is created 0600 before SQLite opens it: it holds the events. A file of
schema version 1 is brought to version 2 in place (one ``ALTER TABLE``).

Payloads are stored packed: deflated with a preset dictionary of the envelope's usual
keys (a ~450-byte envelope takes ~100), behind a marker byte, and only when that is
smaller (the store writes a burst that only overflows memory as it is); ``size`` keeps
the payload's own length (NULL in rows of version 1, which are stored as they are). An
envelope is JSON text, so it never starts with a marker byte.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from .records import Row

# Marks the file as ours, so a foreign SQLite database is never mistaken for an outbox.
APPLICATION_ID: Final = 0x48414F42  # "HAOB"
SCHEMA_VERSION: Final = 2

_INSERT_ROWS = 64  # rows per multi-row INSERT statement (7 values each, under any limit)

_SCHEMA = (
    """CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL,
        payload BLOB NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        enqueued_at REAL NOT NULL,
        first_failure REAL,
        last_failure REAL,
        size INTEGER
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
        "size",
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

INSERT = "INSERT INTO outbox VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_MANY = "INSERT INTO outbox VALUES " + ",".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * _INSERT_ROWS)
SIZE = "coalesce(size, length(payload))"  # a payload's own length, in every version
DELETE_RANGE = "DELETE FROM outbox WHERE seq BETWEEN ? AND ?"
SCAN = (
    "SELECT seq, event_id, payload, attempts, enqueued_at, first_failure, last_failure"
    " FROM outbox WHERE seq > ? ORDER BY seq"
)
DELETE = "DELETE FROM outbox WHERE seq = ?"
INSERT_DEAD = (
    "INSERT INTO dead_letters (event_id, payload, reason, message, target, attempts,"
    " first_failure, last_failure) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
DEAD_COLUMNS = (
    "id, event_id, payload, reason, message, target, attempts, first_failure, last_failure"
)

# (seq, event_id, payload, attempts, enqueued_at, first_failure, last_failure): the


class _Unusable(Exception):
    """The file is not a usable outbox (corrupt, not a database, or foreign)."""


# The preset dictionary of packed payloads (marker 1): what most envelopes repeat. Never
# change it: files hold payloads packed with it. A new one takes a new marker.
_PACKED_V1: Final = b"\x01"
_DICTIONARY_V1: Final = (
    b'"icon":"mdi:","last_reset":null,"options":[],"supported_features":0,"restored":true,'
    b'"event_type":"call_service","automation_triggered","service_data":{"domain":"'
    b'light","switch","binary_sensor","temperature","humidity","power","energy","battery",'
    b'"unit_of_measurement":"","device_class":"","state_class":"measurement",'
    b'"friendly_name":"","weather":{"condition":"","temperature":,"humidity":,"pressure":'
    b'"instance_id":"","ha_version":"20","location":"home","time_zone":"Europe/'
    b'{"event_id":"","timestamp":"20T00:00:00.000000Z","source":"ha_ingestor","data":{'
    b'"event_type":"state_changed","context":{"id":"01J","user_id":null,"parent_id":null},'
    b'"entity_id":"sensor.","state":"","attributes":{},"old_state":""},"context":{}}'
)


def pack_payload(payload: bytes) -> bytes:
    """A payload as stored: packed when that is smaller, else as it is."""
    packer = zlib.compressobj(6, zlib.DEFLATED, -15, zdict=_DICTIONARY_V1)
    packed = _PACKED_V1 + packer.compress(payload) + packer.flush()
    return packed if len(packed) < len(payload) else payload


def unpack_payload(stored: bytes) -> bytes:
    """The payload of a stored one (`pack_payload` undone; others are as they are)."""
    if stored[:1] != _PACKED_V1:
        return stored
    unpacker = zlib.decompressobj(-15, zdict=_DICTIONARY_V1)
    return unpacker.decompress(stored[1:]) + unpacker.flush()


def insert_rows(conn: sqlite3.Connection, rows: list[Row], *, pack: bool = True) -> None:
    """Insert rows, payloads packed (with ``pack``), many per statement: one SQLite step
    (and one release of the GIL) per _INSERT_ROWS rows instead of one per row."""
    stored = [
        (*row[:2], pack_payload(row[2]) if pack else row[2], *row[3:], len(row[2])) for row in rows
    ]
    full = len(stored) - len(stored) % _INSERT_ROWS
    for start in range(0, full, _INSERT_ROWS):
        conn.execute(
            _INSERT_MANY, [value for row in stored[start : start + _INSERT_ROWS] for value in row]
        )
    if full < len(stored):
        conn.executemany(INSERT, stored[full:])


def runs(seqs: list[int]) -> Iterator[tuple[int, int]]:
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


def open_file(path: Path, logger: logging.Logger) -> sqlite3.Connection:
    """Open (or create) the outbox file; one that is not a usable outbox is moved aside
    and a new one started in its place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _connect(path, logger)
    except _Unusable as err:
        _move_aside(path, str(err), logger)
        return _connect(path, logger)


def _connect(path: Path, logger: logging.Logger) -> sqlite3.Connection:
    _make_private(path)
    # Autocommit mode: transactions are explicit (BEGIN ... COMMIT), one per batch.
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # Only reads until the file is known to be ours: a foreign file stays as it was.
        problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise _Unusable("quick_check failed: " + "; ".join(map(str, problems[:3])))
        new, version = _check_schema(conn)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            logger.warning("Outbox %s: journal mode is %s, not WAL", path, mode)
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
        elif version == 1:  # rows keep their payloads as they are; new rows are packed
            conn.execute("BEGIN")
            conn.execute("ALTER TABLE outbox ADD COLUMN size INTEGER")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
            logger.info("Outbox %s: brought from schema version 1 to %d", path, SCHEMA_VERSION)
    except _Unusable:
        conn.close()
        raise
    except sqlite3.DatabaseError as err:
        conn.close()
        if _is_corruption(err):
            raise _Unusable(str(err)) from err
        raise  # locked, unreadable, ...: not a reason to move a file aside
    return conn


def _check_schema(conn: sqlite3.Connection) -> tuple[bool, int]:
    """Whether the file is new (empty), and its schema version; raises `_Unusable` unless
    the file is ours."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if app_id == 0 and not tables:
        return True, SCHEMA_VERSION
    if app_id != APPLICATION_ID:
        raise _Unusable(f"foreign database (application_id {app_id}, tables {sorted(tables)})")
    if version not in (1, SCHEMA_VERSION):
        raise _Unusable(f"schema version {version}, expected {SCHEMA_VERSION}")
    if not tables <= _OUR_TABLES:
        raise _Unusable(f"unexpected tables {sorted(tables - _OUR_TABLES)}")
    for table, columns in _COLUMNS.items():
        found = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if found != (columns - {"size"} if version == 1 and table == "outbox" else columns):
            raise _Unusable(f"table {table} has columns {sorted(found)}")
    return False, version


def _move_aside(path: Path, why: str, logger: logging.Logger) -> None:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            os.replace(source, f"{target}{suffix}")
    logger.error(
        "Outbox file %s is unusable (%s); moved it aside to %s and started a new, empty outbox",
        path,
        why,
        target,
    )


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One explicit transaction (the connection is in autocommit mode)."""
    conn.execute("BEGIN")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
