"""Compare two streams of one entity's points, newest first.

A point is a time (ns) and a state value (text, a number, or None). Points are keyed by
their time cut to the chosen precision (HA Ingestor adds digits below the microsecond
that Home Assistant's layout does not have). The reference side ("from") and the
candidate ("to") are merged key by key: a key only in the reference is missing, only in
the candidate extra, in both with different values differing. Several points under one
key (two changes in one microsecond) are matched as multisets: equal values first, the
rest paired as differing, the leftovers missing or extra.

Only one page of each side is held at a time: the readers yield pages lazily.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

Value = str | float | None

# How many examples of each kind an entity's result keeps.
EXAMPLES = 5


class Point(NamedTuple):
    time_ns: int
    value: Value


def canonical(value: Value) -> tuple[str, float | str]:
    """What two values are compared as: a number when both read as one, else text."""
    if value is None:
        return ("none", "")
    if isinstance(value, float | int):
        number = float(value)
    else:
        try:
            number = float(value)
        except ValueError:
            return ("text", value)
    if math.isfinite(number):
        return ("number", number)
    return ("text", str(value).strip().lower())


@dataclass(slots=True)
class EntityResult:
    """What one entity's comparison found."""

    entity_id: str
    from_points: int = 0
    to_points: int = 0
    matched: int = 0
    missing: int = 0
    extra: int = 0
    differing: int = 0
    skipped: int = 0  # states one layout cannot hold (see `skip_states`)
    examples: dict[str, list[dict[str, object]]] = field(
        default_factory=lambda: {"missing": [], "extra": [], "differing": []}
    )

    @property
    def agrees(self) -> bool:
        return not (self.missing or self.extra or self.differing)

    def _example(self, kind: str, item: dict[str, object]) -> None:
        if len(self.examples[kind]) < EXAMPLES:
            self.examples[kind].append(item)


Group = tuple[int, list[Point]]


async def _groups(
    pages: AsyncIterator[list[Point]], divisor: int, skip: frozenset[Value], result: EntityResult
) -> AsyncIterator[Group]:
    """Consecutive points with the same key, newest first; skipped states counted."""
    key: int | None = None
    points: list[Point] = []
    async for page in pages:
        for point in page:
            if point.value in skip:
                result.skipped += 1
                continue
            point_key = point.time_ns // divisor
            if point_key != key:
                if points and key is not None:
                    yield key, points
                key, points = point_key, []
            points.append(point)
    if points and key is not None:
        yield key, points


async def _next(groups: AsyncIterator[Group]) -> Group | None:
    return await anext(groups, None)


def _match(result: EntityResult, ours: list[Point], theirs: list[Point]) -> None:
    """One key's points on both sides, matched as multisets of values."""
    left = list(ours)
    right = list(theirs)
    for point in list(left):
        wanted = canonical(point.value)
        for index, other in enumerate(right):
            if canonical(other.value) == wanted:
                left.remove(point)
                del right[index]
                result.matched += 1
                break
    for mine, other in zip(left, right, strict=False):
        result.differing += 1
        result._example(
            "differing",
            {"time_ns": mine.time_ns, "from": mine.value, "to": other.value},
        )
    for point in left[len(right) :]:
        _missing(result, point)
    for point in right[len(left) :]:
        _extra(result, point)


def _missing(result: EntityResult, point: Point) -> None:
    result.missing += 1
    result._example("missing", {"time_ns": point.time_ns, "value": point.value})


def _extra(result: EntityResult, point: Point) -> None:
    result.extra += 1
    result._example("extra", {"time_ns": point.time_ns, "value": point.value})


async def compare_entity(
    entity_id: str,
    reference: AsyncIterator[list[Point]],
    candidate: AsyncIterator[list[Point]],
    *,
    divisor: int = 1000,
    skip: Iterable[Value] = (),
) -> EntityResult:
    """Merge both sides' pages (each newest first) and count what differs."""
    result = EntityResult(entity_id)
    skipped = frozenset(skip)
    ours = _groups(reference, divisor, skipped, result)
    theirs = _groups(candidate, divisor, skipped, result)
    mine, other = await _next(ours), await _next(theirs)
    while mine is not None or other is not None:
        if other is None or (mine is not None and mine[0] > other[0]):
            assert mine is not None
            result.from_points += len(mine[1])
            for point in mine[1]:
                _missing(result, point)
            mine = await _next(ours)
        elif mine is None or other[0] > mine[0]:
            result.to_points += len(other[1])
            for point in other[1]:
                _extra(result, point)
            other = await _next(theirs)
        else:
            result.from_points += len(mine[1])
            result.to_points += len(other[1])
            _match(result, mine[1], other[1])
            mine, other = await _next(ours), await _next(theirs)
    return result
