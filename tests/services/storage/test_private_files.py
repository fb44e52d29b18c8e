"""Storage files are the owner's alone (issue 10: the SQLite store and its WAL were 0644)."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp

from .conftest import StartStorage, envelope, post_batch, statuses


async def test_database_wal_and_shm_are_private(
    start_storage: StartStorage, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Created 0600 whatever the umask allows (the events may hold anything)."""
    previous = os.umask(0o022)  # the usual umask, under which SQLite alone makes 0644
    try:
        url, _ = await start_storage()
        status, body = await post_batch(client, url, [envelope("sensor.private")])
    finally:
        os.umask(previous)
    assert status == 200
    assert statuses(body) == ["stored"]
    for name in ("events.db", "events.db-wal", "events.db-shm"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
