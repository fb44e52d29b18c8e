"""The outbox's SQLite file: files that are not a usable outbox, its settings, and a
SIGKILL losing nothing committed (outbox/sqlite_file.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from custom_components.ha_ingestor.pipeline.outbox import (
    OutboxClosedError,
    OutboxRecord,
    sqlite_file,
)
from tests.pipeline.outbox.helpers import (
    OutboxFactory,
    drain_ids,
    ids_of,
    opened,
)

CHILD = Path(__file__).with_name("outbox_writer_child.py")

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
    conn.executescript(";".join(sqlite_file._SCHEMA))
    conn.execute(f"PRAGMA application_id={sqlite_file.APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version={sqlite_file.SCHEMA_VERSION}")
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


# -- settings ---------------------------------------------------------------------------


async def test_file_settings_on_the_open_connection(make_outbox: OutboxFactory) -> None:
    """WAL and synchronous=NORMAL (docs/ARCHITECTURE.md: survives a process crash, like
    Home Assistant's recorder), as the worker's own connection has them."""
    outbox = await opened(make_outbox)
    values = await outbox._call(
        lambda: [
            outbox._store.db.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "synchronous", "application_id", "user_version")
        ]
    )
    # synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA
    assert values == ["wal", 1, sqlite_file.APPLICATION_ID, sqlite_file.SCHEMA_VERSION]


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


# -- the stored payloads and schema version 1 ------------------------------------------

_VERSION_1_OUTBOX = """CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    enqueued_at REAL NOT NULL,
    first_failure REAL,
    last_failure REAL
)"""


def test_payloads_are_packed_when_that_is_smaller() -> None:
    envelope = (
        b'{"event_id":"0b9d7c1e-5f7a-4a58-9d7e-3c1f2b6a8e90","timestamp":"2026-11-27T10:00:00'
        b'.123456Z","source":"ha_ingestor","data":{"event_type":"state_changed","context":{"id'
        b'":"01JDXYZABCDEFGHJKMNPQRSTVW","user_id":null,"parent_id":null},"entity_id":"sensor'
        b'.kitchen_temperature","state":"21.5","attributes":{"state_class":"measurement","unit'
        b'_of_measurement":"\xc2\xb0C","device_class":"temperature","friendly_name":"Kitchen"},'
        b'"old_state":"21.4"},"context":{}}'
    )
    packed = sqlite_file.pack_payload(envelope)
    assert len(packed) < len(envelope) / 2.5  # the dictionary holds what repeats
    assert sqlite_file.unpack_payload(packed) == envelope
    tiny = b"[7]"
    assert sqlite_file.pack_payload(tiny) is tiny  # packing would not make it smaller
    assert sqlite_file.unpack_payload(tiny) is tiny


async def test_a_version_1_file_is_brought_to_version_2_with_its_rows(
    make_outbox: OutboxFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.db"
    conn = sqlite3.connect(path)
    conn.executescript(";".join([_VERSION_1_OUTBOX, sqlite_file._SCHEMA[1]]))
    conn.execute(f"PRAGMA application_id={sqlite_file.APPLICATION_ID}")
    conn.execute("PRAGMA user_version=1")
    old = [(seq, f"old{seq}", b'{"id":"old%d","pad":"%s"}' % (seq, b"x" * 300)) for seq in (1, 2)]
    conn.executemany("INSERT INTO outbox VALUES (?, ?, ?, 1, 5.0, 4.0, 4.5)", old)
    conn.commit()
    conn.close()

    caplog.set_level(logging.INFO)
    outbox = await opened(make_outbox, path=path)
    assert "brought from schema version 1 to 2" in caplog.text
    assert list(tmp_path.glob("*.corrupt-*")) == []
    stats = await outbox.stats()
    assert (stats.pending, stats.pending_bytes) == (2, sum(len(row[2]) for row in old))
    outbox.append("new:500")
    await outbox.sync()
    records = await outbox.take(10)
    assert [(r.event_id, r.payload, r.attempts) for r in records[:2]] == [
        (event_id, payload, 1) for _, event_id, payload in old
    ]
    assert (records[2].event_id, len(records[2].payload)) == ("new", 500)
    await outbox.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert conn.execute("SELECT seq, size FROM outbox ORDER BY seq").fetchall() == [
            (1, None),
            (2, None),
            (3, 500),
        ]
