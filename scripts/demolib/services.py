"""The enrichment and the storage service, each its own process, watched while it runs.

Either stops on its own (a crash, ``kill PID`` in an outage drill) without stopping the
demo: `ServiceProcess.watch` reports the change. Started again by hand with the command
`start_command` prints, it is found in /proc and reported as back; the demo stops it at
the end like its own children.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scripts.demolib.processes import (
    STOP_TIMEOUT,
    Child,
    find_service,
    start_child,
    start_time,
    stop_pid,
)

# How often /proc is searched for a service started by hand while it is down.
SEARCH_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class Change:
    """A service stopped or came back."""

    service: str
    running: bool
    pid: int
    exit_code: int | None = None  # known for a process the demo started


@dataclass
class ServiceProcess:
    """One service: its command, and the process running it (the demo's or the user's)."""

    name: str
    argv: list[str]  # the token comes through the environment, not the command line
    port: int
    log: Path
    child: Child | None = None
    outside_pid: int | None = None  # started by hand: no child of the demo
    exit_code: int | None = None  # of the last child that ended
    _next_search: float = 0.0

    @property
    def pid(self) -> int | None:
        if self.child is not None and self.child.running():
            return self.child.pid
        return self.outside_pid

    @property
    def started(self) -> bool:
        """A process to stop at the end: the demo's (running or not yet reaped) or one
        started by hand."""
        return self.child is not None or self.outside_pid is not None

    def start(self, env: dict[str, str], cwd: Path, note_pid: Callable[[int], None]) -> None:
        self.child = start_child(self.name, self.argv, self.log, env, cwd)
        note_pid(self.child.pid)

    def watch(self, note_pid: Callable[[int], None]) -> Change | None:
        """What changed since the last call: stopped, or started again by hand."""
        if self.child is not None:
            if self.child.running():
                return None
            pid, code = self.child.pid, self.child.stop()
            self.child, self.exit_code = None, code
            return Change(self.name, running=False, pid=pid, exit_code=code)
        if self.outside_pid is not None:
            if start_time(self.outside_pid) is not None:
                return None
            pid, self.outside_pid = self.outside_pid, None
            return Change(self.name, running=False, pid=pid)
        now = time.monotonic()
        if now < self._next_search:
            return None
        self._next_search = now + SEARCH_INTERVAL
        found = find_service(self.name, self.port)
        if found is None:
            return None
        self.outside_pid, self.exit_code = found, None
        note_pid(found)
        return Change(self.name, running=True, pid=found)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Stop it, whoever started it; the exit code of the demo's own process."""
        if self.child is not None:
            self.exit_code = self.child.stop(timeout)
            self.child = None
        if self.outside_pid is not None:
            stop_pid(self.outside_pid, timeout)
            self.outside_pid = None
        return self.exit_code

    def start_command(self, token: str) -> str:
        """The shell command that starts it again as the demo did (same port, file, token).

        Inside the Debian root of the latest leg (scripts/_root.sh) the command enters
        that root: it is typed on the host.
        """
        root = os.environ.get("HA_INGESTOR_ROOT_DIR")
        if root:
            argv = ["chroot", root, "/usr/bin/env", "-i", f"HA_INGESTOR_TOKEN={token}"]
            return shlex.join([*argv, *self.argv])
        return f"HA_INGESTOR_TOKEN={shlex.quote(token)} {shlex.join(self.argv)}"
