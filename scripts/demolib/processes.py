"""The demo's processes: children with their log files, and processes found in /proc.

The demo starts Home Assistant and the two services as children. A service the user
stops and starts again by hand (the outage drill) is no child of the demo; it is found
by its command line in /proc, so the demo can report it and stop it at the end. Linux
only, as is the rest of the demo.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

STOP_TIMEOUT = 40.0
PIDS_FILE = "demo.pids"
SERVICES_COMMAND = "ha-ingestor-services"


@dataclass
class Child:
    """A process the demo started, with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    log_file: TextIO

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait, SIGKILL when it does not stop in time; its exit code."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()
        return self.process.returncode


def start_child(name: str, argv: Sequence[str], log: Path, env: dict[str, str], cwd: Path) -> Child:
    log.parent.mkdir(parents=True, exist_ok=True)
    log_file = log.open("a", encoding="utf-8")
    process = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        # Its own session: the terminal's Ctrl-C reaches only the demo, which then stops
        # Home Assistant first and the services after it.
        start_new_session=True,
    )
    return Child(name, process, log, log_file)


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# -- /proc ---------------------------------------------------------------------------------


def start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot); None when it is gone or a zombie.

    With the pid this names one process: a pid alone may have been reused since.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from its end.
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def argv_of(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def find_service(name: str, port: int) -> int | None:
    """The pid of a running ``ha-ingestor-services NAME --port PORT``, however started.

    Only the service's own process counts, not a wrapper around it (sudo, chroot, a
    shell): its command is the script, run by Python, or ``python -m ha_ingestor_services``.
    """
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        argv = argv_of(pid)
        found = _service_command(argv) == name and _port_flag(argv) == str(port)
        if found and start_time(pid) is not None:
            return pid
    return None


def _service_command(argv: list[str]) -> str | None:
    if len(argv) > 2 and Path(argv[0]).name.startswith("python"):
        if Path(argv[1]).name == SERVICES_COMMAND:
            return argv[2]
        if argv[1:3] == ["-m", "ha_ingestor_services"] and len(argv) > 3:
            return argv[3]
    if len(argv) > 1 and Path(argv[0]).name == SERVICES_COMMAND:
        return argv[1]
    return None


def _port_flag(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--port" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--port="):
            return arg.removeprefix("--port=")
    return None


def stop_pid(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM a process that is not a child; SIGKILL when it does not stop in time."""
    started = start_time(pid)
    if started is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while start_time(pid) == started and time.monotonic() < deadline:
        time.sleep(0.2)
    if start_time(pid) == started:
        os.kill(pid, signal.SIGKILL)


# -- what an earlier run left --------------------------------------------------------------


def remember(workdir: Path, pid: int) -> None:
    """Note a process of this run, so a later run can stop it if this one is killed."""
    started = start_time(pid)
    if started is not None:
        with (workdir / PIDS_FILE).open("a", encoding="utf-8") as pids:
            pids.write(f"{pid} {started}\n")


def stop_leftovers(workdir: Path) -> list[str]:
    """Stop what an earlier run in this work folder left running (it was killed).

    Newest first (Home Assistant before the services), and only a process that is still
    the one noted (same pid and start time).
    """
    path = workdir / PIDS_FILE
    try:
        noted = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
    except OSError:
        return []
    notes: list[str] = []
    for fields in reversed(noted):
        if len(fields) != 2 or not all(field.isdigit() for field in fields):
            continue
        pid, started = int(fields[0]), int(fields[1])
        if start_time(pid) == started:
            notes.append(f"stopped process {pid}, left running by an earlier demo run")
            stop_pid(pid)
    path.unlink(missing_ok=True)
    return notes
