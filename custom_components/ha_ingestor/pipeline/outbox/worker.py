"""The outbox's bridge between the event loop and its worker thread (`Outbox`).

The event loop appends to an in-memory intake and wakes the worker; every other call is
a command the worker runs in order while the caller awaits its future. Between
transactions the worker gives way to waiting commands, and rests while the loop keeps
appending (a burst), so the loop has the interpreter most of the time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Any, Generic, TypeVar

import orjson

from ..envelope import EncodedEvent, ValidationError, new_event_id
from .logs import LOGGER
from .records import (
    EMPTY_STATS,
    ENCODE_ERROR,
    OUTBOX_TARGET,
    DeadLetter,
    DeadRow,
    Durability,
    OutboxClosedError,
    OutboxRecord,
    OutboxStats,
    Row,
)
from .store import Store

T = TypeVar("T")
R = TypeVar("R")

_BATCH_EVENTS = 1000  # intake items encoded per transaction
_BATCH_BYTES = 8 * 1024 * 1024  # ... or fewer when they are big
_DEAD_PAYLOAD_LIMIT = 64 * 1024  # best-effort copy of an item that could not be encoded
_REST_BACKLOG = 100_000  # no rests while the intake holds this many (memory)

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
        write_delay: float = 1.0,
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
        self._logger = logger or LOGGER
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
        self._store = Store(
            self.path,
            durability=Durability(durability),
            max_events=max_events,
            max_bytes=max_bytes,
            memory_limit_events=memory_limit_events,
            write_delay=write_delay,
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
        self._snapshot = EMPTY_STATS
        # wait_waiting's count and event (loop only): appends set it once reached.
        self._waiting_for: tuple[int, asyncio.Event] | None = None

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
        if self._waiting_for is not None:
            self._check_waiting()

    def append_many(self, items: Iterable[T]) -> None:
        if not self._accepting:
            raise OutboxClosedError("the outbox is closed")
        self._intake.extend(items)
        if not self._wake_pending:
            self._wake_pending = True
            self._commands.put(None)
        if self._waiting_for is not None:
            self._check_waiting()

    def set_backlog(self, backlogged: bool) -> None:
        """on_backlog: while True (a target is down) records go to the file."""
        self._store.backlogged = backlogged
        if backlogged and self._state in (_State.OPENING, _State.OPEN):
            self._submit(self._persist_quietly)

    def ready_hint(self) -> int:
        """Ready records as of the worker's last batch: cheap and approximate."""
        return self._ready_hint

    def waiting_hint(self) -> int:
        """`ready_hint` plus the appended events the worker has not stored yet: what a
        take will find. During a burst the worker stores in short steps (it gives way
        to the loop), so the ready records alone undercount by far."""
        return self._ready_hint + len(self._intake)

    async def wait_waiting(self, count: int) -> None:
        """Return once `waiting_hint` reaches ``count`` (at once if it has): the forwarder
        stops lingering when a whole batch waits. One waiter at a time."""
        if self.waiting_hint() >= count:
            return
        reached = asyncio.Event()
        self._waiting_for = (count, reached)
        try:
            await reached.wait()
        finally:
            self._waiting_for = None

    def _check_waiting(self) -> None:
        assert self._waiting_for is not None
        count, reached = self._waiting_for
        if self.waiting_hint() >= count:
            reached.set()

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
        """Return once everything appended before the call is stored (written to the
        file now in ``always`` mode); returns the number of pending records."""
        return await self._call(self._drained_pending)

    def _drained_pending(self) -> int:
        self._drain()
        if self._store.durability is Durability.ALWAYS:
            self._store.write_if_due(now=True)
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
                elif (due := store.next_write_at()) is not None:
                    # Memory is to be written then (or the file refused a write: retry).
                    command = get(timeout=max(0.0, due - time.monotonic()))
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
                store.write_if_due()
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
            rows: list[Row] = []
            nbytes = 0
            failed: list[DeadRow] = []
            for index in range(min(len(intake), _BATCH_EVENTS)):
                item = popleft()
                try:
                    encoded = encode(item)
                except ValidationError as err:
                    failed.append(self._dead_item(item, err.code, err.message, now))
                    continue
                except Exception as err:
                    self._store.log_limited(
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

    def _dead_item(self, item: object, reason: str, message: str, now: float) -> DeadRow:
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
