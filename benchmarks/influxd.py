"""A throwaway influxd (InfluxDB 1.x, Debian's `influxdb` package) on 127.0.0.1.

Data, metadata and WAL live in a temporary folder; HTTP and RPC listen on free
loopback ports; the process is stopped (and the folder removed) on exit.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

INFLUXD = shutil.which("influxd") or "/usr/bin/influxd"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Influxd:
    url: str
    port: int

    def query(self, database: str, statement: str) -> dict[str, object]:
        params = urllib.parse.urlencode({"db": database, "q": statement})
        with urllib.request.urlopen(f"{self.url}/query?{params}", timeout=10) as answer:
            result: dict[str, object] = orjson.loads(answer.read())
            return result

    def execute(self, statement: str) -> None:
        body = urllib.parse.urlencode({"q": statement}).encode()
        with urllib.request.urlopen(f"{self.url}/query", data=body, timeout=10):
            pass

    def create_database(self, database: str) -> None:
        self.execute(f'CREATE DATABASE "{database}"')

    def count(self, database: str, measurement: str, field: str) -> int:
        """How many points ``measurement`` holds (0 when it does not exist yet)."""
        result = self.query(database, f'SELECT count("{field}") FROM "{measurement}"')
        try:
            series = result["results"][0]["series"]  # type: ignore[index]
            return int(series[0]["values"][0][1])
        except (KeyError, IndexError, TypeError):
            return 0


_CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{root}/meta"

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false

[http]
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false

[monitor]
  store-enabled = false
"""


class InfluxdProcess:
    """influxd on loopback ports and a data folder that outlive a stop: it can be started
    again on the same data (the chaos test takes it down and up)."""

    def __init__(self) -> None:
        if not Path(INFLUXD).exists():
            raise RuntimeError("influxd not found: install Debian's influxdb package")
        self.root = Path(tempfile.mkdtemp(prefix="influxd-"))
        port = free_port()
        self.server = Influxd(f"http://127.0.0.1:{port}", port)
        self.config = self.root / "influxdb.conf"
        self.config.write_text(_CONFIG.format(root=self.root, http_port=port, rpc_port=free_port()))
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start it and wait until /ping answers."""
        self._log = (self.root / "influxd.log").open("ab")
        self.process = subprocess.Popen(
            [INFLUXD, "-config", str(self.config)], stdout=self._log, stderr=self._log
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"influxd exited at start; see {self.root / 'influxd.log'}")
            try:
                with urllib.request.urlopen(f"{self.server.url}/ping", timeout=1):
                    return
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise RuntimeError("influxd did not answer /ping in time") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def influxd_process(startup_timeout: float = 30.0) -> Iterator[InfluxdProcess]:
    """Start influxd, wait until /ping answers, stop it and remove its data afterwards."""
    influxd = InfluxdProcess()
    try:
        influxd.start(startup_timeout)
        yield influxd
    finally:
        influxd.remove()


@contextlib.contextmanager
def running_influxd(startup_timeout: float = 30.0) -> Iterator[Influxd]:
    """`influxd_process`, for callers that need only its server."""
    with influxd_process(startup_timeout) as influxd:
        yield influxd.server
