"""The outbox against a model (hypothesis, stateful)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from custom_components.ha_ingestor.pipeline.outbox import (
    Durability,
    Outbox,
    sqlite_file,
    store,
)
from tests.pipeline.outbox.helpers import (
    encode,
)

# -- model-based ------------------------------------------------------------------------


class OutboxMachine(RuleBasedStateMachine):
    """The outbox against a list: order, attempts, in flight and dead letters."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.folder = tempfile.mkdtemp(prefix="outbox-machine-")
        self.path = Path(self.folder) / "outbox.db"
        self.durability = Durability.ALWAYS
        self.write_delay = 0.0  # at once, or never within a test (3,600 s)
        self.outbox: Outbox[str] | None = None
        self.counter = 0
        # The model: pending records in FIFO order as [event_id, attempts, seq or None].
        self.pending: list[list[Any]] = []
        self.in_flight: dict[int, str] = {}  # seq -> event_id
        self.dead: list[tuple[str, int]] = []  # (event_id, attempts), oldest first

    def run[X](self, coro: Coroutine[Any, Any, X]) -> X:
        return self.loop.run_until_complete(coro)

    def _open(self) -> None:
        self.outbox = Outbox(
            self.path,
            encode,
            durability=self.durability,
            memory_limit_events=7,
            write_delay=self.write_delay,
        )
        self.run(self.outbox.open())

    @property
    def box(self) -> Outbox[str]:
        assert self.outbox is not None
        return self.outbox

    @initialize(
        durability=st.sampled_from(list(Durability)), write_delay=st.sampled_from([0.0, 3600.0])
    )
    def start(self, durability: Durability, write_delay: float) -> None:
        self.durability = durability
        self.write_delay = write_delay
        self._open()

    @rule(count=st.integers(1, 5))
    def append(self, count: int) -> None:
        for _ in range(count):
            event_id = f"e{self.counter}"
            self.counter += 1
            self.box.append(event_id)
            self.pending.append([event_id, 0, None])

    @rule(count=st.integers(1, 4))
    def take(self, count: int) -> None:
        records = self.run(self.box.take(count))
        ready = [entry for entry in self.pending if entry[0] not in self.in_flight.values()]
        expected = ready[:count]
        assert [(r.event_id, r.attempts) for r in records] == [(e[0], e[1]) for e in expected]
        for record in records:
            self.in_flight[record.seq] = record.event_id

    def _entry(self, event_id: str) -> list[Any]:
        return next(entry for entry in self.pending if entry[0] == event_id)

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        seqs = data.draw(st.lists(st.sampled_from(sorted(self.in_flight)), unique=True))
        self.run(self.box.ack(seqs))
        for seq in seqs:
            self.pending.remove(self._entry(self.in_flight.pop(seq)))

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def nack(self, data: st.DataObject) -> None:
        seqs = data.draw(st.lists(st.sampled_from(sorted(self.in_flight)), unique=True))
        self.run(self.box.nack(seqs))
        for seq in seqs:
            self._entry(self.in_flight.pop(seq))[1] += 1

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def dead_letter(self, data: st.DataObject) -> None:
        seqs = data.draw(st.lists(st.sampled_from(sorted(self.in_flight)), unique=True))
        self.run(self.box.dead_letter(seqs, "R", "m", "t"))
        for seq in dict.fromkeys(seqs):
            entry = self._entry(self.in_flight.pop(seq))
            self.pending.remove(entry)
            self.dead.append((entry[0], entry[1] + 1))

    @precondition(lambda self: self.dead)
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        letters = self.run(self.box.list_dead_letters(limit=1000))
        assert [(d.event_id, d.attempts) for d in letters] == self.dead
        chosen = data.draw(st.none() | st.lists(st.sampled_from(letters), unique=True))
        if chosen is None:
            assert self.run(self.box.replay_dead_letters()) == len(letters)
            replayed = letters
        else:
            ids = [d.id for d in chosen]
            assert self.run(self.box.replay_dead_letters(ids)) == len(chosen)
            replayed = sorted(chosen, key=lambda d: d.id)
        for letter in replayed:
            self.dead.remove((letter.event_id, letter.attempts))
            self.pending.append([letter.event_id, letter.attempts, None])

    @precondition(lambda self: self.in_flight)
    @rule()
    def ack_all(self) -> None:
        # Emptying the file lets on_backlog go back to memory.
        self.run(self.box.ack(list(self.in_flight)))
        for event_id in self.in_flight.values():
            self.pending.remove(self._entry(event_id))
        self.in_flight.clear()

    # The rules below push records to the file; a 1-in-4 draw keeps them rarer, so
    # on_backlog spends most steps in memory.

    @rule(backlogged=st.booleans(), draw=st.integers(0, 3))
    def set_backlog(self, backlogged: bool, draw: int) -> None:
        if draw == 0 or not backlogged:
            self.box.set_backlog(backlogged)

    @rule(draw=st.integers(0, 3))
    def persist(self, draw: int) -> None:
        if draw == 0:
            self.run(self.box.persist())

    @rule(draw=st.integers(0, 3))
    def reopen(self, draw: int) -> None:
        if draw == 0:
            self.run(self.box.close())
            self.in_flight.clear()  # in flight returns to ready
            self._open()

    @invariant()
    def counts_match(self) -> None:
        if self.outbox is None:
            return
        stats = self.run(self.box.stats())
        assert stats.pending == len(self.pending)
        assert stats.in_flight == len(self.in_flight)
        assert stats.dead_letters == len(self.dead)
        assert self.box.ready_hint() == len(self.pending) - len(self.in_flight)
        if self.durability is Durability.ALWAYS and not self.write_delay:
            assert stats.on_disk == stats.pending

    def teardown(self) -> None:
        try:
            if self.outbox is not None:
                self.run(self.outbox.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.folder, ignore_errors=True)


@pytest.mark.parametrize("small", [False, True], ids=["default", "small_statements_and_tail"])
def test_outbox_against_a_model(small: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if small:
        # Multi-row inserts with a remainder, and a tail of written rows that overflows.
        monkeypatch.setattr(sqlite_file, "_INSERT_ROWS", 2)
        monkeypatch.setattr(
            sqlite_file,
            "_INSERT_MANY",
            "INSERT INTO outbox VALUES " + ",".join(["(?,?,?,?,?,?,?,?)"] * 2),
        )
        monkeypatch.setattr(store, "_TAIL_EVENTS", 3)
    run_state_machine_as_test(
        OutboxMachine,
        settings=settings(max_examples=40, stateful_step_count=30, deadline=None),
    )
