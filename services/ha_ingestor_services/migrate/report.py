"""What ``migrate verify`` prints: per-entity lines, a summary table, or one JSON document."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import orjson

from ha_ingestor_services.storage.records import ns_to_rfc3339

from .compare import EntityResult

_COUNTS = ("from_points", "to_points", "matched", "missing", "extra", "differing", "skipped")


@dataclass(slots=True)
class Progress:
    """A one-line progress bar on stderr: entities done of all, points read."""

    stream: TextIO
    total: int
    enabled: bool
    done: int = 0
    points: int = 0
    _last: float = 0.0

    def step(self, result: EntityResult | None = None, *, force: bool = False) -> None:
        if result is not None:
            self.done += 1
            self.points += result.from_points + result.to_points + result.skipped
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.1):
            return
        self._last = now
        width = 30
        filled = width * self.done // self.total if self.total else width
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(
            f"\r[{bar}] {self.done}/{self.total} entities, {self.points:,} points read"
        )
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.step(force=True)
            self.stream.write("\n")
            self.stream.flush()


def _shown(value: object) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if isinstance(value, str) else str(value)


def entity_lines(result: EntityResult, *, verbose: bool) -> list[str]:
    """One line for an entity, and its first examples with ``verbose``."""
    if result.agrees:
        lines = [f"{result.entity_id}: agree ({result.matched} points)"]
    else:
        lines = [
            f"{result.entity_id}: {result.missing} missing, {result.extra} extra, "
            f"{result.differing} differing ({result.from_points} from, {result.to_points} to)"
        ]
    if verbose:
        for kind in ("missing", "extra", "differing"):
            for example in result.examples[kind]:
                when = ns_to_rfc3339(int(str(example["time_ns"])))
                if kind == "differing":
                    what = f"from {_shown(example['from'])} to {_shown(example['to'])}"
                else:
                    what = _shown(example["value"])
                lines.append(f"  {kind:<9} {when}  {what}")
    return lines


def totals(results: Sequence[EntityResult]) -> dict[str, int]:
    summed = {name: sum(getattr(result, name) for result in results) for name in _COUNTS}
    summed["entities"] = len(results)
    summed["entities_differing"] = sum(1 for result in results if not result.agrees)
    return summed


def summary_table(results: Sequence[EntityResult]) -> list[str]:
    """The entities that differ, one row each, and the totals."""
    differing = [result for result in results if not result.agrees]
    width = max([len("entity"), len("total"), *(len(r.entity_id) for r in differing)])
    heads = ("from", "to", "missing", "extra", "differing")
    keys = ("from_points", "to_points", "missing", "extra", "differing")

    def row(name: str, values: Sequence[int]) -> str:
        cells = "".join(
            f"  {value:>{max(9, len(head))}}" for value, head in zip(values, heads, strict=True)
        )
        return f"{name:<{width}}{cells}".rstrip()

    header = f"{'entity':<{width}}" + "".join(f"  {head:>9}" for head in heads)
    lines = [header]
    lines += [row(r.entity_id, [getattr(r, key) for key in keys]) for r in differing]
    summed = totals(results)
    lines.append(row("total", [summed[key] for key in keys]))
    count = summed["entities"]
    if summed["entities_differing"]:
        verdict = f"the stores differ: {summed['entities_differing']} of {count} entities"
    else:
        verdict = f"the stores agree: {count} entities, {summed['matched']} points"
    lines.append(verdict)
    if summed["skipped"]:
        lines.append(
            f"{summed['skipped']} unknown/unavailable states not compared "
            "(Home Assistant's layout does not keep them)"
        )
    return lines


def _example_json(example: dict[str, object]) -> dict[str, object]:
    shown = dict(example)
    shown["time"] = ns_to_rfc3339(int(str(shown.pop("time_ns"))))
    return shown


def document(results: Sequence[EntityResult], header: dict[str, Any]) -> bytes:  # the --json output
    entities = [
        {
            "entity_id": result.entity_id,
            "agree": result.agrees,
            **{name: getattr(result, name) for name in _COUNTS},
            "examples": {
                kind: [_example_json(example) for example in examples]
                for kind, examples in result.examples.items()
            },
        }
        for result in results
    ]
    summed = totals(results)
    body = {
        **header,
        "agree": summed["entities_differing"] == 0,
        "totals": summed,
        "entities": entities,
    }
    return orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n"
