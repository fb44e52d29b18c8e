"""Backfill: replay the recorder's state history through the outbox; close gaps by itself.

A backfill reads the state changes the recorder kept for a window, in chunks, in the
recorder's own executor (Home Assistant's history API), and hands each chunk to the
outbox as `RecordedChange`s, which the encoder turns into the envelopes the changes
got (or would have got) live, with the same derived event ids (`state_event_id`):
whatever was delivered already is a duplicate at the receivers, not a second copy.

Live events go first: after each chunk the backfill waits until the outbox holds fewer
than `DRAIN_BELOW` pending events before it adds the next, so old events never pile up
ahead of new ones; after each read it rests as long as the read took, so that the
event loop and the outbox's thread keep most of the interpreter. The chunk's time
window adapts so that a chunk holds about `CHUNK_ROWS` states.

Gap filling: `CaptureMark` keeps, in a tiny `.storage` file, until when the listener
captured events (the last captured event's time, saved at most every `SAVE_INTERVAL`
while events flow; the time it stopped, at unload and at Home Assistant's stop). At the
next start the runtime backfills from there until its listener started, once Home
Assistant has started and the recorder has committed that window.

One backfill per entry at a time; `Backfiller.progress` is what the Backfill sensor
shows, and `EVENT_BACKFILL_FINISHED` is fired when one ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Final

import orjson
from homeassistant.core import HomeAssistant, State, callback
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.event import async_track_time_interval
from homeassistant.helpers.start import async_at_started
from homeassistant.helpers.storage import Store
from homeassistant.util import dt as dt_util

from .const import DOMAIN, LOGGER
from .listener import RecordedChange

if TYPE_CHECKING:
    from collections.abc import Callable

    from .runtime import IngestorRuntime

EVENT_BACKFILL_FINISHED: Final = f"{DOMAIN}_backfill_finished"

CHUNK_ROWS: Final = 1_000  # states per chunk, aimed at
# The first chunk's window is short and grows by doubling: a minute of a busy recorder can
# hold 100,000 states, and a chunk that big holds the event loop in a full collection.
FIRST_WINDOW: Final = timedelta(seconds=1)
MIN_WINDOW: Final = timedelta(milliseconds=10)
MAX_WINDOW: Final = timedelta(days=1)
DRAIN_BELOW: Final = 2_000  # the next chunk once fewer events than this are pending
DRAIN_POLL: Final = 0.05  # seconds between looks at the outbox while it drains
ENTITY_CHUNK: Final = 500  # entity ids per history query (SQL variable limits)
REST_RATIO: Final = 1.0  # after each read, rest this many times as long as it took
MAX_REST: Final = 1.0  # seconds
_EPSILON: Final = timedelta(microseconds=1)

SAVE_INTERVAL: Final = timedelta(minutes=5)
MARK_VERSION: Final = 1
MARK_KEY: Final = "captured_until"


def recorder_loaded(hass: HomeAssistant) -> bool:
    return "recorder" in hass.config.components


class BackfillStatus(StrEnum):
    IDLE = "idle"
    RUNNING = "running"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class BackfillProgress:
    """Where the current (or last) backfill is; the Backfill sensor shows it."""

    status: BackfillStatus = BackfillStatus.IDLE
    gap_fill: bool = False
    start: datetime | None = None
    end: datetime | None = None
    reached: datetime | None = None  # states before this time are queued
    events: int = 0  # state changes queued so far
    error: str | None = None

    @property
    def percent(self) -> int | None:
        """How much of the window is queued, by time (whole percent)."""
        if self.start is None or self.end is None:
            return None
        if self.status is BackfillStatus.FINISHED:
            return 100
        if self.reached is None or self.end <= self.start:
            return 0
        done = (self.reached - self.start) / (self.end - self.start)
        return max(0, min(100, int(done * 100)))


@dataclass(frozen=True, slots=True)
class _Chunk:
    changes: list[RecordedChange]
    until: datetime


class Backfiller:
    """One entry's backfills: at most one runs at a time, in the background."""

    def __init__(self, hass: HomeAssistant, runtime: IngestorRuntime) -> None:
        self._hass = hass
        self._runtime = runtime
        self._task: asyncio.Task[None] | None = None
        self._unsub_started: Callable[[], None] | None = None
        self.progress = BackfillProgress()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @callback
    def async_start(
        self,
        start: datetime,
        end: datetime,
        entity_ids: list[str] | None = None,
        *,
        gap_fill: bool = False,
    ) -> None:
        """Start replaying [start, end); ServiceValidationError when one is running."""
        if self.running:
            running = self.progress
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="backfill_running",
                translation_placeholders={
                    "start": _text(running.start),
                    "end": _text(running.end),
                    "percent": str(running.percent or 0),
                },
            )
        self.progress = BackfillProgress(
            BackfillStatus.RUNNING, gap_fill, start, end, reached=start
        )
        entry = self._runtime.entry
        self._task = entry.async_create_background_task(
            self._hass,
            self._run(start, end, entity_ids, gap_fill=gap_fill),
            f"{DOMAIN} backfill {entry.entry_id}",
        )

    async def async_cancel(self) -> bool:
        """Cancel the running backfill and wait for it to end; False when none ran."""
        task = self._task
        if task is None or task.done():
            return False
        task.cancel()
        await asyncio.wait([task])
        return True

    async def async_shutdown(self) -> None:
        """The runtime stops: no gap fill any more, and none running."""
        if self._unsub_started is not None:
            self._unsub_started()
            self._unsub_started = None
        await self.async_cancel()

    @callback
    def async_schedule_gap_fill(self, since: float, until: float, max_hours: int) -> None:
        """Backfill [since, until) quietly once Home Assistant has started and the
        recorder has committed it; at most ``max_hours`` back from ``until``."""
        end = dt_util.utc_from_timestamp(until)
        start = dt_util.utc_from_timestamp(since)
        oldest = end - timedelta(hours=max_hours)
        if start < oldest:
            LOGGER.warning(
                "The last event was captured at %s; the gap fill goes back %d hours, to %s",
                _text(start),
                max_hours,
                _text(oldest),
            )
            start = oldest
        if start >= end:
            return

        @callback
        def _started(_hass: HomeAssistant) -> None:
            self._unsub_started = None
            self._gap_fill(start, end)

        self._unsub_started = async_at_started(self._hass, _started)

    @callback
    def _gap_fill(self, start: datetime, end: datetime) -> None:
        if not recorder_loaded(self._hass):
            LOGGER.info("No recorder: the gap from %s to %s stays open", _text(start), _text(end))
            return
        if self.running:
            LOGGER.info("A backfill runs: the gap from %s to %s stays open", start, end)
            return
        LOGGER.info("Filling the gap from %s to %s from the recorder", _text(start), _text(end))
        self.async_start(start, end, gap_fill=True)

    # -- the work --------------------------------------------------------------------

    async def _run(
        self, start: datetime, end: datetime, entity_ids: list[str] | None, *, gap_fill: bool
    ) -> None:
        kind = "gap fill" if gap_fill else "backfill"
        status, error = BackfillStatus.FAILED, None
        started = time.monotonic()
        try:
            with _heap_frozen():
                await self._replay(start, end, entity_ids)
            status = BackfillStatus.FINISHED
        except asyncio.CancelledError:
            status = BackfillStatus.CANCELLED
            raise
        except Exception as err:
            error = str(err) or type(err).__name__
            LOGGER.exception("The %s of %s to %s failed", kind, start, end)
        finally:
            self.progress = replace(self.progress, status=status, error=error)
            events = self.progress.events
            LOGGER.log(
                logging.INFO if status is not BackfillStatus.FAILED else logging.WARNING,
                "The %s of %s to %s: %s, %d state changes queued in %.1f s",
                kind,
                _text(start),
                _text(end),
                status,
                events,
                time.monotonic() - started,
            )
            self._hass.bus.async_fire(
                EVENT_BACKFILL_FINISHED,
                {
                    "config_entry_id": self._runtime.entry.entry_id,
                    "start": _text(start),
                    "end": _text(end),
                    "events": events,
                    "outcome": status.value,
                    "gap_fill": gap_fill,
                },
            )

    async def _replay(self, start: datetime, end: datetime, entity_ids: list[str] | None) -> None:
        # Imported here: the recorder is optional, and its modules load SQLAlchemy.
        from homeassistant.helpers.recorder import get_instance

        instance = get_instance(self._hass)
        # What happened before now may still wait in the recorder's queue (it commits
        # every few seconds): this returns once the recorder has committed it.
        await instance.async_block_till_done()
        if entity_ids is None:
            wanted = self._wanted()
            entity_ids = await instance.async_add_executor_job(
                _recorded_entities, self._hass, wanted
            )
        if not entity_ids:
            return
        last: dict[str, str] = {}  # each entity's latest state text so far
        window = FIRST_WINDOW
        at = start
        loop = asyncio.get_running_loop()
        while at < end:
            began = loop.time()
            chunk = await instance.async_add_executor_job(
                _read_chunk, self._hass, entity_ids, at, min(at + window, end), last
            )
            took = loop.time() - began
            if chunk.changes:
                self._runtime.listener.hand_over(chunk.changes)
            self.progress = replace(
                self.progress,
                reached=chunk.until,
                events=self.progress.events + len(chunk.changes),
            )
            window = _next_window(window, len(chunk.changes))
            at = chunk.until
            await self._drained()
            gc.freeze()  # what outlived the chunk too (see _heap_frozen)
            # Rest as long as the read took: with the GIL, a thread reading flat out
            # slows the event loop and the outbox's encoding of this very chunk down.
            await asyncio.sleep(min(took * REST_RATIO, MAX_REST))

    async def _drained(self) -> None:
        """Wait until the outbox holds fewer than DRAIN_BELOW pending events.

        Polled: the figure is the worker thread's snapshot (and the outbox may be
        replaced meanwhile); a look every DRAIN_POLL costs nothing worth an event.
        """
        while self._runtime.outbox.stats_nowait().pending >= DRAIN_BELOW:  # noqa: ASYNC110
            await asyncio.sleep(DRAIN_POLL)

    @callback
    def _wanted(self) -> Callable[[str], bool]:
        """The entities the entry forwards: its filter, without this integration's own."""
        own = set(self._runtime.listener.own_entities)
        own.update(
            entry.entity_id
            for entry in er.async_get(self._hass).entities.values()
            if entry.platform == DOMAIN
        )
        entity_filter = self._runtime.settings.entity_filter_object()
        chosen = None if entity_filter.empty_filter else entity_filter.get_filter()
        frozen = frozenset(own)

        def wanted(entity_id: str) -> bool:
            return entity_id not in frozen and (chosen is None or chosen(entity_id))

        return wanted


