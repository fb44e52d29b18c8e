"""Child process of the write-delay crash test: appends events at a steady rate to an
outbox with its defaults (durability ``always``, ``write_delay`` 1.0 s) while an
EventForwarder delivers them to URL, until it is killed.

Before appending an event it writes ``<event id> <time.monotonic()>`` to REPORT and
flushes, so every event it may have appended is in the report (the last line can name
an event the kill stopped before its append, never the other way round). Run as
``python outbox_forwarder_child.py PATH URL REPORT RATE BATCH_SIZE``.
"""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp
import orjson
import outbox_writer_child  # noqa: F401 - loads the pipeline as ha_ingestor_pipeline

from ha_ingestor_pipeline.envelope import EncodedEvent
from ha_ingestor_pipeline.forwarder import EventForwarder, ForwarderConfig, Route
from ha_ingestor_pipeline.http_client import ServiceHTTPClient
from ha_ingestor_pipeline.outbox import Outbox

PAD = "x" * 200


def event_id(number: int) -> str:
    return f"crash-{number:07d}"


def encode(number: int) -> EncodedEvent:
    """An envelope as the receivers take it; the event id is known before the append."""
    envelope = {
        "event_id": event_id(number),
        "timestamp": "2026-11-27T12:00:00Z",
        "source": "ha_ingestor",
        "data": {"event_type": "state_changed", "entity_id": "sensor.crash", "n": number},
        "context": {"pad": PAD},
    }
    return EncodedEvent(envelope["event_id"], orjson.dumps(envelope))


async def main(path: str, url: str, report: str, rate: float, batch_size: int) -> None:
    outbox: Outbox[int] = Outbox(path, encode)  # the defaults under test
    await outbox.open()
    async with aiohttp.ClientSession() as session:
        client = ServiceHTTPClient("receiver", [url], session)
        forwarder = EventForwarder(
            outbox, Route("receiver", client), config=ForwarderConfig(batch_size=batch_size)
        )
        forwarder.start()
        loop = asyncio.get_running_loop()
        with open(report, "a", encoding="ascii") as out:
            start = loop.time()
            number = 0
            while True:
                # A steady rate: each event at its own moment (late ones catch up).
                await asyncio.sleep(max(0.0, start + number / rate - loop.time()))
                out.write(f"{event_id(number)} {time.monotonic():.6f}\n")
                out.flush()
                outbox.append(number)
                number += 1


if __name__ == "__main__":
    path, url, report, rate, batch_size = sys.argv[1:6]
    asyncio.run(main(path, url, report, float(rate), int(batch_size)))
