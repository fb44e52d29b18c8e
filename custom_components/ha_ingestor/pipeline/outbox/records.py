"""The outbox's types: the public ones, and its rows as stored and kept in memory."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

ENCODE_ERROR = "encode_error"  # dead-letter reason of an item that could not be encoded
OUTBOX_TARGET = "outbox"  # dead-letter target of such an item

# (seq, event_id, payload, attempts, enqueued_at, first_failure, last_failure): the
# outbox row as stored, and as kept in memory, so writing memory out is one executemany.
type Row = tuple[int, str, bytes, int, float, float | None, float | None]
# (event_id, payload, reason, message, target, attempts, first_failure, last_failure)
type DeadRow = tuple[str, bytes, str, str, str, int, float, float]


class Durability(StrEnum):
    """When records are written to the file."""

    ALWAYS = "always"  # every record not acked within write_delay, written then
    ON_BACKLOG = "on_backlog"  # only while a target is down or behind, and on close


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


EMPTY_STATS = OutboxStats(0, 0, 0, 0, 0, None, 0, 0, 0)
