"""A storage service in a process of its own, for the SIGKILL test.

``python -m tests.services.storage.storage_child SQLITE_PATH PORT`` serves storage on
127.0.0.1:PORT, prints ``ready`` and runs until it is killed.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

from ha_ingestor_services.connections import ServiceRunner
from ha_ingestor_services.storage.service import StorageService
from ha_ingestor_services.storage.settings import StorageSettings
from ha_ingestor_services.web import create_app
from tests.services.conftest import TOKEN


async def main(path: str, port: int) -> None:
    app = create_app(StorageService(StorageSettings(sqlite_path=path)), token=TOKEN)
    runner = ServiceRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
