"""The comparison against a model: random point sets, random edits, the counts match."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

from hypothesis import given, settings
from hypothesis import strategies as st

from ha_ingestor_services.migrate.compare import (
    EntityResult,
    Point,
    Value,
    canonical,
    compare_entity,
)


async def _pages(points: list[Point], size: int) -> AsyncIterator[list[Point]]:
    ordered = sorted(points, key=lambda point: point.time_ns, reverse=True)
    for index in range(0, len(ordered), size):
        yield ordered[index : index + size]


def compare(
    reference: list[Point],
    candidate: list[Point],
    *,
    size: int = 3,
    divisor: int = 1000,
    skip: tuple[Value, ...] = (),
) -> EntityResult:
    return asyncio.run(
        compare_entity(
            "sensor.x",
            _pages(reference, size),
            _pages(candidate, size),
            divisor=divisor,
            skip=skip,
        )
    )


_values = st.one_of(
    st.integers(-5, 5).map(float),
    st.integers(-5, 5).map(str),
    st.sampled_from(["on", "off", "eco", "22.50"]),
)


@st.composite
def _edited(draw: st.DrawFn) -> tuple[list[Point], list[Point], tuple[int, int, int]]:
    """Points at distinct microseconds, and a copy with some deleted, changed and added."""
    micros = draw(st.lists(st.integers(0, 10_000), unique=True, max_size=40))
    reference = [Point(micro * 1000 + draw(st.integers(0, 999)), draw(_values)) for micro in micros]
    candidate: list[Point] = []
    missing = differing = 0
    for point in reference:
        edit = draw(st.sampled_from(["keep", "keep", "delete", "change"]))
        # Our layout keeps digits below the microsecond that the other has not.
        moved = Point(point.time_ns - point.time_ns % 1000 + draw(st.integers(0, 999)), point.value)
        if edit == "keep":
            candidate.append(moved)
        elif edit == "delete":
            missing += 1
        else:
            differing += 1
            candidate.append(moved._replace(value=_changed(point.value)))
    added = draw(st.lists(st.integers(10_001, 20_000), unique=True, max_size=10))
    candidate += [Point(micro * 1000, draw(_values)) for micro in added]
    return reference, candidate, (missing, len(added), differing)


def _changed(value: Value) -> Value:
    if isinstance(value, float):
        return value + 1.5
    return f"{value}!"


@settings(max_examples=150, deadline=None)
@given(_edited(), st.integers(1, 7))
def test_counts_match_the_edits(
    case: tuple[list[Point], list[Point], tuple[int, int, int]], size: int
) -> None:
    reference, candidate, (missing, extra, differing) = case
    result = compare(reference, candidate, size=size)
    assert (result.missing, result.extra, result.differing) == (missing, extra, differing)
    assert result.matched == len(reference) - missing - differing
    assert result.from_points == len(reference)
    assert result.to_points == len(candidate)
    assert result.agrees == (missing == extra == differing == 0)
    assert len(result.examples["missing"]) == min(missing, 5)
    swapped = compare(candidate, reference, size=size + 1)
    assert (swapped.missing, swapped.extra, swapped.differing) == (extra, missing, differing)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), _values), max_size=30), st.randoms())
def test_points_sharing_a_time_match_as_multisets(
    points: list[tuple[int, Value]], shuffler: random.Random
) -> None:
    """Several changes in one microsecond: any order on either side agrees."""
    reference = [Point(micro * 1000, value) for micro, value in points]
    candidate = list(reference)
    shuffler.shuffle(candidate)
    result = compare(reference, candidate, size=2)
    assert result.agrees
    assert result.matched == len(points)


def test_numbers_compare_as_numbers_and_skipped_states_are_counted() -> None:
    assert canonical("22.50") == canonical(22.5) == canonical("2.25e1")
    assert canonical("on") != canonical(1.0)
    assert canonical(None) != canonical("")
    reference = [Point(1000, 22.5), Point(2000, "on")]
    candidate = [Point(1001, "22.50"), Point(2999, "on"), Point(3000, "unavailable")]
    result = compare(reference, candidate, skip=("unavailable",))
    assert result.agrees
    assert (result.matched, result.skipped) == (2, 1)
    # To the second, the times 1 µs apart are one key.
    shifted = [Point(5_000, 22.5)]
    assert not compare(reference[:1], shifted).agrees
    assert compare(reference[:1], shifted, divisor=10**9).agrees
