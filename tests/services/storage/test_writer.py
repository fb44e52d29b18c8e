"""The group-commit writer's bound on waiting work."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from ha_ingestor_services.storage.backends.base import BackendUnavailable, Outcome
from ha_ingestor_services.storage.records import Record
from ha_ingestor_services.storage.writer import GroupCommitWriter


async def test_waiting_work_past_the_cap_is_refused_not_queued() -> None:
    release = asyncio.Event()

    async def slow_write(records: Sequence[Record]) -> list[Outcome]:
        await release.wait()  # a backend that has stalled
        return ["stored"] * len(records)

    writer = GroupCommitWriter(slow_write, max_events=10, interval_s=0, max_waiting_events=25)
    writer.start()
    record: Record = object()  # type: ignore[assignment]  # the writer never looks inside
    first = asyncio.create_task(writer.submit([record] * 10))  # taken by the stalled flush
    await asyncio.sleep(0.01)
    waiting = [asyncio.create_task(writer.submit([record] * 10)) for _ in range(2)]
    await asyncio.sleep(0.01)
    assert writer.waiting_events == 20
    with pytest.raises(BackendUnavailable, match="busy") as refused:
        await writer.submit([record] * 10)
    assert refused.value.retry_after == 1
    assert writer.waiting_events == 20
    release.set()
    assert [len(outcomes) for outcomes in await asyncio.gather(first, *waiting)] == [10] * 3
    assert writer.snapshot()["refused_requests"] == 1
    await writer.stop()
