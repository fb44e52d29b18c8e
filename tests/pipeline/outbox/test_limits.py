"""The outbox's file modes and its dead-letter byte cap (issue 10), on real SQLite files."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import patch

import pytest

from custom_components.ha_ingestor.pipeline.outbox import Outbox
from tests.pipeline.outbox.helpers import LOGGER_NAME, OutboxFactory, encode


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The common umask, under which SQLite alone would create files 0644."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- files 0600 -------------------------------------------------------------------------


@pytest.mark.usefixtures("usual_umask")
async def test_the_outbox_files_are_private(make_outbox: OutboxFactory, tmp_path: Path) -> None:
    outbox = make_outbox()
    await outbox.open()
    outbox.append_many(["a", "b"])
    assert await outbox.sync() == 2
    path = tmp_path / "outbox.db"
    for name in (path, f"{path}-wal", f"{path}-shm"):
        assert mode(name) == 0o600, name
    await outbox.close()


@pytest.mark.usefixtures("usual_umask")
async def test_files_of_an_older_version_are_narrowed(
    make_outbox: OutboxFactory, tmp_path: Path
) -> None:
    path = tmp_path / "outbox.db"
    first = make_outbox()
    await first.open()
    first.append("a")
    await first.sync()
    await first.close()
    os.chmod(path, 0o644)

    outbox = make_outbox()
    await outbox.open()
    assert mode(path) == 0o600
    assert (await outbox.stats()).pending == 1  # the same file, events kept


async def test_a_file_system_without_chmod_does_not_stop_the_outbox(
    make_outbox: OutboxFactory,
) -> None:
    with patch("os.chmod", side_effect=PermissionError("operation not permitted")):
        outbox = make_outbox()
        await outbox.open()
    outbox.append("a")
    assert await outbox.sync() == 1


# -- dead letters capped by bytes --------------------------------------------------------


async def dead_letters_of(outbox: Outbox[str], *items: str) -> None:
    """Each item becomes a dead letter, in order."""
    outbox.append_many(items)
    records = await outbox.take(len(items))
    assert len(records) == len(items)
    for record in records:
        await outbox.dead_letter([record.seq], "R", "refused", "storage")


async def dead_ids(outbox: Outbox[str]) -> list[str]:
    return [letter.event_id for letter in await outbox.list_dead_letters()]


async def test_dead_letters_capped_by_bytes(
    make_outbox: OutboxFactory, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = make_outbox(max_dead_bytes=1000)
    await outbox.open()
    await dead_letters_of(outbox, "a:400", "b:400")
    assert await dead_ids(outbox) == ["a", "b"]

    with caplog.at_level(logging.WARNING, LOGGER_NAME):
        await dead_letters_of(outbox, "c:400")
    # Over 1000 bytes: the oldest goes, counted and logged as at the count cap.
    assert await dead_ids(outbox) == ["b", "c"]
    stats = await outbox.stats()
    assert (stats.dead_letters, stats.dead_letters_dropped) == (2, 1)
    assert "dropped the 1 oldest" in caplog.text

    # A big one pushes out as many of the oldest as it takes.
    await dead_letters_of(outbox, "d:900")
    assert await dead_ids(outbox) == ["d"]
    assert (await outbox.stats()).dead_letters_dropped == 3


async def test_dead_letter_bytes_follow_replay_and_purge(make_outbox: OutboxFactory) -> None:
    outbox = make_outbox(max_dead_bytes=1000)
    await outbox.open()
    await dead_letters_of(outbox, "a:400", "b:400")
    letters = await outbox.list_dead_letters()
    assert await outbox.purge_dead_letters([letters[0].id]) == 1
    assert await outbox.replay_dead_letters([letters[1].id]) == 1
    (replayed,) = await outbox.take(10)
    await outbox.ack([replayed.seq])
    # The two that left no longer count: two more fit without dropping anything.
    await dead_letters_of(outbox, "c:400", "d:400")
    assert await dead_ids(outbox) == ["c", "d"]
    assert (await outbox.stats()).dead_letters_dropped == 0


async def test_both_caps_and_a_lowered_cap_at_open(
    make_outbox: OutboxFactory, tmp_path: Path
) -> None:
    outbox = make_outbox(max_dead_letters=3, max_dead_bytes=10_000)
    await outbox.open()
    await dead_letters_of(outbox, "a:100", "b:100", "c:100", "d:100")
    assert await dead_ids(outbox) == ["b", "c", "d"]  # the count cap
    await outbox.close()

    # Opened again with a smaller byte cap: the oldest go at once.
    reopened = make_outbox(tmp_path / "outbox.db", max_dead_bytes=250)
    await reopened.open()
    assert await dead_ids(reopened) == ["c", "d"]
    assert (await reopened.stats()).dead_letters_dropped == 1


def test_the_byte_cap_must_not_be_negative(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="caps"):
        Outbox(tmp_path / "x.db", encode, max_dead_bytes=-1)
