"""SIGKILL while delivering, with the outbox's defaults: nothing older than ``write_delay``
is lost (issue 12).

New records wait in memory and reach the file only once the oldest has waited
``write_delay`` (outbox/store.py), so a crash may lose what arrived in the last
``write_delay``, and nothing older: it was either delivered or in the file. A child
process (outbox_forwarder_child.py) appends events at a steady rate to an outbox with
its defaults (durability ``always``, ``write_delay`` 1.0 s) and forwards them, small
batches, to a receiver here that stores each batch at once and answers 0.3-0.5 s later,
so a backlog builds up: the oldest records are in the file, the newest in memory, one
batch in flight (already stored: the restart sends it again). The child is killed with
SIGKILL; an outbox and a forwarder here open the same file and drain it to the receiver,
now fast.

Timing is only ever asserted with a margin on the safe side: an event counts as "must
arrive" only when it was appended more than ``write_delay`` + `MARGIN` before the kill
(the worker may wake up late on a loaded machine, never early).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from custom_components.ha_ingestor.pipeline.forwarder import (
    EventForwarder,
    ForwarderConfig,
    Route,
)
from custom_components.ha_ingestor.pipeline.http_client import ServiceHTTPClient
from custom_components.ha_ingestor.pipeline.outbox import Outbox
from tests.pipeline.fault_server import Fault, FaultServer
from tests.pipeline.outbox.helpers import encode

CHILD = Path(__file__).with_name("outbox_forwarder_child.py")
WRITE_DELAY = 1.0  # the outbox's default, which the child keeps
MARGIN = 0.5  # for the worker's scheduling on a loaded machine
RATE = 200  # events/s appended by the child
BATCH = 20  # events per batch: the slow receiver takes at most ~65/s, so a backlog grows
RUN_S = 4.0  # from the first delivery to the kill


def _appended(report: Path) -> dict[str, float]:
    """Event id -> time.monotonic() of its append, from the child's report."""
    appended: dict[str, float] = {}
    for line in report.read_text(encoding="ascii").splitlines(keepends=True):
        if line.endswith("\n"):  # the kill may cut the last line short
            event_id, at = line.split()
            appended[event_id] = float(at)
    return appended


async def _wait_until(condition: Callable[[], object], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout} s")
        await asyncio.sleep(0.05)


async def test_sigkill_loses_nothing_older_than_the_write_delay(
    tmp_path: Path, fault_server: FaultServer, http_session: aiohttp.ClientSession
) -> None:
    path = tmp_path / "outbox.db"
    report = tmp_path / "appended.txt"
    log = tmp_path / "child.log"
    # Every batch is stored, then answered after 0.3, 0.4 or 0.5 s (seeded).
    slow = tuple(Fault.slow_after_store(seconds) for seconds in (0.3, 0.4, 0.5))
    fault_server.set_random_faults(1.0, *slow, seed=12)
    with log.open("wb") as output:
        arguments = [str(path), fault_server.url, str(report), str(RATE), str(BATCH)]
        child = subprocess.Popen(
            [sys.executable, str(CHILD), *arguments],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        await _wait_until(
            lambda: fault_server.stored_ids or child.poll() is not None, "a first delivery", 120
        )
        assert child.poll() is None, log.read_text()
        await asyncio.sleep(RUN_S)
        killed_at = time.monotonic()
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        await asyncio.to_thread(child.wait, 30)
    assert child.returncode == -signal.SIGKILL, log.read_text()

    # Let the slow answer to the batch in flight end; from now on answers come at once.
    fault_server.clear_faults()
    await asyncio.sleep(1.0)
    stored_before = len(fault_server.stored_ids)
    received_before = len(fault_server.received)

    outbox: Outbox[str] = Outbox(path, encode)
    await outbox.open()
    try:
        in_file = (await outbox.stats()).pending
        client = ServiceHTTPClient("receiver", [fault_server.url], http_session)
        forwarder = EventForwarder(outbox, Route("receiver", client), config=ForwarderConfig())
        forwarder.start()
        try:
            result = await forwarder.flush(timeout=120)
        finally:
            await forwarder.stop()
        assert result.done, result
        assert (await outbox.stats()).pending == 0
    finally:
        await outbox.close()

    appended = _appended(report)
    old_enough = {
        event_id for event_id, at in appended.items() if at < killed_at - WRITE_DELAY - MARGIN
    }
    stored = fault_server.stored_ids
    receipts = [event["event_id"] for event in fault_server.received]
    resent = len(receipts) - len(set(receipts))
    after_restart = len(stored) - stored_before
    print(
        f"\nappended {len(appended)}, {len(old_enough)} of them more than"
        f" {WRITE_DELAY + MARGIN:g} s before the kill;"
        f" delivered {stored_before} before the restart, {after_restart} after it"
        f" ({in_file} records in the file at the restart);"
        f" {len(receipts)} receipts, {resent} resent"
        f" ({len(receipts) - received_before} after the restart);"
        f" {len(appended) - len(stored)} of the last moments lost"
    )

    # Everything appended long enough before the kill arrived, before or after the restart.
    missing = old_enough - set(stored)
    assert not missing, f"{len(missing)} lost, e.g. {sorted(missing)[:5]}"
    # The receiver stored each event once; resends were answered as duplicates. Only the
    # batch in flight at the kill, or one whose ack had not reached the file, can be sent
    # again (one batch in flight, its ack before the next take).
    assert len(stored) == len(set(stored))
    assert resent <= 2 * BATCH
    # Nothing arrived that the child did not append.
    assert set(receipts) <= set(appended)
    # The run exercised what it is about: a backlog old enough to be in the file only.
    assert len(old_enough) >= 100
    assert after_restart > 0
    assert in_file >= after_restart
