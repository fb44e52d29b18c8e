"""Fixtures of the outbox tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from custom_components.ha_ingestor.pipeline.outbox import Outbox
from tests.pipeline.outbox.helpers import OutboxFactory, encode


@pytest.fixture
async def make_outbox(tmp_path: Path) -> AsyncIterator[OutboxFactory]:
    """Build outboxes (default file: tmp_path/outbox.db); every one is closed after the test."""
    made: list[Outbox[str]] = []

    def factory(path: Path | None = None, **kwargs: Any) -> Outbox[str]:
        kwargs.setdefault("encode", encode)
        # Memory written as soon as it is due, at once: these tests check where records
        # go; test_write_delay.py checks the delay itself.
        kwargs.setdefault("write_delay", 0.0)
        outbox: Outbox[str] = Outbox(path or tmp_path / "outbox.db", **kwargs)
        made.append(outbox)
        return outbox

    yield factory
    for outbox in made:
        await outbox.close()
