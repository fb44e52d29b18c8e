"""The group-commit writer: its bound on waiting work, and how long a flush waits for others."""

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


class Flushes:
    """A backend that records the size of each flush."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    async def write(self, records: Sequence[Record]) -> list[Outcome]:
        self.sizes.append(len(records))
        return ["stored"] * len(records)


async def flushed(
    interval_s: float, in_progress: int | None, *batches: int
) -> tuple[list[int], float]:
    """Submit the batches 10 ms apart, without waiting for each; the flushes' sizes and
    the seconds until every batch was written."""
    flushes = Flushes()
    writer = GroupCommitWriter(
        flushes.write, max_events=100, interval_s=interval_s, max_waiting_events=1000
    )
    if in_progress is not None:
        writer.in_progress = lambda: in_progress
    writer.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    record: Record = object()  # type: ignore[assignment]
    submitted = []
    for size in batches:
        submitted.append(asyncio.create_task(writer.submit([record] * size)))
        await asyncio.sleep(0.01)
    await asyncio.wait_for(asyncio.gather(*submitted), 5)
    took = loop.time() - started
    await writer.stop()
    return flushes.sizes, took


async def test_a_lone_request_is_not_kept_waiting_for_company() -> None:
    """Nothing else in progress: the flush goes at once, not after interval_s."""
    sizes, took = await flushed(30, 1, 5)
    assert sizes == [5]
    assert took < 1


async def test_a_flush_waits_for_requests_in_progress_and_no_longer() -> None:
    """Two requests in progress: the first waits for the second, then both go in one
    flush, long before interval_s."""
    sizes, took = await flushed(30, 2, 3, 4)
    assert sizes == [7]
    assert took < 1


async def test_without_a_count_a_flush_waits_the_interval() -> None:
    sizes, took = await flushed(0.2, None, 3)
    assert sizes == [3]
    assert took >= 0.19
