"""The parts of ``scripts/demo`` (scripts/demo.py is the command).

ports: which ports a run uses. processes: the children, their logs, /proc. client: HTTP.
ha_config: Home Assistant's configuration folder. onboarding: the owner account and
Home Assistant's onboarding steps. stack: `Demo`, the whole run. printout: what the
command prints.
"""

from pathlib import Path


class DemoError(Exception):
    """Something did not start (or stop); the message says what, `log` where to look."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log
