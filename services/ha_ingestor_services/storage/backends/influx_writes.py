"""What both InfluxDB backends do with a flush: lines out, one outcome per record back.

A record InfluxDB cannot keep is rejected before sending (`line_or_problem`). A resent
event is recognised by a bounded memory of recently written ids and answered
``duplicate`` without a write; InfluxDB stays correct without it, since a resent event
overwrites its own point (same series, same time). When InfluxDB refuses some lines of
a write (400: it wrote the others), the lines are halved until each refused one is
found and rejected on its own; rewriting the good ones changes nothing.

In the ``home_assistant`` layout (`ha_layout`) a record that has no point there (an
event other than a state change, an unknown or unavailable state) is not written and
answered ``stored``: the storage took it and did what its layout says; `skipped`
counts them by reason.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Sequence

from ha_ingestor_services.storage.records import Record
from ha_ingestor_services.storage.settings import InfluxLayout

from .base import DUPLICATE, STORED, Outcome
from .ha_layout import NO_FIELDS, NO_STATE, NOT_A_STATE_CHANGE, ha_line, ha_point, ha_problem
from .line_protocol import line_or_problem

_LOGGER = logging.getLogger(__name__)
_SKIPPED_FIRST = (
    "influx_layout home_assistant: %s are not written; they are answered stored and "
    "counted in stats (skipped_by_layout.%s). The first: %s of %s"
)
_SKIPPED_WHAT = {
    NOT_A_STATE_CHANGE: "events other than state_changed",
    NO_STATE: "unknown, unavailable and empty states",
    NO_FIELDS: "states with nothing to write",
}
INFLUX_REJECTED = "INFLUX_REJECTED"
# Enough to recognise resends of the last minutes; ids are kept as text (no hash
# collisions that could call a new event a duplicate).
RECENT_IDS = 50_000


class Refused(Exception):
    """InfluxDB refused (some of) the lines of a write; the message is InfluxDB's."""


class RecentIds:
    """The last ``size`` event ids written, to answer ``duplicate`` without a read."""

    def __init__(self, size: int = RECENT_IDS) -> None:
        self._size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)

    def __len__(self) -> int:
        return len(self._ids)


def rejected(message: str) -> Outcome:
    return {"code": INFLUX_REJECTED, "message": message}


class InfluxWrites:
    """Turns a flush into writes through ``post`` (which raises `Refused` on a 400)."""

    def __init__(
        self, post: Callable[[str], Awaitable[None]], layout: InfluxLayout = "ha_ingestor"
    ) -> None:
        self._post = post
        self._home_assistant = layout == "home_assistant"
        self.recent = RecentIds()
        self.bisections = 0
        self.skipped: Counter[str] = Counter()

    def _line(self, record: Record) -> tuple[str | None, str | None]:
        """(the record's line, None), (None, why it is refused), or (None, None): skipped."""
        if not self._home_assistant:
            return line_or_problem(record)
        point = ha_point(record)
        if isinstance(point, str):
            if not self.skipped[point]:
                what = _SKIPPED_WHAT.get(point, point)
                _LOGGER.info(_SKIPPED_FIRST, what, point, record.event_type, record.entity_id)
            self.skipped[point] += 1
            return None, None
        problem = ha_problem(point)
        return (None, problem) if problem is not None else (ha_line(point), None)

    async def write(self, records: Sequence[Record]) -> list[Outcome]:
        outcomes: list[Outcome | None] = []
        lines: list[str] = []
        positions: list[int] = []
        seen: set[str] = set()
        for index, record in enumerate(records):
            if record.event_id in self.recent or record.event_id in seen:
                outcomes.append(DUPLICATE)
                continue
            line, problem = self._line(record)
            if problem is not None:
                outcomes.append(rejected(problem))
                continue
            if line is None:
                outcomes.append(STORED)
                continue
            seen.add(record.event_id)
            lines.append(line)
            positions.append(index)
            outcomes.append(None)
        refused = await self._write_lines(lines, 0)
        for offset, index in enumerate(positions):
            message = refused.get(offset)
            if message is None:
                outcomes[index] = STORED
                self.recent.add(records[index].event_id)
            else:
                outcomes[index] = rejected(f"InfluxDB refused the point: {message}")
        return [outcome if outcome is not None else STORED for outcome in outcomes]

    async def _write_lines(self, lines: list[str], first: int) -> dict[int, str]:
        """Write ``lines``; the refused ones by position (from ``first``) with the reason."""
        if not lines:
            return {}
        try:
            await self._post("\n".join(lines))
        except Refused as err:
            if len(lines) == 1:
                return {first: str(err)}
            self.bisections += 1
            half = len(lines) // 2
            refused = await self._write_lines(lines[:half], first)
            refused.update(await self._write_lines(lines[half:], first + half))
            return refused
        return {}
