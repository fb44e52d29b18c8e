"""The outbox's records across memory, the file and the recent tail (`Store`).

Records are ordered by ``seq`` (FIFO). New records wait in memory. In ``always`` mode
memory is written to the file once its oldest record has waited ``write_delay``, so a
record delivered and acked before then is never written; in ``on_backlog`` mode only
while a target is down or the file already holds records (then also after
``write_delay``, so writes come in groups). Memory is also written when it is over its
limit, on ``persist()`` and on close. Memory is always written as a whole, so it stays
newer than the file. Rows just written are also kept in a bounded tail, from which
`take` hands them out without reading them back. Caps by count and bytes drop the
oldest ready records.
"""

from __future__ import annotations

import heapq
import logging
import math
import sqlite3
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from .dead_letters import DeadLetters
from .logs import RateLimitedLog
from .records import (
    DeadLetter,
    DeadRow,
    Durability,
    OutboxClosedError,
    OutboxRecord,
    OutboxStats,
    Row,
)
from .sqlite_file import (
    DELETE,
    DELETE_RANGE,
    SCAN,
    SIZE,
    insert_rows,
    open_file,
    runs,
    transaction,
    unpack_payload,
)

_TAIL_EVENTS = 5_000  # rows just written kept in memory too, so take() need not read them
_TAIL_BYTES = 4 * 1024 * 1024
_DISK_RETRY = 1.0  # seconds before writing again after the file refused a write