@contextlib.contextmanager
def _heap_frozen() -> Iterator[None]:
    """Home Assistant's heap out of the collector's reach while the recorder is read.

    Reading makes many short-lived objects; enough of them outlive a young collection to
    start full collections, and one full pass over Home Assistant's heap holds the event
    loop for ~200 ms here (scripts/bench backfill). Frozen (`gc.freeze`, again after
    each chunk), a full pass scans only what the current chunk made. Unfrozen at the end,
    the heap is the collector's again, with what became cyclic garbage meanwhile
    (docs/ARCHITECTURE.md, backfill).
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _next_window(window: timedelta, rows: int) -> timedelta:
    """The next chunk's window: the last one scaled to what would have held CHUNK_ROWS
    states, growing at most twofold (what follows may be denser)."""
    factor = 2.0 if rows == 0 else min(2.0, CHUNK_ROWS / rows)
    return max(MIN_WINDOW, min(window * factor, MAX_WINDOW))


def _recorded_entities(hass: HomeAssistant, wanted: Callable[[str], bool]) -> list[str]:
    """Every entity the recorder has states of that the entry forwards (executor)."""
    from homeassistant.helpers.recorder import get_instance, session_scope

    instance = get_instance(hass)
    with session_scope(hass=hass, read_only=True) as session:
        known = instance.states_meta_manager.get_metadata_id_to_entity_id(session).values()
    return sorted(entity_id for entity_id in known if wanted(entity_id))


def _read_chunk(
    hass: HomeAssistant,
    entity_ids: list[str],
    start: datetime,
    end: datetime,
    last: dict[str, str],
) -> _Chunk:
    """The recorded state changes with start <= last_updated < end, oldest first
    (the recorder's executor). ``last`` carries each entity's previous state text."""
    from homeassistant.components.recorder import history

    found: list[State] = []
    for first in range(0, len(entity_ids), ENTITY_CHUNK):
        # The history API's window is open at both ends: start a microsecond early.
        states = history.get_significant_states(
            hass,
            start - _EPSILON,
            end,
            entity_ids[first : first + ENTITY_CHUNK],
            include_start_time_state=False,
            significant_changes_only=False,
        )
        for entity_states in states.values():
            found.extend(state for state in entity_states if isinstance(state, State))
    start_ts, end_ts = start.timestamp(), end.timestamp()
    found = [state for state in found if start_ts <= state.last_updated_timestamp < end_ts]
    found.sort(key=attrgetter("last_updated_timestamp"))
    changes: list[RecordedChange] = []
    for state in found:
        entity_id, text = state.entity_id, state.state
        # Attributes as JSON text now (the recorder's are decoded JSON, so they encode):
        # the waiting change holds no dict (see RecordedChange).
        attributes = orjson.dumps(state.attributes, option=orjson.OPT_NON_STR_KEYS)
        changes.append(
            (entity_id, text, attributes, state.last_updated_timestamp, last.get(entity_id))
        )
        last[entity_id] = text
    return _Chunk(changes, end)


def _text(moment: datetime | None) -> str:
    return "" if moment is None else moment.isoformat()


# -- the capture mark and the gap fill ------------------------------------------------


class CaptureMark:
    """Until when the entry's listener captured events, kept across restarts.

    A few bytes in ``.storage``: written at most every SAVE_INTERVAL while events are
    captured (nothing while none are), and when the runtime stops. After a crash it is
    at most SAVE_INTERVAL old; the gap fill then sends a few minutes twice, which the
    derived event ids make harmless.
    """

    def __init__(self, hass: HomeAssistant, runtime: IngestorRuntime) -> None:
        self._hass = hass
        self._runtime = runtime
        self._store: Store[dict[str, Any]] = Store(
            hass, MARK_VERSION, mark_key(runtime.entry.entry_id)
        )
        self._saved: float | None = None
        self._unsub: Callable[[], None] | None = None

    async def async_load(self) -> float | None:
        data = await self._store.async_load()
        value = data.get(MARK_KEY) if isinstance(data, dict) else None
        self._saved = float(value) if isinstance(value, (int, float)) else None
        return self._saved

    @callback
    def async_start(self, now: float | None = None) -> None:
        """Save the mark from now on; with ``now``, save that at once (switched on live)."""
        if now is not None:
            self._saved = now
            self._store.async_delay_save(lambda: {MARK_KEY: now}, 0)
        if self._unsub is None:
            self._unsub = async_track_time_interval(
                self._hass, self._async_tick, SAVE_INTERVAL, name=f"{DOMAIN} capture mark"
            )

    @callback
    def _async_tick(self, _now: datetime) -> None:
        captured = self._runtime.listener.last_captured
        if captured is not None and captured != self._saved:
            self._saved = captured
            self._store.async_delay_save(lambda: {MARK_KEY: captured}, 0)

    async def async_stop(self, until: float | None) -> None:
        """Stop saving; with ``until``, save it now (the listener stopped then)."""
        if self._unsub is not None:
            self._unsub()
            self._unsub = None
        if until is not None:
            self._saved = until
            await self._store.async_save({MARK_KEY: until})

    async def async_remove(self) -> None:
        await self._store.async_remove()


def mark_key(entry_id: str) -> str:
    """The Store key: .storage/ha_ingestor/captured_<entry_id>, next to the outbox."""
    return f"{DOMAIN}/captured_{entry_id}"
