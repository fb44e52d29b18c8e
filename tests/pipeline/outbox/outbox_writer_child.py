"""Child process of the SIGKILL test: appends to an outbox until it is killed.

After every committed batch it prints ``<highest committed id> <highest acked id>`` and
flushes, so the parent knows what must survive the kill. Run as
``python outbox_writer_child.py PATH``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path


def _load_pipeline() -> None:
    """Import the pipeline as the top-level package ``ha_ingestor_pipeline`` from its folder.

    That is the services' name for it; unlike ``custom_components.ha_ingestor`` it does
    not pull in Home Assistant, so the child starts fast.
    """
    folder = Path(__file__).resolve().parents[3] / "custom_components" / "ha_ingestor" / "pipeline"
    spec = importlib.util.spec_from_file_location(
        "ha_ingestor_pipeline", folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ha_ingestor_pipeline"] = module
    spec.loader.exec_module(module)


_load_pipeline()

from ha_ingestor_pipeline.envelope import EncodedEvent  # noqa: E402
from ha_ingestor_pipeline.outbox import Outbox  # noqa: E402

BATCH = 200
ACK_PER_BATCH = 150  # acks trail the appends, so deletes and inserts interleave
PAD = b"x" * 400


def encode(number: int) -> EncodedEvent:
    return EncodedEvent(str(number), b'{"n":%d,"pad":"%s"}' % (number, PAD))


async def main(path: str) -> None:
    outbox: Outbox[int] = Outbox(path, encode)
    await outbox.open()
    number = 0
    acked = -1
    while True:
        for _ in range(BATCH):
            outbox.append(number)
            number += 1
        await outbox.sync()  # everything appended so far is committed
        records = await outbox.take(ACK_PER_BATCH)
        if records:
            await outbox.ack(record.seq for record in records)
            acked = int(records[-1].event_id)
        print(number - 1, acked, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