class Store:
    """Every piece of outbox state, the dead letters through `DeadLetters`. Only the worker
    thread touches it."""

    def __init__(
        self,
        path: Path,
        *,
        durability: Durability,
        max_events: int,
        max_bytes: int,
        memory_limit_events: int,
        write_delay: float,
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
        self.write_delay = write_delay
        self.on_drop = on_drop
        self.clock = clock
        self.logger = logger
        self.log_limited = RateLimitedLog(logger)
        self.dead = DeadLetters(
            path,
            max_count=max_dead_letters,
            max_bytes=max_dead_bytes,
            on_dead_letter=on_dead_letter,
            logger=logger,
            log_limited=self.log_limited,
        )
        self.conn: sqlite3.Connection | None = None
        self.backlogged = False  # set from the loop thread; a bool store is atomic
        self.next_seq = 1
        # The file. Every ready row has seq > cursor (nack moves it back).
        self.disk_count = 0
        self.disk_bytes = 0
        self.cursor = 0
        self.disk_inflight: dict[int, Row] = {}
        # Rows written to the file lately, oldest first: while valid (tail_from is not
        # None) it holds every row in the file with seq > tail_from, so once the cursor
        # has reached tail_from, take() reads them from here instead of the file.
        self.tail: deque[Row] = deque()
        self.tail_bytes = 0
        self.tail_from: int | None = None
        self.oldest_disk: float | None = None
        self.oldest_dirty = True
        self.disk_retry_at = 0.0
        # Memory, all newer than the file: nacked rows (a heap by seq, all older than
        # mem_ready), never-taken rows in order, and rows in flight.
        self.mem_returned: list[Row] = []
        self.mem_ready: deque[Row] = deque()
        self.mem_inflight: dict[int, Row] = {}
        self.mem_bytes = 0
        # (first seq, time.monotonic()) of each group of records added to memory, oldest
        # first: when memory's oldest record arrived, so when memory is due to be written.
        self.arrivals: deque[tuple[int, float]] = deque()
        self.inflight_low: int | None = None  # lowest seq in mem_inflight, when known
        # Counters since open.
        self.appended = 0
        self.acked = 0
        self.dropped = 0

    @property
    def db(self) -> sqlite3.Connection:
        if self.conn is None:
            raise OutboxClosedError("the outbox file is not open")
        return self.conn

    # -- opening and closing ---------------------------------------------------------

    def open(self) -> None:
        self.conn = conn = open_file(self.path, self.logger)
        count, total, max_seq = conn.execute(
            f"SELECT count(*), coalesce(sum({SIZE}), 0), coalesce(max(seq), 0) FROM outbox"
        ).fetchone()
        self.disk_count, self.disk_bytes = count, total
        self.next_seq = max_seq + 1
        self.dead.load(conn)
        self.logger.info(
            "Outbox %s opened: %d pending events recovered, %d dead letters",
            self.path,
            count,
            self.dead.count,
        )
        self.enforce_caps()  # the caps may have been lowered since the last run
        self.dead.cap(conn)

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
            dead_letters=self.dead.count,
            dropped=self.dropped,
            oldest_enqueued_at=self._oldest(),
            appended=self.appended,
            acked=self.acked,
            on_disk=self.disk_count,
            dead_letters_dropped=self.dead.dropped,
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
        heads: list[Row] = []
        if self.mem_returned:
            heads.append(self.mem_returned[0])
        if self.mem_ready:
            heads.append(self.mem_ready[0])
        if self.mem_inflight:
            heads.append(self.mem_inflight[min(self.mem_inflight)])
        return min(heads)[4] if heads else None

    # -- adding ------------------------------------------------------------------------

    def add(self, rows: list[Row], nbytes: int) -> None:
        """New records: the newest of all, so they join memory, to be written when due."""
        self.mem_ready.extend(rows)
        self.mem_bytes += nbytes
        self.appended += len(rows)
        self.arrivals.append((rows[0][0], time.monotonic()))
        self.enforce_caps()  # before writing, so records dropped at once cost no I/O
        self.write_if_due()

    def write_if_due(self, *, now: bool = False) -> None:
        """Write memory to the file when it is due (see the module docstring), or ``now``.

        A refused write keeps memory as it is and is tried again after `_DISK_RETRY`.
        """
        if not self.mem_count or (not now and time.monotonic() < self.disk_retry_at):
            return
        waited = self._writes_memory() and time.monotonic() >= self._write_due_at()
        if not (now or waited or self.mem_count > self.memory_limit_events):
            return
        try:
            # Records that waited (a target slow or down) may stay a while: packed. A
            # burst that only overflows memory is about to be delivered: not worth it.
            self.spill(pack=now or waited)
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

    def next_write_at(self) -> float | None:
        """The ``time.monotonic()`` at which `write_if_due` has work, None if never."""
        if not self.mem_count:
            return None
        due = self._write_due_at() if self._writes_memory() else math.inf
        if self.mem_count > self.memory_limit_events:
            due = 0.0
        due = max(due, self.disk_retry_at)
        return None if due == math.inf else due

    def _writes_memory(self) -> bool:
        """Whether memory is written once due; otherwise only when over its limit."""
        return (
            self.durability is Durability.ALWAYS
            or self.backlogged
            or self.disk_count > 0  # the file holds a backlog: keep new records there too
        )

    def _write_due_at(self) -> float:
        """When memory's oldest record has waited `write_delay` (inf when memory is empty)."""
        oldest = self._oldest_memory_seq()
        if oldest is None:
            return math.inf
        arrivals = self.arrivals
        while len(arrivals) > 1 and arrivals[1][0] <= oldest:
            arrivals.popleft()
        return arrivals[0][1] + self.write_delay if arrivals else 0.0

    def _oldest_memory_seq(self) -> int | None:
        heads: list[int] = []
        if self.mem_returned:
            heads.append(self.mem_returned[0][0])
        if self.mem_ready:
            heads.append(self.mem_ready[0][0])
        if self.mem_inflight:
            low = self.inflight_low
            if low is None or low not in self.mem_inflight:
                low = self.inflight_low = min(self.mem_inflight)
            heads.append(low)
        return min(heads) if heads else None

    def _memory_rows(self) -> list[Row]:
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
        self.arrivals.clear()
        self.inflight_low = None
        self.oldest_dirty = True
        self.disk_retry_at = 0.0

    def spill(self, *, pack: bool = True) -> None:
        """Write every in-memory record to the file, in one transaction."""
        if not self.mem_count:
            return
        rows = self._memory_rows()
        # Ready ones only (oldest first; returned rows are older than never-taken ones):
        # rows in flight leave the file when settled, or send everything back to reading
        # the file when nacked.
        ready = [*sorted(self.mem_returned), *self.mem_ready]
        with transaction(self.db) as conn:
            insert_rows(conn, rows, pack=pack)
        self._memory_written()
        if ready:
            self._extend_tail(ready)

    def _extend_tail(self, rows: list[Row]) -> None:
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
                f"SELECT seq, {SIZE} FROM outbox WHERE seq > ? ORDER BY seq",
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
                with transaction(self.db) as conn:
                    conn.executemany(DELETE, victims)
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
            if self.inflight_low is not None and row[0] < self.inflight_low:
                self.inflight_low = row[0]  # a returned row, older than those in flight
            taken.append(OutboxRecord(row[0], row[1], row[2], row[3], row[4]))
            total += size
            if len(taken) >= max_events:
                break
        return taken

    def _take_file(self, taken: list[OutboxRecord], max_events: int, budget: int) -> int:
        """Ready rows from the file into ``taken``; their total size, or -1 when full."""
        total = 0
        cursor = self.db.execute(SCAN, (self.cursor,))  # read lazily, never the whole file
        try:
            for stored in cursor:
                seq = stored[0]
                if seq in self.disk_inflight:
                    continue
                payload = unpack_payload(stored[2])
                row = stored if payload is stored[2] else (seq, stored[1], payload, *stored[3:])
                size = len(payload)
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
            with transaction(self.db) as conn:
                # Acked rows are in flight, so a run of consecutive seqs holds no others.
                conn.executemany(DELETE_RANGE, runs(disk))
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
            with transaction(self.db) as conn:
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
        dead: list[DeadRow] = []
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
        with transaction(self.db) as conn:
            ids = self.dead.insert(conn, dead)
            conn.executemany(DELETE, [(seq,) for seq in disk])
        for seq in disk:
            row = self.disk_inflight.pop(seq)
            self.disk_count -= 1
            self.disk_bytes -= len(row[2])
        if disk:
            self.oldest_dirty = True
        for seq in memory:
            self.mem_bytes -= len(self.mem_inflight.pop(seq)[2])
        self.dead.added(self.db, ids, dead)

    def store_dead(self, dead: list[DeadRow]) -> None:
        """Dead letters that never were records (the item could not be encoded)."""
        with transaction(self.db) as conn:
            ids = self.dead.insert(conn, dead)
        self.dead.added(self.db, ids, dead)

    # -- dead letters ------------------------------------------------------------------

    def list_dead(self, limit: int, offset: int) -> list[DeadLetter]:
        return self.dead.read(self.db, limit, offset)

    def replay(self, ids: Iterable[int] | None) -> int:
        """Dead letters back to the end of the outbox, written to the file at once."""
        replayed = 0
        for rows in self.dead.chunks(self.db, ids):
            now = self.clock()
            seq = self.next_seq
            new: list[Row] = [
                (seq + index, event_id, payload, attempts, now, first, last)
                for index, (_, event_id, payload, attempts, first, last) in enumerate(rows)
            ]
            memory = self._memory_rows()
            with transaction(self.db) as conn:
                insert_rows(conn, memory)  # first, so memory stays the newest
                insert_rows(conn, new)
                conn.executemany("DELETE FROM dead_letters WHERE id = ?", [(r[0],) for r in rows])
            self._forget_tail()
            if memory:
                self._memory_written()
            self.next_seq = seq + len(new)
            self.disk_count += len(new)
            self.disk_bytes += sum(len(row[2]) for row in new)
            self.dead.removed(rows)
            self.oldest_dirty = True
            replayed += len(rows)
        if replayed:
            self.enforce_caps()
        return replayed

    def purge(self, ids: Iterable[int] | None) -> int:
        return self.dead.purge(self.db, ids)
