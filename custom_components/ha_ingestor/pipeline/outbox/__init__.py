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

- memory: every new record first. In ``always`` mode a record still there after
  ``write_delay`` (1 s) is written to the file, so what is delivered and acked within
  that window is never written, and what is not is on disk within it; in
  ``on_backlog`` mode only while a target is down or the file holds a backlog. Memory
  is also written when it is over ``memory_limit_events``, on ``persist()``, ``sync()``
  (``always``) and on close, and stays there while the file refuses writes (disk full);
- the file (``outbox`` table): what memory wrote, until acked.

Every in-memory record is newer than every record in the file (memory is always written
out as a whole), so FIFO holds across both: ready records in the file go first.

The modules:

- ``records.py``: the public types (`Durability`, `OutboxRecord`, `DeadLetter`,
  `OutboxStats`, `OutboxClosedError`) and the rows as stored;
- ``worker.py``: `Outbox`, the bridge between the event loop and the worker thread
  (intake, commands, readiness, rests during bursts);
- ``store.py``: the records across memory, the file and the recent tail, their caps,
  take, ack and nack;
- ``dead_letters.py``: the dead letters, capped by count and bytes;
- ``sqlite_file.py``: the file's schema and statements, and opening it (checks,
  moving a bad file aside, mode 0600);
- ``logs.py``: the package's logger and its rate-limited log.
"""

from __future__ import annotations

from .records import DeadLetter, Durability, OutboxClosedError, OutboxRecord, OutboxStats
from .worker import Outbox

__all__ = [
    "DeadLetter",
    "Durability",
    "Outbox",
    "OutboxClosedError",
    "OutboxRecord",
    "OutboxStats",
]
