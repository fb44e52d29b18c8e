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
