"""Each service's stable id: what Home Assistant's config entry is keyed by.

The id is a UUID in canonical lowercase form. Where it comes from, first that applies
(docs/ARCHITECTURE.md, "Discovery"):

1. ``--service-id`` / ``HA_INGESTOR_SERVICE_ID``;
2. the data itself: storage on SQLite keeps it in the file's ``meta`` table, so it
   moves with the file;
3. a state file ``<state dir>/<role>.id`` (enrichment, and storage on InfluxDB).

For InfluxDB a state file rather than an id derived from the server's URL and database:
the URL is exactly what changes while the service stays the same (the reason Home
Assistant refuses URLs as unique ids), and deriving would turn every such change into a
"new" service.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .contract import StartupError

Role = Literal["storage", "enrichment"]
API_VERSION = 1  # the HTTP API's major version: health's "api_version", TXT "api"
DEFAULT_STATE_DIR = "~/.local/state/ha-ingestor"  # "~" is the home of the user running it


def canonical_id(text: str) -> str:
    """``text`` as a canonical lowercase UUID; ValueError when it is not a UUID."""
    try:
        return str(uuid.UUID(text.strip()))
    except (ValueError, AttributeError):
        raise ValueError(f"{text!r} is not a UUID (e.g. {uuid.uuid4()})") from None


def new_id() -> str:
    return str(uuid.uuid4())


def state_file_id(state_dir: str, role: Role) -> str:
    """The id kept in ``<state_dir>/<role>.id``, made (and the folder) when missing.

    A new file is written in full under a temporary name, then linked to its own: the
    link fails if another process made the file first, and then that one's id is used,
    so a crash or a race never leaves an empty or second id.
    """
    folder = Path(state_dir).expanduser()
    path = folder / f"{role}.id"
    try:
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            temporary = folder / f".{role}.id.{os.getpid()}.{uuid.uuid4().hex[:8]}"
            try:
                with temporary.open("x", encoding="ascii") as file:
                    file.write(new_id() + "\n")
                    file.flush()
                    os.fsync(file.fileno())
                with contextlib.suppress(FileExistsError):
                    os.link(temporary, path)
            finally:
                temporary.unlink(missing_ok=True)
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as err:
        raise StartupError(
            f"{role}: cannot keep its service id in {path} ({err}); give a writable "
            "--state-dir (HA_INGESTOR_STATE_DIR) or a fixed --service-id"
        ) from None
    try:
        return canonical_id(text)
    except ValueError:
        raise StartupError(
            f"{role}: {path} holds no service id; delete it (a new id is made) or give --service-id"
        ) from None


@dataclass(frozen=True, slots=True)
class IdentitySource:
    """Where a service finds its id at start (see the module docstring).

    ``state_dir`` None keeps no state file: an id of this process only, for services
    embedded in tests; the command always gives one.
    """

    role: Role
    service_id: str | None = None
    state_dir: str | None = None

    def resolve(self, kept_with_data: str | None = None) -> str:
        """The id: the override, else the one kept with the data, else the state file's."""
        if self.service_id is not None:
            return canonical_id(self.service_id)
        if kept_with_data is not None:
            return kept_with_data
        if self.state_dir is None:
            return new_id()
        return state_file_id(self.state_dir, self.role)
