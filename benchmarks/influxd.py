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


@contextlib.contextmanager
def running_influxd(startup_timeout: float = 30.0) -> Iterator[Influxd]:
    """Start influxd, wait until /ping answers, stop it afterwards."""
    if not Path(INFLUXD).exists():
        raise RuntimeError("influxd not found: install Debian's influxdb package")
    root = Path(tempfile.mkdtemp(prefix="influxd-"))
    http_port, rpc_port = free_port(), free_port()
    config = root / "influxdb.conf"
    config.write_text(_CONFIG.format(root=root, http_port=http_port, rpc_port=rpc_port))
    log = (root / "influxd.log").open("wb")
    process = subprocess.Popen([INFLUXD, "-config", str(config)], stdout=log, stderr=log)
    server = Influxd(f"http://127.0.0.1:{http_port}", http_port)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"influxd exited at start; see {root / 'influxd.log'}")
            try:
                with urllib.request.urlopen(f"{server.url}/ping", timeout=1):
                    break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise RuntimeError("influxd did not answer /ping in time") from None
                time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        shutil.rmtree(root, ignore_errors=True)
